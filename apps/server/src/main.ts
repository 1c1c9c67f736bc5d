// First: tracing must be set up before anything loads `pg`, so its instrumentation applies.
import { telemetry } from '@mcp-auth-stack/telemetry/register';
import { ConfigError, loadConfig } from './config.ts';
import { createLogger, errorFields } from './logger.ts';
import { startServer } from './start-server.ts';

// `--load-only`: every module above is loaded, then the process exits 0 with nothing started.
// With NODE_COMPILE_CACHE set, Node writes its compile cache on the way out: the image does this
// at build time, so its containers start from cached bytecode (docs/decisions.md #48).
if (process.argv.slice(2).includes('--load-only')) process.exit(0);

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(78); // EX_CONFIG
  }
  throw error;
}

const logger = createLogger(config.logLevel);
const server = await startServer(config, logger, { tracing: telemetry.destination !== 'none' }).catch(
  (error: unknown) => {
    process.stderr.write(`The server could not start: ${(error as Error).message}\n`);
    process.exit(1);
  },
);

let firstSignalAt = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (firstSignalAt > 0) {
      // A typed Ctrl-C reaches this process twice within moments under `pnpm start:server`
      // (the terminal sends it to the process group, and pnpm passes on its own): one key
      // press. A later one means "now": a second Ctrl-C does not wait.
      if (Date.now() - firstSignalAt < 1_000) return;
      process.exit(130);
    }
    firstSignalAt = Date.now();
    logger.info('shutting down', { signal });
    // The drain and the database close are bounded each; this is the backstop if anything
    // else (telemetry's export, a bug) would hold the exit.
    setTimeout(
      () => {
        logger.error('shutdown overran its bounds; exiting now');
        process.exit(1);
      },
      config.shutdownTimeoutMs + config.databaseCloseTimeoutMs + 5_000,
    ).unref();
    server
      .close()
      .then(() => telemetry.shutdown())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error('shutdown failed', errorFields(error));
          process.exit(1);
        },
      );
  });
}
