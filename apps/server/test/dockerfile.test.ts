import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { replayDockerfile } from '@mcp-auth-stack/testing';
import { connectClient, run } from './helpers.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * No Docker engine runs here, so the image is replayed: every COPY from the build context and
 * every `pnpm` RUN step, in a fresh directory, then the image's own CMD with its own ENV. What
 * the image would hold is what this starts, and it must serve a health check and an MCP call.
 */
test('apps/server/Dockerfile: its files, install step and command give a working server', async () => {
  const app = await mkdtemp(join(tmpdir(), 'mcp-image-'));
  try {
    const { env, command } = await replayDockerfile(ROOT, 'apps/server/Dockerfile', app);
    assert.deepEqual(command, ['node', 'apps/server/src/main.ts']);
    assert.equal(env.NODE_ENV, 'production');
    // Only production dependencies were installed: no test tools in the image.
    const installed = await run('sh', ['-c', `ls ${join(app, 'node_modules/.pnpm')}`]);
    assert.doesNotMatch(installed.stdout, /biomejs|typescript@|autocannon|inspector/);

    const dataDir = join(app, 'data');
    const keyResult = await run(
      process.execPath,
      [join(app, 'apps/server/src/keys-cli.ts'), 'create', '--user', 'img'],
      {
        DATA_DIR: dataDir,
      },
    );
    assert.equal(keyResult.code, 0, keyResult.stderr);
    const key = keyResult.stdout.trim();

    const child = spawn(process.execPath, [join(app, (command as string[])[1] as string)], {
      cwd: app,
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
