import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort } from '@mcp-auth-stack/testing';

/**
 * `pnpm keycloak` as a user runs it: it starts Keycloak and says where; a second run finds it
 * and leaves it alone; SIGTERM stops it and frees the ports.
 */
const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

let dataDir: string;
let httpPort: number;
let managementPort: number;
let first: ChildProcess;
let firstOutput = '';
let firstExit: Promise<number | null>;

function run(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exit };
}

const ports = () => ['--port', String(httpPort), '--management-port', String(managementPort)];

before(
  async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'kc-cli-'));
    httpPort = await freePort();
    managementPort = await freePort();
    const started = run([...ports(), '--data-dir', dataDir]);
    first = started.child;
    firstExit = started.exit;
    for (let waited = 0; !started.output().includes('Press Ctrl-C to stop.'); waited += 500) {
      if (waited > 540_000) throw new Error(`pnpm keycloak did not come up:\n${started.output()}`);
      const ended = await Promise.race([
        started.exit,
        new Promise((resolve) => setTimeout(() => resolve('waiting'), 500)),
      ]);
      if (ended !== 'waiting') throw new Error(`pnpm keycloak exited with ${ended}:\n${started.output()}`);
    }
    firstOutput = started.output();
  },
  { timeout: 600_000 },
);

after(async () => {
  if (first.exitCode === null) first.kill('SIGKILL');
  await rm(dataDir, { recursive: true, force: true });
});

test('a port that is not one is named as it was given: the variable, or the flag', async () => {
  const fromEnv = run(['--data-dir', dataDir], { KEYCLOAK_PORT: 'abc' });
  assert.equal(await fromEnv.exit, 1);
  assert.match(fromEnv.output(), /KEYCLOAK_PORT must be a port number, got abc/);
  const fromFlag = run(['--port', 'abc', '--data-dir', dataDir]);
  assert.equal(await fromFlag.exit, 1);
  assert.match(fromFlag.output(), /--port must be a port number, got abc/);
});

test('the summary names the realm, the admin console and the demo users', () => {
  assert.match(firstOutput, new RegExp(`Realm \\(issuer\\):  http://localhost:${httpPort}/realms/mcp`));
  assert.match(firstOutput, /Admin console: {3}http:\/\/localhost:\d+\/admin/);
  assert.match(firstOutput, /alice \/ alice-password/);
  assert.match(firstOutput, /demo-only passwords/);
});

test('a second run finds it running, leaves it alone and exits 0', async () => {
  const second = run([...ports(), '--data-dir', dataDir]);
  assert.equal(await second.exit, 0, second.output());
  assert.match(second.output(), /is already running/);
  assert.match(second.output(), /did not start it, so it leaves it running/);
  const discovery = await fetch(`http://localhost:${httpPort}/realms/mcp/.well-known/openid-configuration`);
  assert.equal(discovery.status, 200, 'still serving');
});

test('--fresh while it runs from that folder is refused: its database stays', async () => {
  const fresh = run([...ports(), '--data-dir', dataDir, '--fresh']);
  assert.equal(await fresh.exit, 1, fresh.output());
  assert.match(fresh.output(), /Keycloak runs from .* \(process \d+\): stop it first/);
  assert.ok((await stat(join(dataDir, 'data', 'h2'))).isDirectory(), 'the database is still there');
  const discovery = await fetch(`http://localhost:${httpPort}/realms/mcp/.well-known/openid-configuration`);
  assert.equal(discovery.status, 200, 'still serving');
});

test('SIGTERM stops Keycloak, exits 0 and frees the port', async () => {
  first.kill('SIGTERM');
  assert.equal(await firstExit, 0);
  await assert.rejects(fetch(`http://localhost:${httpPort}/realms/mcp`), 'nothing answers any more');
});
