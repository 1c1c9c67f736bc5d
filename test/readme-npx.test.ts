import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * The README's `npx` lines fetch a package at run time, where the tests run the one the
 * workspace installs (mcp-remote.test.ts, process.test.ts). An `npx` line without a version
 * would run whatever is newest that day, which nothing tested; one with another version would
 * run what the tests never saw.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
/** Where each package the README runs with npx is installed (and its tests run it). */
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
