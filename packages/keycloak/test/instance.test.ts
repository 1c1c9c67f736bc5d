import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startKeycloak } from '../src/index.ts';
import { freePort } from './helpers.ts';

test('a kept database imported for another server URL is refused before Keycloak starts, naming both', async () => {
  // What `pnpm start` leaves in .data/keycloak after a run for http://localhost:8000.
  const instanceDir = await mkdtemp(join(tmpdir(), 'kc-instance-'));
  try {
    await mkdir(join(instanceDir, 'data', 'h2'), { recursive: true });
    await writeFile(
      join(instanceDir, 'data', 'realm-env.json'),
      JSON.stringify({
        MCP_OAUTH_PROXY_CALLBACK_URL: 'http://localhost:8000/auth/callback',
        MCP_SERVER_RESOURCE_URL: 'http://localhost:8000/mcp',
      }),
    );
    await assert.rejects(
      startKeycloak({
        instanceDir,
        httpPort: await freePort(),
        managementPort: await freePort(),
        realmEnv: {
          MCP_OAUTH_PROXY_CALLBACK_URL: 'http://localhost:8000/auth/callback',
          MCP_SERVER_RESOURCE_URL: 'http://localhost:8001/mcp',
        },
      }),
      /imported with other values[\s\S]*MCP_SERVER_RESOURCE_URL: imported http:\/\/localhost:8000\/mcp, now http:\/\/localhost:8001\/mcp[\s\S]*--fresh/,
    );
    await assert.rejects(access(join(instanceDir, 'keycloak.pid')), 'no Keycloak was started');
  } finally {
    await rm(instanceDir, { recursive: true, force: true });
  }
});
