import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { replayDockerfile, run } from '@mcp-auth-stack/testing';
import { connectClient } from './helpers.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * No Docker engine runs here, so the image is replayed: every COPY from the build context and
 * every `pnpm` RUN step, in a fresh directory, then the image's own CMD with its own ENV. What
 * the image would hold is what this starts, and it must serve a health check and an MCP call.
 */
test('apps/server/Dockerfile: its files, install step and command give a working server', async () => {
  const app = await mkdtemp(join(tmpdir(), 'mcp-image-'));
  try {
    const { root, env, command } = await replayDockerfile(ROOT, 'apps/server/Dockerfile', app);
    assert.deepEqual(command, ['node', 'apps/server/src/main.ts']);
    assert.equal(env.NODE_ENV, 'production');
    // A self-contained folder of the server: production dependencies only, no test tools, no
    // other app of the workspace.
    const installed = await run('sh', ['-c', `ls ${join(root, 'node_modules/.pnpm')}`]);
    assert.doesNotMatch(installed.stdout, /biomejs|typescript@|autocannon|inspector|playwright-core|mcp-remote/);
    assert.equal(await exists(join(root, 'apps/server/node_modules/@mcp-auth-stack/keycloak')), false);
    assert.equal(await exists(join(root, 'apps/agent')), false, 'no other app of the workspace');
    assert.equal(await exists(join(root, 'packages/keycloak')), false, 'only the workspace packages it imports');

    const dataDir = join(app, 'data');
    const keyResult = await run(
      process.execPath,
      [join(root, 'apps/server/src/keys-cli.ts'), 'create', '--user', 'img'],
      {
        DATA_DIR: dataDir,
      },
    );
    assert.equal(keyResult.code, 0, keyResult.stderr);
    const key = keyResult.stdout.trim();

    const child = spawn(process.execPath, [join(root, (command as string[])[1] as string)], {
      cwd: root,
      env: { ...process.env, ...env, DATA_DIR: dataDir, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(output)), 60_000);
        child.stdout.on('data', () => {
          const match = /"msg":"listening","url":"([^"]+)"/.exec(output);
          if (match?.[1]) {
            clearTimeout(timer);
            resolve(match[1]);
          }
        });
      });
      assert.equal((await fetch(`${url}/health`)).status, 200);
      const client = await connectClient(`${url}/mcp`, { Authorization: `Bearer ${key}` });
      const { tools } = await client.listTools();
      assert.equal(tools.length, 4);
      await client.close();
    } finally {
      child.kill('SIGTERM');
    }
  } finally {
    await rm(app, { recursive: true, force: true });
  }
});
