import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { connectLines, VSCODE_FILE_URL } from '../scripts/start-summary.ts';

const keycloak = { authMode: 'keycloak', keycloakRegistration: 'direct' } as const;

test('.vscode/mcp.json is what VS Code is pointed at only when it names the URL being served', async () => {
  const file = JSON.parse(await readFile(new URL('../.vscode/mcp.json', import.meta.url), 'utf8')) as {
    servers: Record<string, { url: string }>;
  };
  assert.equal(file.servers.expenses?.url, `${VSCODE_FILE_URL}/mcp`, 'the constant is what the file says');
  assert.match(
    connectLines({ ...keycloak, baseUrl: VSCODE_FILE_URL }).join('\n'),
    /\.vscode\/mcp\.json has "expenses": start it/,
  );

  const moved = connectLines({ ...keycloak, baseUrl: 'http://localhost:8117' }).join('\n');
  assert.doesNotMatch(moved, /mcp\.json has/);
  // The file's own entry changes: another "expenses" beside it would repeat the key.
  assert.match(moved, /make "expenses"\n +\{"type":"http","url":"http:\/\/localhost:8117\/mcp"\}/);
  assert.ok(Object.keys(file.servers).includes('expenses') && Object.keys(file.servers).includes('expenses (API key)'));
  const key = connectLines({ ...keycloak, authMode: 'key', baseUrl: 'http://localhost:8117' }).join('\n');
  assert.match(key, /make "expenses \(API key\)"\n +\{"type":"http","url":"http:\/\/localhost:8117\/mcp","headers":/);
  // The agent calls localhost:8000 unless told: on another port the line says where.
  assert.match(
    moved,
    /Agent +API_HOST=github GITHUB_TOKEN=… MCP_SERVER_URL=http:\/\/localhost:8117\/mcp MCP_AUTH=oauth pnpm agent/,
  );
  // The model provider is named: without API_HOST the agent stops at once (exit 78).
  assert.match(
    connectLines({ ...keycloak, baseUrl: VSCODE_FILE_URL }).join('\n'),
    /Agent +API_HOST=github GITHUB_TOKEN=… MCP_AUTH=oauth pnpm agent/,
  );
});

test('the key commands reach the database being served: DATA_DIR outside .data, a note for DATABASE_URL', () => {
  const base = { authMode: 'key', baseUrl: VSCODE_FILE_URL, missingKey: 'never-made', demoUser: 'demo-user' } as const;
  assert.match(connectLines(base).join('\n'), /Create one: pnpm keys create --user demo-user/);
  const elsewhere = connectLines({ ...base, keysDatabase: { dataDir: "/tmp/it's here" } }).join('\n');
  assert.match(elsewhere, /Create one: DATA_DIR='\/tmp\/it'\\''s here' pnpm keys create --user demo-user/);
  assert.match(elsewhere, /Keys +DATA_DIR='\/tmp\/it'\\''s here' pnpm keys create --user <id>/);
  const postgres = connectLines({ ...base, keysDatabase: 'database-url' }).join('\n');
  assert.match(postgres, /\(with the same DATABASE_URL set\)/);
  assert.doesNotMatch(postgres, /postgres:\/\//, 'the URL, with its password, is not printed');
});

test('how VS Code gets a client id follows KEYCLOAK_REGISTRATION', () => {
  const lines = (registration: 'direct' | 'workaround' | 'off') =>
    connectLines({ ...keycloak, keycloakRegistration: registration, baseUrl: VSCODE_FILE_URL }).join('\n');
  assert.match(lines('direct'), /registers itself with Keycloak/);
  assert.doesNotMatch(lines('workaround'), /with Keycloak/, 'workaround: VS Code registers with this server');
  assert.match(lines('workaround'), /through this server's \/register/);
  assert.match(lines('off'), /asks for a client id: give vscode-mcp-client/);
});
