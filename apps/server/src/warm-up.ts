import { createApp } from './app.ts';
import { createAuthProvider } from './auth.ts';
import { loadConfig } from './config.ts';
import { openConfiguredDatabase } from './database.ts';
import { createLogger } from './logger.ts';

/** A database address nothing listens on: the warm-up's tool call fails to connect, at once. */
const NO_DATABASE = 'postgres://127.0.0.1:1/warm-up';

const CALLS = [
  {
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'warm-up', version: '0' } },
  },
  { method: 'tools/list' },
  { method: 'tools/call', params: { name: 'get_user_expenses', arguments: { limit: 1 } } },
];

/**
 * `main --warm-up`, which the image's build runs once so that the code cache it writes holds the
 * functions a start and a first request compile, not only the bundle's top level (decision 48):
 * the app made as `startServer` makes it, in `none` mode on a database that is never reached,
 * and an `initialize`, a `tools/list` and a `tools/call` answered in-process (the call fails to
 * connect to the database). It reads no environment, binds no port, writes no log line and
 * stores nothing.
 */
export async function warmUp(): Promise<void> {
  const config = loadConfig({ MCP_AUTH_PROVIDER: 'none', HOST: '127.0.0.1', DATABASE_URL: NO_DATABASE });
  const logger = createLogger('info', () => {});
  const database = await openConfiguredDatabase(config, 'server');
  const auth = await createAuthProvider(config, database, logger);
  const { app, close } = await createApp({ config, database, auth, logger });
  try {
    for (const [index, call] of CALLS.entries()) {
      const response = await app.request(`${config.baseUrl}/mcp`, {
        method: 'POST',
        headers: {
          host: new URL(config.baseUrl).host,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: index + 1, ...call }),
      });
      if (response.status !== 200) throw new Error(`warm-up: ${call.method} answered ${response.status}`);
      await response.text();
    }
  } finally {
    await close();
    await auth.close?.();
    await database.close();
  }
}
