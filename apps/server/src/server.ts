import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createApp } from './app.ts';
import { createAuthProvider } from './auth.ts';
import type { ServerConfig } from './config.ts';
import { openAppDatabase } from './database.ts';
import { createLogger, errorFields, type Logger } from './logger.ts';

export interface RunningServer {
  /** Where it listens, e.g. http://127.0.0.1:8000 (the port is real even when 0 was asked for). */
  url: string;
  /** Stops taking connections, drains the requests in flight, then closes the database. */
  close(): Promise<void>;
}

/** config → database → auth provider → app → listen. */
export async function startServer(
  config: ServerConfig,
  logger: Logger = createLogger(config.logLevel),
  options: { tracing?: boolean } = {},
): Promise<RunningServer> {
  const database = await openAppDatabase(config, 'server');
  try {
    const auth = await createAuthProvider(config, database, logger);
    const { app, close: closeApp } = await createApp({
      config,
      database,
      auth,
      logger,
      tracing: options.tracing ?? false,
    });
    const httpServer = await new Promise<Server>((resolve, reject) => {
      const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, () =>
        resolve(server as Server),
      );
      server.once('error', reject);
    });
    // Slow clients hold sockets: all headers within 10 s, the whole request body within 30 s
    // (Node's defaults are 60 s and 300 s). Responses are not limited by these.
    httpServer.headersTimeout = 10_000;
    httpServer.requestTimeout = 30_000;
    const { port } = httpServer.address() as AddressInfo;
    const hostForUrl = config.host.includes(':') ? `[${config.host}]` : config.host;
    const url = `http://${hostForUrl}:${port}`;
    logger.info('listening', {
      url,
      mcp_url: `${config.baseUrl}/mcp`,
      auth: auth.name,
      database: database.location,
    });

    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        const drained = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        // Idle keep-alive sockets would hold close() open forever.
        httpServer.closeIdleConnections();
        const timer = setTimeout(() => httpServer.closeAllConnections(), config.shutdownTimeoutMs);
        await drained;
        clearTimeout(timer);
        await closeApp();
        await database.close();
        logger.info('stopped');
      })();
      return closing;
    };
    return { url, close };
  } catch (error) {
    logger.error('start-up failed', errorFields(error));
    await database.close();
    throw error;
  }
}
