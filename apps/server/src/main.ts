// First: tracing must be set up before anything loads `pg`, so its instrumentation applies.
import { telemetry } from '@mcp-auth-stack/telemetry/register';
import { ConfigError, loadConfig, type ServerConfig } from './config.ts';
import { createLogger, errorFields, type Logger } from './logger.ts';
import { type RunningServer, startServer } from './start-server.ts';
import { warmUp } from './warm-up.ts';

/** What stops the server: Ctrl-C, a stop (container, service manager), a closed terminal. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
const EXIT_SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

// No top-level await: the image runs this module bundled as a script (dist/server.cjs), so that
// V8 can cache what a start compiles (docs/decisions.md #48).
if (process.argv.slice(2).includes('--warm-up')) {
  // The image's build: the app made and three calls answered in-process, then exit 0 (warm-up.ts).
  warmUp().catch((error: unknown) => {
    process.stderr.write(`The warm-up failed: ${(error as Error).stack}\n`);
    process.exit(1);
  });
} else {
  const config = configOrExit();
  // Whoever read the output may be gone (`pnpm start` killed, its watchdog about to stop this
  // process): a log line written then must not crash the server before it closes its database.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE' && error.code !== 'EIO') throw error;
    });
  }
  const logger = createLogger(config.logLevel);
  // Until it serves, a signal ends the start at once, as it would without a handler; but in a
  // container node is PID 1, which ignores a signal it has no handler for: `docker compose down`
  // or a scale-in during a start (a migration waiting on another replica's lock) would wait for
  // the kill after the grace period.
  const stopStarting = (signal: NodeJS.Signals) => {
    process.stderr.write(`The server was stopped (${signal}) while starting.\n`);
    process.exit(128 + EXIT_SIGNAL_NUMBERS[signal as (typeof STOP_SIGNALS)[number]]);
  };
  // One listener per signal for the whole life of the process, which changes what it does once
  // the server runs. Node delivers a signal to the listener that was there when it arrived:
  // removing one and adding another (as this did) dropped a signal that came in between, right
  // after "listening" (a stop at the moment of readiness; a test saw it once in about 30 runs).
  let onStop: (signal: NodeJS.Signals) => void = stopStarting;
  for (const signal of STOP_SIGNALS) process.on(signal, (received) => onStop(received));
  startServer(config, logger, { tracing: telemetry.destination !== 'none' }).then(
    (server) => {
      onStop = stopOnSignals(server, config, logger);
    },
    (error: unknown) => {
      process.stderr.write(`The server could not start: ${(error as Error).message}\n`);
      // A setting found wrong only once used (a signing key that does not import) is still one.
      process.exit(error instanceof ConfigError ? 78 : 1);
    },
  );
}

function configOrExit(): ServerConfig {
  try {
    return loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(78); // EX_CONFIG
  }
}

/** What a stop signal does once the server runs. */
function stopOnSignals(server: RunningServer, config: ServerConfig, logger: Logger): (signal: NodeJS.Signals) => void {
  let firstSignalAt = 0;
  return (signal) => {
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
        (notExported) => {
          // The server stopped cleanly; spans lost with an absent collector are said, not a failure.
          if (notExported) logger.warn('telemetry: pending spans may not have been exported', { reason: notExported });
          process.exit(0);
        },
        (error: unknown) => {
          logger.error('shutdown failed', errorFields(error));
          process.exit(1);
        },
      );
  };
}
