/**
 * Side-effect entry: sets up tracing for the MCP server from the environment. Import it
 * first in the server's entry module (before anything that loads `pg`), or preload it with
 * `node --import @mcp-auth-stack/telemetry/register`, so the Postgres instrumentation sees
 * `pg` being loaded.
 */
import { setupTelemetry } from './setup.ts';

export const telemetry = setupTelemetry({
  serviceName: 'mcp-expenses-server',
  ...(process.env.npm_package_version ? { serviceVersion: process.env.npm_package_version } : {}),
});
