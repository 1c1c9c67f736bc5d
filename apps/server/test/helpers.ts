import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pg from 'pg';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startServer } from '../src/server.ts';

export interface TestStack {
  url: string;
  mcpUrl: string;
  database: TestDatabase;
  /** A direct connection to the server's database, to check what was (not) stored. */
  sql: pg.Pool;
  keys: ApiKeyStore;
  logs: string[];
  close(): Promise<void>;
}

/** The real server on a free loopback port, in `key` mode, on its own database on real PostgreSQL. */
export async function startTestStack(env: Record<string, string> = {}): Promise<TestStack> {
  const database = await createTestDatabase();
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
  );
  const sql = new pg.Pool({ connectionString: database.url, max: 2 });
  return {
    url: server.url,
    mcpUrl: `${server.url}/mcp`,
    database,
    sql,
    keys: new ApiKeyStore(sql),
    logs,
    async close() {
      await server.close();
      await sql.end();
      await database.drop();
    },
  };
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
