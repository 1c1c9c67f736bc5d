/**
 * The agent as a service (the container's command): loads the configuration, connects to the
 * MCP servers, then serves `GET /health` and `POST /chat`. SIGTERM stops it cleanly.
 */
import { serve } from '@hono/node-server';
import { ConfigError, loadConfig } from './config.ts';
import { createAgentApp } from './http.ts';
import { createLogger } from './logger.ts';
import { startAgent } from './runtime.ts';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
  if (config.mcpAuth.mode === 'oauth') {
    // Nobody is at a browser in a container: the service signs in as itself.
    throw new ConfigError(
      'MCP_AUTH',
      'must be client_credentials or key in HTTP mode (oauth needs a person at a browser)',
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
const running = await startAgent(config, { print: (line) => logger.info(line) }).catch((error: unknown) => {
  logger.error('the agent could not start', { error: (error as Error).message });
  process.exit(1);
});
if (config.chatToken === undefined && config.host !== '127.0.0.1' && config.host !== 'localhost') {
  logger.warn('POST /chat is open to anyone who can reach this address; set AGENT_CHAT_TOKEN', { host: config.host });
}

const app = createAgentApp({ agent: running.agent, logger, chatToken: config.chatToken });
const server = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, (info) => {
  logger.info('listening', {
    url: `http://${info.family === 'IPv6' ? `[${info.address}]` : info.address}:${info.port}`,
    tools: running.agent.toolNames,
    mcp_auth: config.mcpAuth.mode,
    api_host: config.model.host,
  });
});

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(130);
    stopping = true;
    logger.info('shutting down', { signal });
    server.close(() => {
      running.close().finally(() => process.exit(0));
    });
  });
}
