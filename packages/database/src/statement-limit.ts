import type pg from 'pg';

/** Runs `work` with the database's limit on one statement's length lifted until it settles. */
export type StatementLimitExemption = <T>(work: () => Promise<T>) => Promise<T>;

/**
 * The pools whose database ends a statement that runs too long by other means than
 * `statement_timeout` (the embedded one: docs/decisions.md #86), and how to lift that for work
 * that may rightly take longer, as migrations lift `statement_timeout`.
 */
const exemptions = new WeakMap<pg.Pool, StatementLimitExemption>();

export function registerStatementLimitExemption(pool: pg.Pool, exemption: StatementLimitExemption): void {
  exemptions.set(pool, exemption);
}

/** `work` exempt from `pool`'s database's own statement limit, if it has one. */
export function withoutStatementLimit<T>(pool: pg.Pool, work: () => Promise<T>): Promise<T> {
  const exemption = exemptions.get(pool);
  return exemption ? exemption(work) : work();
}
