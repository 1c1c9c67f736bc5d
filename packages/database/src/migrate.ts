import type pg from 'pg';
import { onOneConnection } from './connection.ts';
import { withoutStatementLimit } from './statement-limit.ts';

export interface Migration {
  /** Strictly increasing within a namespace; never renumber one that has shipped. */
  version: number;
  name: string;
  sql: string;
}

const MIGRATION_LOCK = 'mcp-auth-stack:migrate';

/** A namespace and its migrations, as a package exports them. */
export interface MigrationSet {
  namespace: string;
  migrations: Migration[];
}

/**
 * Applies the migrations of one namespace (a package owns its namespace) that are not yet
 * recorded, each in its own transaction, under an advisory lock so that replicas starting
 * together apply each migration exactly once. Safe to run on every start.
 *
 * One lock for every namespace, taken before anything is created: two sessions running
 * `CREATE TABLE IF NOT EXISTS` on the same new table at once make one of them fail on
 * Postgres's catalog (`pg_type_typname_nsp_index`), which a fresh database with several
 * replicas, or one server migrating several packages at once, would otherwise hit.
 *
 * Runs on one connection of `pool` without its timeouts (see `migrateToCurrent`).
 */
export async function migrate(pool: pg.Pool, namespace: string, migrations: Migration[]): Promise<number[]> {
  assertOrdered(namespace, migrations);
  return await withoutStatementLimit(pool, () =>
    onOneConnection(pool, (client) => underMigrationLock(client, () => apply(client, namespace, migrations))),
  );
}

/**
 * Brings every namespace of `sets` up to date, in order, on one connection of `pool`: one query
 * first, without the lock, finds what is pending; on an up-to-date schema (every start but the
 * first) that is all it does. Otherwise the pending migrations are applied as `migrate` does.
 * Returns the namespaces in which this call applied a migration.
 *
 * Migrations run without the pool's timeouts: waiting for another replica's migration, or
 * building an index on a large table, may rightly take longer than any request should. The
 * server-side `statement_timeout` is lifted per transaction (`SET LOCAL`), the client-side
 * `query_timeout` per query, so the connection goes back to the pool as it came (and the
 * embedded database's own limit is lifted, `withoutStatementLimit`); a connection
 * on which anything failed is closed instead (and with it any lock it held). One connection
 * for all of it: on a new database the check's connection is the one that migrates and then
 * serves requests, where a second connection cost a first start 20 ms (docs/performance.md).
 */
export async function migrateToCurrent(pool: pg.Pool, sets: MigrationSet[]): Promise<string[]> {
  for (const { namespace, migrations } of sets) assertOrdered(namespace, migrations);
  return await withoutStatementLimit(pool, () => migrateOnOneConnection(pool, sets));
}

async function migrateOnOneConnection(pool: pg.Pool, sets: MigrationSet[]): Promise<string[]> {
  return await onOneConnection(pool, async (client) => {
    const pending = await pendingNamespaces(client, sets);
    if (pending.length === 0) return [];
    // Another replica may have applied them while this one waited for the lock.
    const applied: string[] = [];
    await underMigrationLock(client, async () => {
      for (const { namespace, migrations } of sets) {
        if ((await apply(client, namespace, migrations)).length > 0) applied.push(namespace);
      }
    });
    return applied;
  });
}

