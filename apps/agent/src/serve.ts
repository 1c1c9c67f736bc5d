/**
 * The agent as a service (the container's command): loads the configuration, serves
 * `GET /health`, `GET /ready` and `POST /chat`, and connects to the MCP servers (retrying until
 * they answer). SIGTERM stops it cleanly, within `SHUTDOWN_TIMEOUT_MS`.
 */
import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { serve } from '@hono/node-server';
import { listenConfigError } from '@mcp-auth-stack/config';
import { isLoopbackBindAddress } from '@mcp-auth-stack/loopback';
import { ConfigError, loadConfig } from './config.ts';
import { createAgentApp, SHUTDOWN_TIMEOUT_MS } from './http.ts';
import { createLogger } from './logger.ts';
import { type RunningAgent, startAgent } from './runtime.ts';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
  if (config.mcpAuth.mode === 'oauth') {
    // Nobody is at a browser in a container: the service signs in as itself.
    throw new ConfigError(
      'MCP_AUTH',
      'must be client_credentials, key or none in HTTP mode (oauth needs a person at a browser)',
    );
  }
  if (config.chatToken === undefined && !config.chatUnauthenticated && !isLoopbackBindAddress(config.host)) {
    // Without a token /chat answers loopback connections only, which a listener on another
    // address would not get: say so now rather than refuse every caller later.
    throw new ConfigError(
      'AGENT_CHAT_TOKEN',
      `is unset while HOST=${config.host} is not loopback: set it (callers send it as a Bearer token), or AGENT_CHAT_UNAUTHENTICATED=true where the network alone decides who reaches this port`,
    );
  }
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(78); // EX_CONFIG
  }
  throw error;
}

const logger = createLogger(config.logLevel);
if (config.chatToken === undefined && config.chatUnauthenticated) {
  logger.warn('POST /chat answers anyone who can reach this address (AGENT_CHAT_UNAUTHENTICATED=true)', {
    host: config.host,
  });
}

// Listening first, connecting after: a deployed agent whose MCP server (or Keycloak) is still
// starting, or refuses its credential, stays up, says why on /chat and /ready, and retries,
// instead of crash-looping.
let running: RunningAgent | undefined;
let notReadyReason: string | undefined = 'connecting';
let retry: NodeJS.Timeout | undefined;
let stopping = false;
async function connect(attempt: number): Promise<void> {
  try {
    const started = await startAgent(config, { print: (line) => logger.info(line) });
    if (stopping) return void (await started.close());
    running = started;
    notReadyReason = undefined;
    logger.info('ready', {
      tools: started.agent.toolNames,
      mcp_auth: config.mcpAuth.mode,
      api_host: config.model.host,
    });
  } catch (error) {
    notReadyReason = (error as Error).message;
    const delayMs = Math.min(60_000, 2_000 * 2 ** attempt);
    logger.error('the agent could not connect to its MCP servers; retrying', {
      error: notReadyReason,
      retry_in_s: delayMs / 1000,
    });
    if (!stopping) retry = setTimeout(() => void connect(attempt + 1), delayMs);
  }
}

/** Aborted at SIGINT/SIGTERM: the turns running end, so the server closes within the stop's grace. */
const shutdown = new AbortController();
const app = createAgentApp({
  agent: () => running?.agent,
  notReadyReason: () => notReadyReason,
  logger,
  chatToken: config.chatToken,
  chatUnauthenticated: config.chatUnauthenticated,
  turnTimeoutMs: config.turnTimeoutSeconds * 1000,
  shutdown: shutdown.signal,
  askForConfirmation: config.destructiveTools === 'ask',
});
// Slow clients hold sockets: all headers within 10 s, the whole request within 30 s (Node's
// defaults are 60 s and 300 s), checked every second (Node's default, 30 s, let a client keep
// its socket for up to 40 s), as the MCP server. A turn's answer is not limited by these.
const serverOptions = { headersTimeout: 10_000, requestTimeout: 30_000, connectionsCheckingInterval: 1_000 };
const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port, serverOptions }, (info) => {
  logger.info('listening', {
    url: `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`,
    mcp_auth: config.mcpAuth.mode,
    api_host: config.model.host,
  });
  void connect(0);
});

const httpServer = server as Server;
// A HOST that is not this machine's, or a PORT taken: Node's error names neither variable.
httpServer.once('error', (error) => {
  if (httpServer.listening) throw error;
  const problem = listenConfigError(error, config.host, config.port);
  if (!problem) throw error;
  process.stderr.write(`${problem.message}\n`);
  process.exit(78); // EX_CONFIG
});
/** Responses under way: told to close their connection when the stop begins. */
const responses = new Set<ServerResponse>();
/** Open connections, one that never finished its request's headers included (it has no response). */
const connections = new Set<Socket>();
httpServer.on('connection', (socket: Socket) => {
  connections.add(socket);
  socket.once('close', () => connections.delete(socket));
});
// Before the app's listener, which may answer at once.
httpServer.prependListener('request', (_request, response: ServerResponse) => {
  // During the stop every answer closes its connection: a client keeping it alive would hold the exit.
  if (stopping) response.setHeader('connection', 'close');
  responses.add(response);
  response.once('close', () => responses.delete(response));
});

let firstSignalAt = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) {
      // Under `pnpm agent:serve` a typed Ctrl-C arrives twice within moments (the terminal sends
      // it to the process group, and pnpm passes on its own): one key press. A later one means "now".
      if (Date.now() - firstSignalAt < 1_000) return;
      process.exit(130);
    }
    firstSignalAt = Date.now();
    stopping = true;
    clearTimeout(retry);
    logger.info('shutting down', { signal });
    shutdown.abort();
    for (const response of responses) {
      if (!response.headersSent) response.setHeader('connection', 'close');
    }
    // The connections are bounded below; this is the backstop if anything else (the MCP
    // clients' close, a bug) would hold the exit.
    setTimeout(() => {
      logger.error('shutdown overran its bounds; exiting now');
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS + 5_000).unref();
    const cut = setTimeout(() => {
      logger.warn('the stop timed out: connections still busy were closed', {
        connections_cut: connections.size,
        shutdown_timeout_ms: SHUTDOWN_TIMEOUT_MS,
      });
      httpServer.closeAllConnections();
    }, SHUTDOWN_TIMEOUT_MS);
    // Stops listening and closes idle connections at once; it also stops the checks of
    // headersTimeout and requestTimeout, so a client that sent part of a request would hold the
    // exit forever without the bound above.
    httpServer.close(() => {
      clearTimeout(cut);
      (running?.close() ?? Promise.resolve()).finally(() => process.exit(0));
    });
  });
}
