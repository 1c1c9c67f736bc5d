/**
 * `pnpm start`: the whole stack locally, one command, Ctrl-C stops everything.
 *
 * With MCP_AUTH_PROVIDER unset or `keycloak`: Keycloak (the local runner, realm imported) and
 * the MCP server in `keycloak` mode on the embedded database. MCP_AUTH_PROVIDER=oauth_proxy
 * starts the same Keycloak as the upstream of the server's OAuth proxy (its `mcp-oauth-proxy`
 * client), unless OAUTH_PROXY_UPSTREAM_DISCOVERY_URL names another. MCP_AUTH_PROVIDER=key or none
 * runs that mode alone, without Keycloak. In key mode the first run on a terminal creates a demo
 * key and shows it once; without a terminal it says how to create one.
 *
 * Variables of its own (besides the server's): KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT,
 * KEYCLOAK_DATA_DIR. On a terminal the server's JSON request logs go to $DATA_DIR/server.log,
 * so they do not run through the summary; elsewhere (CI, a pipe) they stay on stdout.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve as resolvePath } from 'node:path';
import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { directory, integer } from '@mcp-auth-stack/config';
import { embeddedDatabaseOwner } from '@mcp-auth-stack/database';
import { EXPENSE_USER_SCOPES } from '@mcp-auth-stack/expenses';
import {
  DEMO_USERS,
  KEYCLOAK_DATA_DIR_DEFAULT,
  REALM_CLIENTS,
  type RunningKeycloak,
  startKeycloak,
} from '@mcp-auth-stack/keycloak';
import { ConfigError, loadConfig, STACK_AUTH_MODE } from '@mcp-auth-stack/server/config';
import { openAppDatabase } from '@mcp-auth-stack/server/database';
import { connectLines } from './start-summary.ts';

const DEMO_USER = 'demo-user';
// Ends the server's process group once this process is gone, even by SIGKILL (see below).
const WATCHDOG_SCRIPT = `parent=$1; shift
( while kill -0 "$parent" 2>/dev/null; do sleep 2; done; kill -TERM 0 ) </dev/null >/dev/null 2>&1 &
exec "$@"`;

// Blank counts as unset, as the server's config reads it.
const mode = process.env.MCP_AUTH_PROVIDER?.trim() || STACK_AUTH_MODE;
// A realm or an upstream of the user's own: no local Keycloak, whose realm the server would not use.
const wholeStack =
  (mode === 'keycloak' && !process.env.KEYCLOAK_REALM_URL?.trim()) ||
  (mode === 'oauth_proxy' &&
    !process.env.OAUTH_PROXY_UPSTREAM_DISCOVERY_URL?.trim() &&
    !process.env.KEYCLOAK_REALM_URL?.trim());

let config: ReturnType<typeof loadConfig>;
let keycloakPort: number;
let keycloakManagementPort: number;
let keycloakDataDir: string;
let env: NodeJS.ProcessEnv;
try {
  keycloakPort = integer(process.env, 'KEYCLOAK_PORT', 8080, 1, 65_535);
  keycloakManagementPort = integer(process.env, 'KEYCLOAK_MANAGEMENT_PORT', 9000, 1, 65_535);
  keycloakDataDir = directory(process.env, 'KEYCLOAK_DATA_DIR', KEYCLOAK_DATA_DIR_DEFAULT);
  env = {
    ...process.env,
    MCP_AUTH_PROVIDER: mode,
    // PORT=0 (a free port): chosen here, so that this script, the realm and the summary know it.
    ...(process.env.PORT?.trim() === '0'
      ? { PORT: String(await freePortOn(process.env.HOST?.trim() || '127.0.0.1')) }
      : {}),
    ...(wholeStack && !process.env.KEYCLOAK_REALM_URL
      ? { KEYCLOAK_REALM_URL: `http://localhost:${keycloakPort}/realms/mcp` }
      : {}),
    // The local realm's janitor client has the realm file's demo secret (or the one set here,
    // passed to Keycloak below): the server removes the registered clients nobody used.
    ...(wholeStack && mode === 'keycloak'
      ? {
          KEYCLOAK_JANITOR_CLIENT_SECRET:
            process.env.KEYCLOAK_JANITOR_CLIENT_SECRET || REALM_CLIENTS.janitor.demoSecret,
        }
      : {}),
    // The proxy signs in upstream as the realm's mcp-oauth-proxy client, whose secret the realm
    // takes from KEYCLOAK_PROXY_CLIENT_SECRET (Keycloak below inherits it), as compose does.
    ...(wholeStack && mode === 'oauth_proxy' && process.env.KEYCLOAK_PROXY_CLIENT_SECRET?.trim()
      ? {
          OAUTH_PROXY_UPSTREAM_CLIENT_SECRET:
            process.env.OAUTH_PROXY_UPSTREAM_CLIENT_SECRET?.trim() || process.env.KEYCLOAK_PROXY_CLIENT_SECRET.trim(),
        }
      : {}),
  };
  config = loadConfig(env);
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : String(error)}\n`);
  process.exit(78);
}

let keycloak: RunningKeycloak | undefined;
let keycloakStarting: Promise<RunningKeycloak> | undefined;
let server: ChildProcess | undefined;
let serverExited: Promise<unknown> = Promise.resolve();
let stopping = false;
let firstSignalAt = 0;
const stopAll = async (code: number) => {
  if (stopping) return;
  stopping = true;
  if (server && server.exitCode === null && server.signalCode === null) {
    // One SIGTERM, then the server closes its connections and the embedded database itself.
    server.kill('SIGTERM');
    await serverExited;
  }
  if (!keycloak && keycloakStarting) {
    // Killing Keycloak mid-start could cut its one-off build step short: let it finish, then stop it.
    process.stderr.write('\nStopping Keycloak once it has started (Ctrl-C again to kill it now)...\n');
    keycloak = await keycloakStarting.catch(() => undefined);
  }
  await keycloak?.stop();
  if (code === 0) process.stdout.write('Stopped.\n');
  process.exit(code);
};
// A closed terminal (SIGHUP) stops everything as Ctrl-C does; what is then written to it
// (EIO, EPIPE) is lost, and must not end this process before the server has closed its database.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE' && error.code !== 'EIO') throw error;
  });
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (stopping) {
      // A terminal sends Ctrl-C to the whole foreground process group, and pnpm passes on the
      // one it got: one key press arrives twice within moments. A later one means "now".
      if (Date.now() - firstSignalAt < 1_000) return;
      process.exit(130);
    }
    firstSignalAt = Date.now();
    void stopAll(0);
  });
}

// Before Keycloak: a Keycloak another `pnpm start` runs would be reused, and its realm updated
// for this PORT, under the stack that still serves the old one. Before the port too: a second
// `pnpm start` in one folder is told which process runs there, not only that a port is taken.
let owner = config.databaseUrl ? undefined : await embeddedDatabaseOwner(config.dataDir);
if (owner !== undefined && !owner.serving) {
  // A keys command holds the files for a moment (or a server is starting): waited for, as the
  // server itself waits for the lock, instead of refused at once.
  process.stderr.write(
    `Waiting for process ${owner.pid}, which has the embedded database in ${config.dataDir} open (a pnpm keys command, or a server starting)…\n`,
  );
  const deadline = Date.now() + 15_000;
  while (owner !== undefined && !owner.serving && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    owner = await embeddedDatabaseOwner(config.dataDir);
  }
}
if (owner !== undefined) {
  process.stderr.write(
    `The embedded database in ${config.dataDir} is in use by process ${owner.pid}: ${owner.serving ? 'another pnpm start (or a server) runs on this DATA_DIR' : 'it has held it for 15 s'}. Stop it, or give this one its own DATA_DIR.\n`,
  );
  process.exit(1);
}

for (const host of probedHosts()) {
  const inUse = await portInUse(host, config.port);
  // No IPv6 on this machine: nothing can listen on ::1 either.
  if (inUse === undefined || (host !== config.host && ['EADDRNOTAVAIL', 'EAFNOSUPPORT'].includes(inUse))) continue;
  if (inUse === 'EADDRINUSE' || inUse === 'EACCES') {
    process.stderr.write(
      `Port ${config.port} on ${host} is in use (${inUse}). Stop that program, or set PORT to another port (e.g. PORT=8117 pnpm start).\n`,
    );
  } else {
    // Not the port: the address (one this machine does not have, a name that does not resolve).
    process.stderr.write(
      `HOST ${config.host} cannot be listened on (${inUse}): it is not an address of this machine. Set HOST to one that is (127.0.0.1, the default, or 0.0.0.0 for every address).\n`,
    );
  }
  process.exit(1);
}

if (wholeStack) {
  const interactive = process.stdout.isTTY;
  keycloakStarting = startKeycloak({
    httpPort: keycloakPort,
    managementPort: keycloakManagementPort,
    portVariables: { http: 'KEYCLOAK_PORT', management: 'KEYCLOAK_MANAGEMENT_PORT' },
    instanceDir: keycloakDataDir,
    ifRunning: 'reuse',
    realmEnv: {
      MCP_SERVER_RESOURCE_URL: `${config.baseUrl}/mcp`,
      MCP_OAUTH_PROXY_CALLBACK_URL: `${config.baseUrl}/auth/callback`,
      MCP_SERVER_HOST: process.env.MCP_SERVER_HOST?.trim() || new URL(config.baseUrl).hostname,
      ...(process.env.KEYCLOAK_JANITOR_CLIENT_SECRET
        ? { KEYCLOAK_JANITOR_CLIENT_SECRET: process.env.KEYCLOAK_JANITOR_CLIENT_SECRET }
        : {}),
    },
    onProgress: ({ phase, message, elapsedMs }) => {
      const line = `keycloak [${String(Math.round(elapsedMs / 1000)).padStart(3)} s] ${phase}: ${message}`;
      // A terminal that reports no width (0: `script` without a window size) gets whole lines.
      const width = process.stdout.columns > 1 ? process.stdout.columns - 1 : undefined;
      process.stdout.write(interactive ? `\r\x1b[2K${line.slice(0, width)}` : `${line}\n`);
    },
  });
  keycloak = await keycloakStarting.catch((error: unknown) => {
    process.stderr.write(`\nKeycloak could not start: ${(error as Error).message}\n`);
    process.exit(1);
  });
  // A signal arrived while Keycloak was starting: stopAll() owns the rest.
  if (stopping) await new Promise(() => {});
  if (interactive) process.stdout.write('\n');
  // Keycloak going away by itself (the OOM killer picks the largest process, a crash): nobody
  // can sign in any more, so the stack stops and says so, as when the server stops.
  const started = keycloak;
  void started.exited.then(({ code, signal }) => {
    if (stopping) return;
    process.stderr.write(
      `\nKeycloak stopped (${code === null ? `by ${signal}` : `exit ${code}`}); its last output:\n${started.recentLog()}\n`,
    );
    void stopAll(code || 1);
  });
}

let demoKey: string | undefined;
let makeDemoKey = false;
let missingKey: 'never-made' | 'all-revoked' | undefined;
if (config.authMode === 'key') {
  const database = await openAppDatabase(config, 'tool').catch((error: unknown) => {
    process.stderr.write(
      `The database could not be opened (${config.databaseUrl ? 'DATABASE_URL' : `DATA_DIR ${config.dataDir}`}): ${(error as Error).message}\n`,
    );
    process.exit(1);
  });
  try {
    const store = new ApiKeyStore(database.pool);
    // Only where no key ever existed: keys all revoked (after a leak, say) must stay that way.
    // And only for a person at a terminal: a pipe or a log collector would keep the secret, and
    // a key nobody saw would be of no use.
    // Made once the server answers, just before the summary shows it: a key made before a
    // Ctrl-C or a failed start would be one nobody saw, and would stop every later start
    // from making one.
    if (!(await store.hasAny())) {
      if (process.stdout.isTTY) makeDemoKey = true;
      else missingKey = 'never-made';
    } else if ((await store.countActive()) === 0) {
      missingKey = 'all-revoked';
    }
  } finally {
    await database.close();
  }
}

// On a terminal, the request logs (one JSON line each) go to a file next to the data: the
// summary below is what a person reads there. Elsewhere stdout is a log collector's.
const logFile = process.stdout.isTTY ? join(config.dataDir, 'server.log') : undefined;
if (logFile) await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
// Its own process group: Ctrl-C reaches only this process, which stops the server once and
// waits for it (a second signal would make the server exit at once, without closing the
// embedded database). The watchdog stops it if this process dies without cleaning up.
server = spawn(
  '/bin/sh',
  ['-c', WATCHDOG_SCRIPT, 'mcp-server', String(process.pid), process.execPath, 'apps/server/src/main.ts'],
  { stdio: ['ignore', logFile ? 'pipe' : 'inherit', 'inherit'], env, detached: true },
);
if (logFile && server.stdout) {
  const serverOutput = server.stdout;
  const log = createWriteStream(logFile, { flags: 'a', mode: 0o600 });
  // A full disk, or a log that cannot be written, costs the log, not the service: the server
  // goes on (and answers a full disk itself), its output read and dropped so it never blocks.
  log.once('error', (error: NodeJS.ErrnoException) => {
    process.stderr.write(
      `\nThe request log ${logFile} cannot be written (${error.code ?? error.message}); the server goes on without it.\n`,
    );
    serverOutput.unpipe(log);
    serverOutput.resume();
  });
  serverOutput.pipe(log);
}
serverExited = new Promise((resolve) => server?.once('exit', resolve));
server.once('exit', (code, signal) => {
  if (stopping) return;
  process.stderr.write(
    `\nThe MCP server stopped (${code === null ? `by ${signal}` : `exit ${code}`})${logFile ? `; see ${logFile}` : ''}.\n`,
  );
  void stopAll(code || 1);
});
process.on('exit', () => {
  if (server?.pid && server.exitCode === null) {
    try {
      process.kill(-server.pid, 'SIGKILL');
    } catch {}
  }
});

// Where the server listens, reached from here: any address on a wildcard listener, an IPv6
// literal in brackets.
const probeHost = ['0.0.0.0', '::'].includes(config.host)
  ? '127.0.0.1'
  : config.host.includes(':')
    ? `[${config.host}]`
    : config.host;
const localUrl = `http://${probeHost}:${config.port}`;
let healthy = false;
for (let attempt = 0; attempt < 600 && !healthy && !stopping; attempt++) {
  healthy = await fetch(`${localUrl}/health`).then(
    (r) => r.ok,
    () => false,
  );
  if (!healthy) await new Promise((done) => setTimeout(done, 100));
}
if (!healthy) {
  if (stopping) await new Promise(() => {});
  process.stderr.write(`\nThe MCP server did not answer on ${localUrl}/health within 60 s; stopping.\n`);
  await stopAll(1);
}

// Ctrl-C came while the server was starting: stopAll() owns the rest, no summary.
if (stopping) await new Promise(() => {});
if (makeDemoKey) {
  try {
    demoKey = await createDemoKey();
  } catch (error) {
    process.stderr.write(`The demo key could not be made: ${(error as Error).message}\n`);
    missingKey = 'never-made';
  }
}
const mcpUrl = `${config.baseUrl}/mcp`;
const lines = [
  '',
  `  Expenses MCP server   ${mcpUrl}   (auth: ${config.authMode})`,
  `  Database              ${config.databaseUrl ? 'PostgreSQL (DATABASE_URL)' : `embedded, in ${config.dataDir}`}`,
];
if (logFile) lines.push(`  Request log           ${logFile}`);
if (keycloak) {
  lines.push(
    `  Keycloak realm        ${keycloak.realmUrl}${keycloak.reused ? '   (already running; reused)' : ''}`,
    `  Keycloak admin        ${keycloak.adminConsoleUrl}   (admin / admin, demo only)`,
    `  Demo users            ${DEMO_USERS.map((user) => `${user.username} / ${user.password}`).join(', ')}   (demo only)`,
  );
}
lines.push(
  '',
  ...connectLines({
    ...config,
    demoKey,
    missingKey,
    demoUser: DEMO_USER,
    keysDatabase: config.databaseUrl
      ? 'database-url'
      : config.dataDir === resolvePath('.data')
        ? undefined
        : { dataDir: config.dataDir },
  }),
  '  Ctrl-C stops everything.',
  '',
);
process.stdout.write(`${lines.join('\n')}\n`);

/** The demo user's key, in the database the running server uses (the keys CLI's way in). */
async function createDemoKey(): Promise<string> {
  const database = await openAppDatabase(config, 'tool');
  try {
    const store = new ApiKeyStore(database.pool);
    const scopes = [...EXPENSE_USER_SCOPES];
    return (await store.create({ userId: DEMO_USER, name: 'created by pnpm start', scopes })).secret;
  } finally {
    await database.close();
  }
}

/**
 * Where the server's port must be free: its listening address, and ::1 too when the URL it
 * prints says `localhost` on a loopback listener. Where `localhost` resolves to ::1 first
 * (macOS, Fedora), a program on ::1 would get the requests, and the key, meant for this server.
 */
function probedHosts(): string[] {
  const listensOnIpv4Loopback = config.host === '127.0.0.1' || config.host === 'localhost';
  return new URL(config.baseUrl).hostname === 'localhost' && listensOnIpv4Loopback
    ? [config.host, '::1']
    : [config.host];
}

/** What holds the port, or undefined when it is free to listen on. */
async function portInUse(host: string, port: number): Promise<string | undefined> {
  return await new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    probe.listen(port, host, () => probe.close(() => resolve(undefined)));
  });
}

/** A port free on `host` now (the OS picks it), for PORT=0. */
function freePortOn(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
