/**
 * `pnpm start`: the stack on its embedded defaults, one command. For now that is the MCP
 * server in `key` mode on the embedded database; MCP_AUTH_PROVIDER=none picks the other mode.
 * On the first run in key mode it creates a demo key so the summary can show a working setup.
 */
import { spawn } from 'node:child_process';
import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { ConfigError, loadConfig } from '../apps/server/src/config.ts';
import { openAppDatabase } from '../apps/server/src/database.ts';

const DEMO_USER = 'demo-user';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : String(error)}\n`);
  process.exit(78);
}

let demoKey: string | undefined;
if (config.authMode === 'key') {
  const database = await openAppDatabase(config, 'tool');
  try {
    const store = new ApiKeyStore(database.pool);
    if ((await store.countActive()) === 0) {
      demoKey = (await store.create({ userId: DEMO_USER, name: 'created by pnpm start' })).secret;
    }
  } finally {
    await database.close();
  }
}

const server = spawn(process.execPath, ['apps/server/src/main.ts'], { stdio: 'inherit', env: process.env });
server.once('exit', (code) => process.exit(code ?? 1));
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => server.kill(signal));

const localUrl = `http://127.0.0.1:${config.port}`;
for (let attempt = 0; attempt < 600; attempt++) {
  if (
    await fetch(`${localUrl}/health`).then(
      (r) => r.ok,
      () => false,
    )
  )
    break;
  await new Promise((resolve) => setTimeout(resolve, 100));
}

const mcpUrl = `${config.baseUrl}/mcp`;
const lines = ['', `  Expenses MCP server: ${mcpUrl}`, `  Auth mode:           ${config.authMode}`];
lines.push(
  `  Database:            ${config.databaseUrl ? 'PostgreSQL (DATABASE_URL)' : `embedded, in ${config.dataDir}`}`,
);
if (config.authMode === 'key') {
  if (demoKey) {
    lines.push('', `  A demo key for user "${DEMO_USER}" (shown once; only its hash is stored):`, `    ${demoKey}`);
  }
  lines.push(
    '',
    '  Keys:   pnpm keys create --user <id>   |   pnpm keys list   |   pnpm keys revoke <key-id>',
    '  VS Code: .vscode/mcp.json has "expenses (API key)"; paste the key when it asks.',
  );
} else {
  lines.push('', '  VS Code: .vscode/mcp.json has "expenses (no auth)".');
}
lines.push('  Ctrl-C stops it.', '');
process.stdout.write(`${lines.join('\n')}\n`);
