/**
 * The MCP server the agent's tests talk to: the server app in this process, reached through its
 * declared entries (as scripts/start.ts reaches it), on packages/testing's stack. In this
 * process, so the server's request log lines are in `stack.logs` as soon as the response is.
 */
import { createLogger } from '@mcp-auth-stack/config';
import { loadConfig } from '@mcp-auth-stack/server/config';
import { startServer } from '@mcp-auth-stack/server/start-server';
import { startTestStack as startStack, type TestStack } from '@mcp-auth-stack/testing-stack/stack';

export type { TestStack };

/** The real server on a free loopback port, in `key` mode unless `env` says otherwise, on its own database on real PostgreSQL. */
export function startTestStack(env: Record<string, string> = {}): Promise<TestStack> {
  return startStack(async (databaseUrl, log) => {
    const config = loadConfig({
      PORT: '0',
      HOST: '127.0.0.1',
      MCP_AUTH_PROVIDER: 'key',
      DATABASE_URL: databaseUrl,
      LOG_LEVEL: 'info',
      ...env,
    });
    return await startServer(config, createLogger(config.logLevel, log));
  });
}
