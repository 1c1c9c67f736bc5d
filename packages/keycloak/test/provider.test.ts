import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { POLICY_PROVIDER_JAR } from '../src/provider.ts';

const execFileAsync = promisify(execFile);
const root = resolve(import.meta.dirname, '../../..');

test('the committed Keycloak provider jar is what its sources compile to (pnpm keycloak:provider)', async () => {
  const work = await mkdtemp(join(tmpdir(), 'provider-test-'));
  try {
    const built = join(work, 'built.jar');
    // The command keycloak/README.md gives, to another file.
    await execFileAsync('pnpm', ['-s', 'keycloak:provider', '--out', built], { cwd: root });
    const [committed, fresh] = await Promise.all([readFile(POLICY_PROVIDER_JAR), readFile(built)]);
    assert.ok(
      committed.equals(fresh),
      'keycloak/providers/mcp-auth-stack-client-policies.jar differs from its sources: run pnpm keycloak:provider and commit the jar',
    );
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});
