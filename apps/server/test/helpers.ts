import { fileURLToPath } from 'node:url';
import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { EXPENSE_USER_SCOPES } from '@mcp-auth-stack/expenses';
import {
  createTestDatabase,
  run,
  type ServerProcess,
  spawnServerProcess,
  type TestDatabase,
} from '@mcp-auth-stack/testing';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pg from 'pg';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startServer } from '../src/start-server.ts';

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

/** The real server on a free loopback port, in `key` mode, on its own database on real PostgreSQL. */
export async function startTestStack(
  env: Record<string, string> = {},
  options: { sharedDatabase?: TestDatabase; tracing?: boolean } = {},
): Promise<TestStack> {
  // A second replica passes the first one's database, which the first one drops.
  const database = options.sharedDatabase ?? (await createTestDatabase());
  const logs: string[] = [];
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    MCP_AUTH_PROVIDER: 'key',
    DATABASE_URL: database.url,
    LOG_LEVEL: 'info',
    ...env,
  });
  const server = await startServer(
    config,
    createLogger(config.logLevel, (line) => logs.push(line)),
    { tracing: options.tracing ?? false },
  );
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

/** The official SDK client, connected with the given headers (e.g. an API key). */
export async function connectClient(mcpUrl: string, headers: Record<string, string>): Promise<Client> {
  const client = new Client({ name: 'e2e-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers } });
  await client.connect(transport);
  return client;
}

/** POSTs one JSON-RPC message the way a client would, with overridable headers and body. */
export function postMcp(mcpUrl: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const SERVER_MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const KEYS_CLI = fileURLToPath(new URL('../src/keys-cli.ts', import.meta.url));

/**
 * Runs `node apps/server/src/main.ts` as its own process, as `pnpm start:server` does (or
 * another entry, such as the built `dist/main.mjs`).
 */
export function spawnServer(env: Record<string, string>, entry = SERVER_MAIN): Promise<ServerProcess> {
  return spawnServerProcess(entry, env);
}

/** `pnpm keys …`, as a user types it. */
export function keysCli(args: string[], env: Record<string, string>) {
  return run(process.execPath, [KEYS_CLI, ...args], env);
}

/** Runs `node apps/server/src/main.ts` until it exits (for start-up failures). */
export function runServerToExit(env: Record<string, string>) {
  return run(process.execPath, [SERVER_MAIN], { PORT: '0', ...env });
}
