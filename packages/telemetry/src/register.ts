/**
 * Side-effect entry: sets up tracing for the MCP server from the environment. Import it
 * first in the server's entry module (before anything that loads `pg`), or preload it with
 * `node --import @mcp-auth-stack/telemetry/register`, so the Postgres instrumentation sees
 * `pg` being loaded.
 */
import { setupTelemetry, type Telemetry, TelemetryConfigError } from './setup.ts';

export const telemetry = telemetryOrExit();

function telemetryOrExit(): Telemetry {
  try {
    return setupTelemetry({
      serviceName: 'mcp-expenses-server',
      ...(process.env.npm_package_version ? { serviceVersion: process.env.npm_package_version } : {}),
    });
  } catch (error) {
    if (!(error instanceof TelemetryConfigError)) throw error;
    // As the server's own configuration errors: the message, EX_CONFIG.
    process.stderr.write(`${error.message}\n`);
    process.exit(78);
  }
}
