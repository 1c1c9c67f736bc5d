/**
 * No Docker engine runs here, so `apps/agent/Dockerfile` is replayed as in the server's test:
 * the whole-context COPY (less .dockerignore) into a fresh directory, its `pnpm` RUN steps, then
 * the image's CMD with the image's ENV, and its HEALTHCHECK command against what that started.
 */
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { replayDockerfile, run } from '@mcp-auth-stack/testing';
import { type ScriptedLlm, startScriptedLlm } from '@mcp-auth-stack/testing/scripted-llm';
import { scriptedModelEnv, spawnServe } from './helpers/agent.ts';
import { startTestStack, type TestStack } from './helpers/server.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

let image: string;
let stack: TestStack;
let llm: ScriptedLlm;

before(async () => {
  image = await mkdtemp(join(tmpdir(), 'agent-image-'));
  [stack, llm] = await Promise.all([startTestStack(), startScriptedLlm()]);
});

after(async () => {
  await llm?.close();
  await stack?.close();
  if (image) await rm(image, { recursive: true, force: true });
});

test('apps/agent/Dockerfile: its files, install step, ENV, CMD and HEALTHCHECK give a working agent service', async () => {
  const { root, env, command, healthcheck } = await replayDockerfile(ROOT, 'apps/agent/Dockerfile', image);
  assert.deepEqual(command, ['node', 'apps/agent/src/serve.ts']);
  assert.deepEqual(env, { NODE_ENV: 'production', HOST: '0.0.0.0', PORT: '8001', MCP_AUTH: 'client_credentials' });
  assert.equal(healthcheck?.[0], 'node');

  // A self-contained folder of the agent: its production dependencies and the workspace packages
  // it imports; no test tools, and nothing of the server it only tests with (its app, pg).
  const installed = (await run('sh', ['-c', `ls ${join(root, 'node_modules/.pnpm')}`])).stdout;
  assert.match(installed, /@langchain\+mcp-adapters@/, 'the agent’s own dependencies are there');
  assert.doesNotMatch(installed, /biomejs|typescript@|playwright-core|autocannon/);
  assert.doesNotMatch(installed, /electric-sql\+pglite|^pg@/m, 'no database driver: the agent has no database');
  assert.equal(await exists(join(root, 'apps/agent/node_modules/@mcp-auth-stack/server')), false);
  assert.equal(await exists(join(root, 'apps/server')), false, 'no server app');
  assert.equal(await exists(join(root, 'packages/database')), false, 'only the workspace packages it imports');
  assert.equal(await exists(join(root, 'packages/config/src/index.ts')), true);
  assert.equal(await exists(join(root, 'apps/agent/test')), false, '.dockerignore keeps the tests out');

  const script = join(root, (command as string[])[1] as string);
  const model = scriptedModelEnv(llm.baseUrl);

  // As the image is configured (client credentials) but without its secret: a clear refusal.
  await assert.rejects(
    spawnServe({ ...env, ...model, HOST: '127.0.0.1', PORT: '0' }, { script, cwd: root }),
    /exited with 78[\s\S]*MCP_CLIENT_SECRET is required/,
  );

  // Alive but unable to work (its MCP server does not answer): /health is 200, yet the image's
  // HEALTHCHECK must not call it healthy, or `docker compose up --wait` passes a dead agent.
  const [program, ...args] = healthcheck as [string, ...string[]];
  const stranded = await spawnServe(
    {
      ...env,
      ...model,
      HOST: '127.0.0.1',
      PORT: '0',
      MCP_AUTH: 'key',
      MCP_API_KEY: 'mcpk_unused',
      MCP_SERVER_URL: 'http://127.0.0.1:9/mcp',
    },
    { script, cwd: root, ready: false },
  );
  try {
    assert.equal((await fetch(`${stranded.url}/health`)).status, 200);
    assert.equal((await run(process.execPath, args, { PORT: new URL(stranded.url).port })).code, 1);
  } finally {
    await stranded.stop();
  }

  // With a key for the real server (key mode: no Keycloak in this file), it serves and is healthy.
  const key = (await stack.keys.create({ userId: 'image-user', name: 'agent image' })).secret;
  const agent = await spawnServe(
    { ...env, ...model, HOST: '127.0.0.1', PORT: '0', MCP_AUTH: 'key', MCP_API_KEY: key, MCP_SERVER_URL: stack.mcpUrl },
    { script, cwd: root },
  );
  try {
    const health = await fetch(`${agent.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', ready: true, tools: 4 });
    // The image's own HEALTHCHECK command, with the port the agent took.
    const port = new URL(agent.url).port;
    assert.equal((await run(program === 'node' ? process.execPath : program, args, { PORT: port })).code, 0);
  } finally {
    assert.equal(await agent.stop(), 0);
  }
  // … and it reports an agent that is gone.
  assert.equal((await run(process.execPath, args, { PORT: new URL(agent.url).port })).code, 1);
  assert.equal(program, 'node');
});
