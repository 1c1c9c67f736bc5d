import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createLogger } from '@mcp-auth-stack/config';
import { loadConfig } from '@mcp-auth-stack/server/config';
import { startServer } from '@mcp-auth-stack/server/start-server';
import { startTestStack } from '@mcp-auth-stack/testing-stack/stack';

/**
 * The README's `npx` lines fetch a package at run time, where the tests run the one the
 * workspace installs (mcp-remote.test.ts, process.test.ts). An `npx` line without a version
 * would run whatever is newest that day, which nothing tested; one with another version would
 * run what the tests never saw.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
/**
 * Where each package the README runs with npx is installed (and its tests run it). The root
 * installs both too: npx in the checkout finds a package any workspace installs and then looks
 * for its command in the root's node_modules/.bin only ("inspector: not found").
 */
const INSTALLED_BY = { 'mcp-remote': 'apps/server', '@modelcontextprotocol/inspector': 'apps/server' } as const;

test('every npx line of the README names a version, the one the workspace installs and tests', async () => {
  const readme = await readFile(`${ROOT}README.md`, 'utf8');
  // A package name (scoped or not), then any tag: a range or `latest` is caught, not skipped.
  const spec = String.raw`(@?[a-z0-9][\w.-]*(?:\/[\w.-]+)?)(?:@([^\s"'\x60]+))?`;
  const runs = [
    // On a command line: npx [-y|--yes] <package>[@<tag>]
    ...readme.matchAll(new RegExp(String.raw`\bnpx\s+(?:(?:-y|--yes)\s+)?${spec}`, 'g')),
    // In an editor's server entry: "command": "npx", "args": ["-y", "<package>[@<tag>]", ...]
    ...readme.matchAll(
      new RegExp(String.raw`"command":\s*"npx",\s*"args":\s*\[\s*(?:"(?:-y|--yes)",\s*)?"${spec}"`, 'g'),
    ),
  ];
  // Every npx the README runs is one of those: `npx` followed by a space or a quote (not the
  // word in prose).
  const invocations = [...readme.matchAll(/\bnpx(?=\s|")/g)].length;
  assert.equal(runs.length, invocations, `each npx is read: ${runs.map((m) => m[0]).join(' | ')}`);
  assert.ok(runs.length >= 3, `the README's npx lines: ${runs.map((m) => m[0]).join(' | ')}`);
  for (const [line, name, version] of runs) {
    assert.ok(name && name in INSTALLED_BY, `${line}: a package the tests run from the workspace`);
    const workspace = INSTALLED_BY[name as keyof typeof INSTALLED_BY];
    const manifest = JSON.parse(await readFile(`${ROOT}${workspace}/package.json`, 'utf8')) as {
      devDependencies?: Record<string, string>;
    };
    const installed = createRequire(`${ROOT}${workspace}/package.json`)(`${name}/package.json`) as { version: string };
    assert.equal(version, manifest.devDependencies?.[name as string], `${line}: the version ${workspace} pins`);
    assert.equal(version, installed.version, `${line}: the version installed`);
  }
});

const sh = promisify(execFile);

test("the README's Inspector line, run as written from the repository's root, lists the tools", async () => {
  const stack = await startTestStack(async (databaseUrl, log) => {
    const config = loadConfig({ PORT: '0', HOST: '127.0.0.1', MCP_AUTH_PROVIDER: 'key', DATABASE_URL: databaseUrl });
    return await startServer(config, createLogger('warn', log), { tracing: false });
  });
  try {
    const key = (await stack.keys.create({ userId: 'npx-user' })).secret;
    const readme = await readFile(`${ROOT}README.md`, 'utf8');
    const line = readme.split('\n').find((text) => text.startsWith('npx @modelcontextprotocol/inspector@'));
    if (!line?.includes('http://localhost:8000/mcp'))
      throw new Error('the README runs the Inspector against the default URL');
    // As written, from the root, where a user who ran `pnpm start` is; only the port is the test's.
    const { stdout } = await sh('sh', ['-c', line.replace('http://localhost:8000/mcp', stack.mcpUrl)], {
      cwd: ROOT,
      env: { ...process.env, KEY: key },
      timeout: 120_000,
    });
    assert.match(stdout, /"name": "get_user_expenses"/);
  } finally {
    await stack.close();
  }
});

test("the README's mcp-remote line finds mcp-remote from the repository's root, the workspace's version", async () => {
  // Without a URL it prints its usage: enough to show npx resolved it here (the whole OAuth flow
  // runs in apps/server/test/mcp-remote.test.ts).
  const run = await sh('sh', ['-c', 'npx -y mcp-remote@0.15.1'], { cwd: ROOT, timeout: 60_000 }).catch(
    (error: { stdout: string; stderr: string; code: number }) => error,
  );
  assert.match(`${run.stdout}${run.stderr}`, /Usage: mcp-remote <https:\/\/server-url>/);
});
