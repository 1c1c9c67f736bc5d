import type pg from 'pg';

export interface Migration {
  /** Strictly increasing within a namespace; never renumber one that has shipped. */
  version: number;
  name: string;
  sql: string;
}

const MIGRATION_LOCK = 'mcp-auth-stack:migrate';

/**
 * Applies the migrations of one namespace (a package owns its namespace) that are not yet
 * recorded, each in its own transaction, under an advisory lock so that replicas starting
 * together apply each migration exactly once. Safe to run on every start.
 *
 * One lock for every namespace, taken before anything is created: two sessions running
 * `CREATE TABLE IF NOT EXISTS` on the same new table at once make one of them fail on
 * Postgres's catalog (`pg_type_typname_nsp_index`), which a fresh database with several
 * replicas, or one server migrating several packages at once, would otherwise hit.
 */
export async function migrate(pool: pg.Pool, namespace: string, migrations: Migration[]): Promise<number[]> {
  assertOrdered(namespace, migrations);
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [MIGRATION_LOCK]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        namespace text NOT NULL,
        version integer NOT NULL,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, version)
      )`);
      const { rows } = await client.query<{ version: number }>(
        'SELECT version FROM schema_migrations WHERE namespace = $1',
        [namespace],
      );
      const done = new Set(rows.map((row) => row.version));
      for (const migration of migrations) {
        if (done.has(migration.version)) continue;
        await client.query('BEGIN');
        try {
          await client.query(migration.sql);
          await client.query('INSERT INTO schema_migrations (namespace, version, name) VALUES ($1, $2, $3)', [
            namespace,
            migration.version,
            migration.name,
          ]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK');
          throw new Error(
            `Migration ${namespace}#${migration.version} (${migration.name}) failed: ${(error as Error).message}`,
          );
        }
        applied.push(migration.version);
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [MIGRATION_LOCK]);
    }
  } finally {
    client.release();
  }
  return applied;
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
 * takes no lock and creates nothing: on an up-to-date database (every start but the first) a
 * caller can skip `migrate` and its lock. Every namespace counts as pending on a database
 * without the table. Recorded versions are committed ones, so "none pending" is final.
 */
export async function unappliedNamespaces(
  pool: pg.Pool,
  sets: { namespace: string; migrations: Migration[] }[],
): Promise<string[]> {
  let recorded: { namespace: string; version: number }[];
  try {
    ({ rows: recorded } = await pool.query<{ namespace: string; version: number }>(
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