/** pg reads a `query_timeout` of 0 as "the client's own": the longest timer Node sets stands for none. */
const NO_READ_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * A query of a migration run: no client-side read timeout (`query_timeout` per query is pg's).
 * Several statements without values answer with one result each.
 */
function unbounded(
  client: pg.PoolClient,
  text: string,
  values?: unknown[],
): Promise<pg.QueryResult | pg.QueryResult[]> {
  const query: pg.QueryConfig & { query_timeout: number } = { text, query_timeout: NO_READ_TIMEOUT_MS };
  if (values) query.values = values;
  return client.query(query) as Promise<pg.QueryResult | pg.QueryResult[]>;
}

async function underMigrationLock<T>(client: pg.PoolClient, work: () => Promise<T>): Promise<T> {
  // A session-level lock, taken in a transaction only so that SET LOCAL lifts the statement
  // timeout for the wait; it is held until unlocked (or the connection closes).
  await unbounded(
    client,
    `BEGIN; SET LOCAL statement_timeout = 0; SELECT pg_advisory_lock(hashtext(${client.escapeLiteral(MIGRATION_LOCK)})); COMMIT`,
  );
  const result = await work();
  await unbounded(client, 'SELECT pg_advisory_unlock(hashtext($1))', [MIGRATION_LOCK]);
  return result;
}

/**
 * The migrations of `namespace` not yet recorded, applied in order; call under the lock. Each
 * migration is one query (its transaction, its SQL and its record), so a first start waits for
 * one round trip per migration, not four.
 */
async function apply(client: pg.PoolClient, namespace: string, migrations: Migration[]): Promise<number[]> {
  const { rows } = lastResult(
    await unbounded(
      client,
      `BEGIN; SET LOCAL statement_timeout = 0;
      CREATE TABLE IF NOT EXISTS schema_migrations (
        namespace text NOT NULL,
        version integer NOT NULL,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, version)
      );
      COMMIT;
      SELECT version FROM schema_migrations WHERE namespace = ${client.escapeLiteral(namespace)}`,
    ),
  );
  const done = new Set(rows.map((row: { version: number }) => row.version));
  const applied: number[] = [];
  for (const migration of migrations) {
    if (done.has(migration.version)) continue;
    try {
      // The record first: the embedded database's connections share one PostgreSQL session,
      // where the advisory lock stops nobody, so a process that joined it (`pnpm keys` during a
      // first start) may apply the same migration at once. Whoever records it first applies
      // it; the other's record then fails on the key before its SQL runs. The SQL on lines of
      // its own: a closing `--` comment cannot swallow what follows.
      await unbounded(
        client,
        `BEGIN; SET LOCAL statement_timeout = 0;
INSERT INTO schema_migrations (namespace, version, name) VALUES (${client.escapeLiteral(namespace)}, ${Number(migration.version)}, ${client.escapeLiteral(migration.name)});
${migration.sql}
;
COMMIT`,
      );
    } catch (error) {
      // A failed statement aborts the transaction and PostgreSQL skips the rest of the query.
      await unbounded(client, 'ROLLBACK').catch(() => {});
      if (recordedMeanwhile(error)) continue;
      throw new Error(
        `Migration ${namespace}#${migration.version} (${migration.name}) failed: ${(error as Error).message}`,
      );
    }
    applied.push(migration.version);
  }
  return applied;
}

/** The migration's record already exists: another connection applied it since the versions were read. */
function recordedMeanwhile(error: unknown): boolean {
  const { code, constraint } = error as { code?: string; constraint?: string };
  return code === '23505' && constraint === 'schema_migrations_pkey';
}

/** A multi-statement query answers with one result per statement; the last is the one asked for. */
function lastResult(result: pg.QueryResult | pg.QueryResult[]): pg.QueryResult {
  return Array.isArray(result) ? (result.at(-1) as pg.QueryResult) : result;
}

function assertOrdered(namespace: string, migrations: Migration[]): void {
  for (let i = 1; i < migrations.length; i++) {
    const previous = migrations[i - 1];
    const current = migrations[i];
    if (previous && current && current.version <= previous.version) {
      throw new Error(`Migrations of ${namespace} are not in increasing version order at ${current.version}`);
    }
  }
}

/**
 * The namespaces of `sets` with a migration not yet in `schema_migrations`, in one query that
 * takes no lock and creates nothing; every namespace counts as pending on a database without
 * the table (the error leaves the connection usable: no transaction is open). Recorded versions
 * are committed ones, so "none pending" is final.
 */
async function pendingNamespaces(client: pg.PoolClient, sets: MigrationSet[]): Promise<string[]> {
  let recorded: { namespace: string; version: number }[];
  try {
    ({ rows: recorded } = await client.query<{ namespace: string; version: number }>(
      'SELECT namespace, version FROM schema_migrations WHERE namespace = ANY($1)',
      [sets.map((set) => set.namespace)],
    ));
  } catch (error) {
    if ((error as { code?: string }).code === '42P01') return sets.map((set) => set.namespace); // undefined_table
    throw error;
  }
  const done = new Set(recorded.map((row) => `${row.namespace}#${row.version}`));
  return sets
    .filter((set) => set.migrations.some((migration) => !done.has(`${set.namespace}#${migration.version}`)))
    .map((set) => set.namespace);
}
