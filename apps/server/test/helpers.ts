import { fileURLToPath } from 'node:url';
import { run, type ServerProcess, spawnServerProcess, type TestDatabase } from '@mcp-auth-stack/testing';
import { startTestStack as startStack, type TestStack } from '@mcp-auth-stack/testing-stack/stack';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { startServer } from '../src/start-server.ts';

export type { TestStack };

/** The real server in this process on a free loopback port, in `key` mode, on its own database on real PostgreSQL. */
export function startTestStack(
  env: Record<string, string> = {},
  options: { sharedDatabase?: TestDatabase; tracing?: boolean } = {},
): Promise<TestStack> {
  return startStack(async (databaseUrl, log) => {
    const config = loadConfig({
      PORT: '0',
      HOST: '127.0.0.1',
      MCP_AUTH_PROVIDER: 'key',
      DATABASE_URL: databaseUrl,
      LOG_LEVEL: 'info',
      ...env,
    });
    return await startServer(config, createLogger(config.logLevel, log), { tracing: options.tracing ?? false });
  }, options);
}

/** The official SDK client, connected with the given headers (e.g. an API key). */
export async function connectClient(mcpUrl: string, headers: Record<string, string>): Promise<Client> {
  const client = new Client({ name: 'e2e-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { requestInit: { headers } });
  await client.connect(transport);
  return client;
}

export { postMcp } from '@mcp-auth-stack/testing';

export const SERVER_MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const KEYS_CLI = fileURLToPath(new URL('../src/keys-cli.ts', import.meta.url));

/**
 * Runs `node apps/server/src/main.ts` as its own process, as `pnpm start:server` does (or
 * another entry, such as the built `dist/main.cjs`).
 */
export function spawnServer(env: Record<string, string>, entry = SERVER_MAIN): Promise<ServerProcess> {
  return spawnServerProcess(entry, env);
}

/** `pnpm keys …`, as a user types it. */
export function keysCli(args: string[], env: Record<string, string>) {
  return run(process.execPath, [KEYS_CLI, ...args], env);
}

/** Runs `node apps/server/src/main.ts` until it exits (for start-up failures), at most a minute. */
export function runServerToExit(env: Record<string, string>) {
  return run(process.execPath, [SERVER_MAIN], { PORT: '0', ...env }, { timeoutMs: 60_000 });
}
