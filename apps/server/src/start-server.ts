import type { ServerOptions } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { AuthProvider } from '@mcp-auth-stack/auth';
import { listenConfigError } from '@mcp-auth-stack/config';
import { createDrainingServer } from '@mcp-auth-stack/http-drain';
import { createApp } from './app.ts';
import { createAuthProvider } from './auth.ts';
import type { ServerConfig } from './config.ts';
import { migrateAppSchema, openConfiguredDatabase } from './database.ts';
import { createLogger, errorFields, type Logger } from './logger.ts';

/**
 * Slow clients hold sockets: all headers within 10 s, the whole request within 30 s (Node's
 * defaults are 60 s and 300 s), checked every second. Node checks these bounds every 30 s by
 * default, so a client sending one header line at a time kept its socket for up to 40 s.
 * Responses are not limited by these.
 */
export const SLOW_CLIENT_BOUNDS = {
  headersTimeout: 10_000,
  requestTimeout: 30_000,
  connectionsCheckingInterval: 1_000,
} as const satisfies ServerOptions;

export interface RunningServer {
  /** Where it listens, e.g. http://127.0.0.1:8000 (the port is real even when 0 was asked for). */
  url: string;
  /**
   * Stops taking connections and new requests, waits for the requests in flight (at most
   * SHUTDOWN_TIMEOUT_MS), then closes the database (at most DATABASE_CLOSE_TIMEOUT_MS more,
   * whatever the database does).
   */
  close(): Promise<void>;
}

/**
 * config → database (opening, then its schema migrating) and auth provider side by side → app,
 * made while the schema migrates → listen, once it has.
 */
export async function startServer(
  config: ServerConfig,
  logger: Logger = createLogger(config.logLevel),
  options: { tracing?: boolean } = {},
): Promise<RunningServer> {
  const opening = openConfiguredDatabase(config, 'server', logger);
  const migrated = opening.then(async (database) => {
    await migrateAppSchema(database, config.authMode, 'server');
    return database;
  });
  // Awaited below; handled here so a failure is not unhandled while the rest is made.
  migrated.catch(() => {});
  let auth: AuthProvider | undefined;
  try {
    auth = await createAuthProvider(config, migrated, logger);
    const database = await opening;
    const provider = auth;
    const lifecycle = { draining: false };
    // Nothing in the app queries the database until a request comes, and none comes before
    // `listen`: building it during the migrations takes it off a first start (decision 53).
    const { app, close: closeApp } = await createApp({
      config,
      database,
      auth,
      logger,
      tracing: options.tracing ?? false,
      lifecycle,
    });
    await migrated;
    const http = createDrainingServer(getRequestListener(app.fetch, { hostname: config.host }), SLOW_CLIENT_BOUNDS);
    const httpServer = http.server;
    // `Expect: 100-continue`: "100 Continue" only for a body the server would read. One declared
    // over the limit gets the app's answer (413, or 401 first without a credential) before it is
    // sent: Node would say 100 at once, and the client upload the body only to have it refused.
    // A draining server refuses the request without reading its body. Node closes a connection
    // whose client still holds its body back.
    httpServer.on('checkContinue', (request, response) => {
      const declared = Number(request.headers['content-length']);
      if (!http.draining && !(declared > config.maxRequestBytes)) response.writeContinue();
      httpServer.emit('request', request, response);
    });
    await new Promise<void>((resolve, reject) => {
      const failed = (error: Error) => reject(listenConfigError(error, config.host, config.port) ?? error);
      httpServer.once('error', failed);
      httpServer.listen(config.port, config.host, () => {
        httpServer.off('error', failed);
        resolve();
      });
    });
    // Listening, the server can still fail to accept a connection (EMFILE: out of file
    // descriptors); without a listener that error would end the process.
    httpServer.on('error', (error) => logger.error('http server error', errorFields(error)));
    const { port } = httpServer.address() as AddressInfo;
    const hostForUrl = config.host.includes(':') ? `[${config.host}]` : config.host;
    const url = `http://${hostForUrl}:${port}`;
    logger.info('listening', {
      url,
      // PORT=0 without MCP_SERVER_BASE_URL (key and none modes only): the port is known now.
      mcp_url: new URL(config.baseUrl).port === '0' ? `http://localhost:${port}/mcp` : `${config.baseUrl}/mcp`,
      auth: auth.name,
      database: database.location,
    });

    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        lifecycle.draining = true;
        const started = performance.now();
        const { cut, refused } = await http.drain(config.shutdownTimeoutMs);
        const drainedMs = Math.round(performance.now() - started);
        if (cut > 0) {
          logger.warn('drain timed out: requests in flight were cut', {
            cut,
            refused,
            shutdown_timeout_ms: config.shutdownTimeoutMs,
          });
        } else {
          logger.info('drained', { drained_ms: drainedMs, refused });
        }
        await closeApp();
        // The key cache's listening connection waits on the database too: both closes share
        // one bound, so a frozen database cannot hold the exit twice.
        const closes = Promise.allSettled([provider.close?.(), database.close()]);
        if (!(await settlesWithin(closes, config.databaseCloseTimeoutMs))) {
          logger.warn('the database did not close in time; leaving its connections to the exit', {
            database_close_timeout_ms: config.databaseCloseTimeoutMs,
          });
        }
        logger.info('stopped');
      })();
      return closing;
    };
    return { url, close };
  } catch (error) {
    // A database that failed to open or to migrate: its error is the caller's to report.
    const database = await opening.catch(() => undefined);
    const databaseFailed = await migrated.then(
      () => false,
      () => true,
    );
    if (!databaseFailed) logger.error('start-up failed', errorFields(error));
    await auth?.close?.();
    if (database) await settlesWithin(database.close(), config.databaseCloseTimeoutMs);
    throw error;
  }
}

/** Whether the promise settles (either way) within `ms`; its failure is not this caller's concern. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timedOut,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
