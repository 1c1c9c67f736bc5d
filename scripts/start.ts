/**
 * `pnpm start`: the whole stack locally, one command, Ctrl-C stops everything.
 *
 * With MCP_AUTH_PROVIDER unset or `keycloak`: Keycloak (the local runner, realm imported) and
 * the MCP server in `keycloak` mode on the embedded database. MCP_AUTH_PROVIDER=oauth_proxy
 * starts the same Keycloak as the upstream of the server's OAuth proxy (its `mcp-oauth-proxy`
 * client), unless OAUTH_PROXY_UPSTREAM_DISCOVERY_URL names another. MCP_AUTH_PROVIDER=key or none
 * runs that mode alone, without Keycloak. In key mode the first run creates a demo key and
 * shows it once.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { directory } from '@mcp-auth-stack/config';
import { EXPENSE_USER_SCOPES } from '@mcp-auth-stack/expenses';
import { DEMO_USERS, KEYCLOAK_DATA_DIR_DEFAULT, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import { ConfigError, loadConfig } from '../apps/server/src/config.ts';
import { openAppDatabase } from '../apps/server/src/database.ts';

const DEMO_USER = 'demo-user';
const mode = process.env.MCP_AUTH_PROVIDER ?? 'keycloak';
const wholeStack =
  mode === 'keycloak' || (mode === 'oauth_proxy' && !process.env.OAUTH_PROXY_UPSTREAM_DISCOVERY_URL?.trim());
const keycloakPort = Number(process.env.KEYCLOAK_PORT ?? 8080);
const env: NodeJS.ProcessEnv = {
  ...process.env,
  MCP_AUTH_PROVIDER: mode,
  ...(wholeStack && !process.env.KEYCLOAK_REALM_URL
    ? { KEYCLOAK_REALM_URL: `http://localhost:${keycloakPort}/realms/mcp` }
    : {}),
};

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(env);
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : String(error)}\n`);
  process.exit(78);
}

let keycloak: RunningKeycloak | undefined;
let keycloakStarting: Promise<RunningKeycloak> | undefined;
let server: ChildProcess | undefined;
let stopping = false;
const stopAll = async (code: number) => {
  if (stopping) return;
  stopping = true;
  server?.kill('SIGTERM');
  if (!keycloak && keycloakStarting) {
    // Killing Keycloak mid-start could cut its one-off build step short: let it finish, then stop it.
    process.stderr.write('\nStopping Keycloak once it has started (Ctrl-C again to kill it now)...\n');
    keycloak = await keycloakStarting.catch(() => undefined);
  }
  await keycloak?.stop();
  process.exit(code);
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(130); // the second Ctrl-C does not wait
    void stopAll(0);
  });
}

if (wholeStack) {
  const interactive = process.stdout.isTTY;
  keycloakStarting = startKeycloak({
    httpPort: keycloakPort,
    managementPort: Number(process.env.KEYCLOAK_MANAGEMENT_PORT ?? 9000),
    instanceDir: directory(process.env, 'KEYCLOAK_DATA_DIR', KEYCLOAK_DATA_DIR_DEFAULT),
    ifRunning: 'reuse',
    realmEnv: {
      MCP_SERVER_RESOURCE_URL: `${config.baseUrl}/mcp`,
      MCP_OAUTH_PROXY_CALLBACK_URL: `${config.baseUrl}/auth/callback`,
    },
    onProgress: ({ phase, message, elapsedMs }) => {
      const line = `keycloak [${String(Math.round(elapsedMs / 1000)).padStart(3)} s] ${phase}: ${message}`;
      process.stdout.write(interactive ? `\r\x1b[2K${line.slice(0, process.stdout.columns - 1)}` : `${line}\n`);
    },
  });
  keycloak = await keycloakStarting.catch((error: unknown) => {
    process.stderr.write(`\nKeycloak could not start: ${(error as Error).message}\n`);
    process.exit(1);
  });
  // A signal arrived while Keycloak was starting: stopAll() owns the rest.
  if (stopping) await new Promise(() => {});
  if (interactive) process.stdout.write('\n');
}

let demoKey: string | undefined;
if (config.authMode === 'key') {
  const database = await openAppDatabase(config, 'tool');
  try {
    const store = new ApiKeyStore(database.pool);
    if ((await store.countActive()) === 0) {
      demoKey = (
        await store.create({ userId: DEMO_USER, name: 'created by pnpm start', scopes: [...EXPENSE_USER_SCOPES] })
      ).secret;
    }
  } finally {
    await database.close();
  }
}

server = spawn(process.execPath, ['apps/server/src/main.ts'], { stdio: 'inherit', env });
server.once('exit', (code) => void stopAll(code ?? 1));

const localUrl = `http://127.0.0.1:${config.port}`;
let healthy = false;
for (let attempt = 0; attempt < 600 && !healthy; attempt++) {
  healthy = await fetch(`${localUrl}/health`).then(
    (r) => r.ok,
    () => false,
  );
  if (!healthy) await new Promise((done) => setTimeout(done, 100));
}
if (!healthy) {
  process.stderr.write(`\nThe MCP server did not answer on ${localUrl}/health within 60 s; stopping.\n`);
  await stopAll(1);
}

const lines = [
  '',
  `  Expenses MCP server   ${config.baseUrl}/mcp   (auth: ${config.authMode})`,
  `  Database              ${config.databaseUrl ? 'PostgreSQL (DATABASE_URL)' : `embedded, in ${config.dataDir}`}`,
];
if (keycloak) {
  lines.push(
    `  Keycloak realm        ${keycloak.realmUrl}${keycloak.reused ? '   (already running; reused)' : ''}`,
    `  Keycloak admin        ${keycloak.adminConsoleUrl}   (admin / admin, demo only)`,
    `  Demo users            ${DEMO_USERS.map((user) => `${user.username} / ${user.password}`).join(', ')}   (demo only)`,
  );
}
if (config.authMode === 'key') {
  if (demoKey) lines.push('', `  Demo key for "${DEMO_USER}" (shown once; only its hash is stored):`, `    ${demoKey}`);
  lines.push(
    '',
    '  Keys      pnpm keys create --user <id>  |  pnpm keys list  |  pnpm keys revoke <key-id>',
    '  VS Code   .vscode/mcp.json has "expenses (API key)"; paste the key when it asks.',
  );
} else if (config.authMode === 'keycloak') {
  lines.push(
    '',
    `  VS Code   .vscode/mcp.json has "expenses": start it, and VS Code registers itself with Keycloak and`,
    '            opens the login page (sign in as one of the demo users).',
    `  Agent     MCP_AUTH=oauth pnpm agent "what did I spend this month?"  (see apps/agent/README.md)`,
  );
} else if (config.authMode === 'oauth_proxy' || config.authMode === 'entra_proxy') {
  lines.push(
    '',
    '  VS Code   .vscode/mcp.json has "expenses": start it, and VS Code registers itself with this server,',
    '            which shows its consent page, then sends you to sign in upstream (see docs/oauth-proxy.md).',
  );
} else {
  lines.push('', '  VS Code   .vscode/mcp.json has "expenses" (no auth in this mode).');
}
lines.push('  Ctrl-C stops everything.', '');
process.stdout.write(`${lines.join('\n')}\n`);
