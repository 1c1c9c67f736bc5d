import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/**
 * `pnpm load` as the README names it (20 users, 30 % writes, no fault), for 5 s instead of 20:
 * the real server process on PostgreSQL, then every acknowledged write looked up by its marker.
 * The counts are asserted (a write acknowledged and lost is a bug at any speed); the figures
 * are not.
 */
test('pnpm load: every request answered, every acknowledged write stored once', async () => {
  const { stdout } = await promisify(execFile)('pnpm', ['-s', 'load', '--', '--seconds', '5'], {
    cwd: ROOT,
    env: process.env,
    maxBuffer: 4 * 1024 * 1024,
  });
  assert.match(stdout, /^load: 20 users × 5 s, 30 % writes, fault none$/m);
  assert.match(stdout, /^errors by kind: none$/m);
  const writes =
    /^writes: (\d+) sent, (\d+) acknowledged, (\d+) markers stored; acknowledged but missing (\d+), stored more than once (\d+), stored but never acknowledged (\d+)$/m.exec(
      stdout,
    );
  assert.ok(writes, stdout);
  const [sent, acknowledged, stored, missing, doubled, unacknowledged] = writes.slice(1).map(Number);
  assert.ok((sent as number) > 0, 'writes were sent');
  assert.equal(acknowledged, sent);
  assert.equal(stored, acknowledged);
  assert.deepEqual([missing, doubled, unacknowledged], [0, 0, 0]);
});
