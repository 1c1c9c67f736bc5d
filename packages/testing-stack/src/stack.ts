import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { EXPENSE_USER_SCOPES } from '@mcp-auth-stack/expenses';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import pg from 'pg';

/** The server under test, started by the caller's `StartServer`. */
export interface RunningTestServer {
  /** Where it listens, e.g. http://127.0.0.1:41234. */
  url: string;
  close(): Promise<void>;
}

/**
 * Starts the server under test on `databaseUrl`, each of its log lines (JSON) given to `log`.
 * The app's tests supply it (apps/server's in-process start through its declared entries):
 * this package knows no app.
 */
export type StartServer = (databaseUrl: string, log: (line: string) => void) => Promise<RunningTestServer>;

export interface TestStack {
  url: string;
  mcpUrl: string;
  database: TestDatabase;
  /** A direct connection to the server's database, to check what was (not) stored. */
  sql: pg.Pool;
  /** Keys for the test's users; `create` grants the ordinary user scopes unless told otherwise. */
  keys: ApiKeyStore;
  logs: string[];
  close(): Promise<void>;
}

/** The server `startServer` starts, on its own database on real PostgreSQL, with its logs kept. */
export async function startTestStack(
  startServer: StartServer,
  options: { sharedDatabase?: TestDatabase } = {},
): Promise<TestStack> {
  // A second replica passes the first one's database, which the first one drops.
  const database = options.sharedDatabase ?? (await createTestDatabase());
  const logs: string[] = [];
  const server = await startServer(database.url, (line) => logs.push(line));
  const sql = new pg.Pool({ connectionString: database.url, max: 2 });
  // pool.end() resolves before its connections have closed; the database's DROP ... WITH (FORCE)
  // right after can then terminate one, and an 'error' without a listener would crash the run.
  sql.on('error', () => {});
  return {
    url: server.url,
    mcpUrl: `${server.url}/mcp`,
    database,
    sql,
    keys: userScopedKeys(new ApiKeyStore(sql)),
    logs,
    async close() {
      await server.close();
      await sql.end();
      if (!options.sharedDatabase) await database.drop();
    },
  };
}

function userScopedKeys(store: ApiKeyStore): ApiKeyStore {
  const create = store.create.bind(store);
  store.create = (input) => create({ ...input, scopes: input.scopes ?? [...EXPENSE_USER_SCOPES] });
  return store;
}
