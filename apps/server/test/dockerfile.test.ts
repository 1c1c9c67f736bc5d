import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { dockerignore, replayDockerfile, run } from '@mcp-auth-stack/testing';
import { connectClient } from './helpers.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

test('the build context leaves out secrets at any depth and test output; the sources go in', async () => {
  const ignored = await dockerignore(join(ROOT, '.dockerignore'));
  const sent = (path: string) => !ignored.some((pattern) => pattern.test(path));
  for (const secret of [
    '.env',
    '.env.local',
    '.azure/prod/.env', // azd's store: client secrets, signing and encryption keys
    '.azure/prod/config.json',
    'apps/agent/.env',
    'apps/server/.env.production',
    'test-results/login/trace.zip',
    'playwright-report/index.html',
    '.data/pgdata/PG_VERSION',
  ]) {
    assert.equal(sent(secret), false, `${secret} stays out of the build context`);
  }
  for (const source of ['package.json', 'pnpm-lock.yaml', 'apps/server/src/main.ts', 'keycloak/realm-mcp.json']) {
    assert.equal(sent(source), true, `${source} is in the build context`);
  }
});

/**
 * No Docker engine runs here, so the image is replayed: every stage's COPY and `pnpm`/`node`
 * RUN steps, each stage in its own directory, then the image's own CMD with its own ENV. What
 * the image would hold is what this starts: the bundle and the keys CLI beside it, with only the
 * files they load from outside themselves. It must migrate a fresh (embedded) database, serve a
 * health check and answer an authenticated MCP call.
 */
test('apps/server/Dockerfile: its build, files and command give a working server', async () => {
  const app = await mkdtemp(join(tmpdir(), 'mcp-image-'));
  try {
    const { root, env, command } = await replayDockerfile(ROOT, 'apps/server/Dockerfile', app);
    const entry = command?.at(-1) ?? '';
    assert.equal(command?.[0], 'node');
    assert.equal(entry, 'apps/server/dist/main.cjs');
    assert.equal(env.NODE_ENV, 'production');
    // The bundle, not the sources: no TypeScript of the server, no test or build tool, and not
    // the SDK or zod, which the bundle holds (hono stays: the telemetry package depends on it).
    assert.equal(await exists(join(root, entry)), true);
    assert.equal(await exists(join(root, 'apps/server/src')), false, 'the server runs from the bundle');
    const installed = await run('sh', ['-c', `ls ${join(root, 'node_modules/.pnpm')}`]);
    assert.doesNotMatch(
      installed.stdout,
      /biomejs|typescript@|autocannon|inspector|playwright-core|mcp-remote|rolldown|@modelcontextprotocol\+sdk|^zod@/m,
    );
    // What the bundle still loads from the tree: PGlite beside the embedded database's module,
    // the OpenTelemetry exporters beside the telemetry package's.
    assert.match(installed.stdout, /@electric-sql\+pglite@/);
    assert.match(installed.stdout, /@opentelemetry\+exporter-trace-otlp-http@/);
    assert.equal(await exists(join(root, 'packages/database/src/embedded.ts')), true);
    assert.equal(await exists(join(root, 'apps/agent')), false, 'no other app of the workspace');
    assert.equal(await exists(join(root, 'packages/keycloak')), false, 'only what the bundle loads');
    assert.equal(await exists(join(root, 'packages/expenses')), false, 'only what the bundle loads');

    const dataDir = join(app, 'data');
    const keyResult = await run(
      process.execPath,
      [join(root, 'apps/server/dist/keys-cli.mjs'), 'create', '--user', 'img'],
      {
        DATA_DIR: dataDir,
      },
    );
    assert.equal(keyResult.code, 0, keyResult.stderr);
    const key = keyResult.stdout.trim().split('\n').at(-1) ?? '';

    const child = spawn(process.execPath, (command as string[]).slice(1), {
      cwd: root,
      env: {
        ...process.env,
        ...env,
        DATA_DIR: dataDir,
        HOST: '127.0.0.1',
        PORT: '0',
        LOG_LEVEL: 'info',
        // The entry says whether V8 took the code cache the image's build wrote (decision 48).
        NODE_DEBUG: 'code-cache',
      },
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
      // Written at build time with the CMD's own flags (V8 refuses a cache made with others).
      assert.match(output, /code cache \S+\/apps\/server\/dist\/server\.cjs\.code-cache accepted/);
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
