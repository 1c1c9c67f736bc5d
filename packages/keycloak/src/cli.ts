import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { directory } from '@mcp-auth-stack/config';
import { livePidIn } from '@mcp-auth-stack/pid-lock';
import {
  DEMO_USERS,
  KEYCLOAK_DATA_DIR_DEFAULT,
  KEYCLOAK_VERSION,
  REALM_CLIENTS,
  REALM_FILE,
  servedUrls,
} from './realm.ts';
import { type RunningKeycloak, startKeycloak } from './start-keycloak.ts';

const USAGE = `Usage: pnpm keycloak [--port 8080] [--management-port 9000] [--data-dir DIR] [--fresh]

Starts Keycloak ${KEYCLOAK_VERSION} (no Docker) with the realm from keycloak/realm-mcp.json and
stops it on Ctrl-C or SIGTERM.

  --port             HTTP port (env KEYCLOAK_PORT, default 8080)
  --management-port  port of /health/ready (env KEYCLOAK_MANAGEMENT_PORT, default 9000)
  --data-dir         Keycloak's home for this checkout: database, logs
                     (env KEYCLOAK_DATA_DIR, default .data/keycloak)
  --fresh            delete the database first, so the realm file is imported again

The realm is imported for the MCP server that the same environment starts: its URL is
MCP_SERVER_BASE_URL, else http://localhost:$PORT (PORT default 8000; http://$HOST:$PORT for a
HOST of one address that localhost does not reach); MCP_SERVER_RESOURCE_URL
overrides the token audience. A kept realm whose URLs differ is updated through the admin API
(users, their ids and registered clients stay). The other placeholders of the realm file come
from the environment, e.g. KEYCLOAK_AGENT_CLIENT_SECRET.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'management-port': { type: 'string' },
      'data-dir': { type: 'string' },
      fresh: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  // The error names what was set: the flag, or the variable.
  const httpPort = port(
    values.port ?? process.env.KEYCLOAK_PORT,
    8080,
    values.port === undefined ? 'KEYCLOAK_PORT' : '--port',
  );
  const managementPort = port(
    values['management-port'] ?? process.env.KEYCLOAK_MANAGEMENT_PORT,
    9000,
    values['management-port'] === undefined ? 'KEYCLOAK_MANAGEMENT_PORT' : '--management-port',
  );
  // Relative to the working directory, as every path variable (the repository root under pnpm).
  const instanceDir = directory(
    { KEYCLOAK_DATA_DIR: values['data-dir'] ?? process.env.KEYCLOAK_DATA_DIR },
    'KEYCLOAK_DATA_DIR',
    KEYCLOAK_DATA_DIR_DEFAULT,
  );
  if (values.fresh) {
    // Not from under a Keycloak that runs from this folder: its database would go while it runs.
    const running = await livePidIn(join(instanceDir, 'keycloak.pid'));
    if (running !== undefined) {
      console.error(
        `Keycloak runs from ${instanceDir} (process ${running}): stop it first (Ctrl-C where it runs), then pnpm keycloak --fresh.`,
      );
      process.exit(1);
    }
    await rm(resolve(instanceDir, 'data'), { recursive: true, force: true });
  }

  const keycloak = await startKeycloak({
    httpPort,
    managementPort,
    instanceDir,
    portVariables: { http: '--port (KEYCLOAK_PORT)', management: '--management-port (KEYCLOAK_MANAGEMENT_PORT)' },
    realmEnv: servedUrls(process.env),
    ifRunning: 'reuse',
    onProgress: ({ phase, message, elapsedMs }) =>
      console.log(`[keycloak ${String(Math.round(elapsedMs / 1000)).padStart(3)} s] ${phase}: ${message}`),
  });
  printSummary(keycloak, instanceDir);
  if (keycloak.reused) {
    console.log('\nThis command did not start it, so it leaves it running and exits.');
    return;
  }

  let stopping = false;
  let firstSignalAt = 0;
  const shutdown = async (signal: string) => {
    if (stopping) {
      // A terminal sends Ctrl-C to the whole process group and pnpm passes on the one it got:
      // one key press arrives twice within moments. A later one means "now".
      if (Date.now() - firstSignalAt < 1_000) return;
      console.log(`\n${signal} again: killing Keycloak.`);
      process.exit(130);
    }
    stopping = true;
    firstSignalAt = Date.now();
    console.log(`\n${signal}: stopping Keycloak...`);
    await keycloak.stop();
    console.log('Keycloak stopped.');
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));

  const { code, signal } = await keycloak.exited;
  if (!stopping) {
    console.error(`Keycloak exited on its own (${code ?? signal}). Its last output:\n${keycloak.recentLog()}`);
    process.exit(1);
  }
}

function printSummary(keycloak: RunningKeycloak, instanceDir: string): void {
  const users = DEMO_USERS.map(
    (user) => `    ${user.username} / ${user.password}${user.admin ? '   (expenses-admin group)' : ''}`,
  ).join('\n');
  console.log(`
Keycloak ${KEYCLOAK_VERSION} ${keycloak.reused ? 'is already running' : 'is ready'}.
  Realm (issuer):  ${keycloak.realmUrl}
  Admin console:   ${keycloak.adminConsoleUrl}
                   admin / admin (demo only; master realm bootstrap admin)
  Demo users of realm mcp (demo-only passwords, never use them anywhere real):
${users}
  Clients:         ${REALM_CLIENTS.editor} (public, PKCE), ${REALM_CLIENTS.agent.clientId} (client credentials),
                   ${REALM_CLIENTS.oauthProxy.clientId} (OAuth proxy mode); anonymous DCR and CIMD for loopback clients
  Realm file:      ${REALM_FILE}
  Data:            ${keycloak.reused ? '(owned by the running instance)' : `${instanceDir} (run with --fresh to re-import the realm)`}${
    keycloak.logFile ? `\n  Log:             ${keycloak.logFile}` : ''
  }
${keycloak.reused ? '' : 'Press Ctrl-C to stop.'}`);
}

function port(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === '') return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > 65_535)
    throw new Error(`${name} must be a port number, got ${value}`);
  return parsed;
}

try {
  await main();
} catch (error) {
  console.error(`pnpm keycloak: ${(error as Error).message}`);
  process.exit(1);
}
