import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/**
 * `pnpm bench:layers` checks every reply it times (ten expenses in each): a short run proves the
 * three paths still answer, so the figures docs/performance.md quotes can be made again. No
 * figure is asserted.
 */
test('pnpm bench:layers times the tool alone, the direct path and the SDK, and prints the differences', async () => {
  const { stdout } = await promisify(execFile)('pnpm', ['-s', 'bench:layers'], {
    cwd: ROOT,
    env: { ...process.env, LAYERS_ROUNDS: '1', LAYERS_REQUESTS: '200' },
  });
  assert.match(stdout, /^tool +\d+(\.\d)? +\(/m);
  assert.match(stdout, /^direct +\d+(\.\d)? +\(/m);
  assert.match(stdout, /^sdk +\d+(\.\d)? +\(/m);
  assert.match(stdout, /^the SDK's dispatch: -?\d+\.\d µs per read$/m);
  assert.match(stdout, /^the direct path: -?\d+\.\d µs per read$/m);
});
