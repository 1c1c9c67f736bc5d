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
  assert.match(moved, /"expenses": \{"type":"http","url":"http:\/\/localhost:8117\/mcp"\}/);
  const key = connectLines({ ...keycloak, authMode: 'key', baseUrl: 'http://localhost:8117' }).join('\n');
  assert.match(key, /"expenses \(API key\)": \{"type":"http","url":"http:\/\/localhost:8117\/mcp","headers":/);
});

test('how VS Code gets a client id follows KEYCLOAK_REGISTRATION', () => {
  const lines = (registration: 'direct' | 'workaround' | 'off') =>
    connectLines({ ...keycloak, keycloakRegistration: registration, baseUrl: VSCODE_FILE_URL }).join('\n');
  assert.match(lines('direct'), /registers itself with Keycloak/);
  assert.doesNotMatch(lines('workaround'), /with Keycloak/, 'workaround: VS Code registers with this server');
  assert.match(lines('workaround'), /through this server's \/register/);
  assert.match(lines('off'), /asks for a client id: give vscode-mcp-client/);
});
