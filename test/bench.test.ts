import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** Every row `pnpm bench` prints, this server's, the references' and the floors'. */
const ROWS = [
  'A  bare Hono JSON route',
  'B  SDK stateless, server per request: get_user_expenses',
  'C  this server (key mode): get_user_expenses',
  'C  this server (key mode): add_user_expense',
  'C0 this server (none mode): get_user_expenses',
  'CK this server (keycloak mode, RS256): tools/list',
  'CK this server (keycloak mode, RS256): get_user_expenses',
  'CK this server (keycloak mode, RS256): add_user_expense',
  'CK from the TypeScript sources: get_user_expenses',
  'CK bundle without the image flags: get_user_expenses',
  'R1 FastMCP reference, 1 process: tools/list',
  'R1 FastMCP reference, 1 process: get_user_expenses',
  'R1 FastMCP reference, 1 process: add_user_expense',
  'R2 FastMCP reference, 2 workers: tools/list',
  'R2 FastMCP reference, 2 workers: get_user_expenses',
  'R2 FastMCP reference, 2 workers: add_user_expense',
  'RT FastMCP reference as shipped (text only): get_user_expenses',
  'D  bare Hono + same SQL, same pool: read',
  'D  bare Hono + same SQL, same pool: write',
  "D′ the same floor with the image's Node flags: read",
  'C  soak window 1: get_user_expenses',
];

/**
 * `pnpm bench` as the README names it, with short windows: every row runs, its replies are the
 * ones the row claims to measure (bench/replies.ts counts any other as an error), and the
 * figures and ratios the README and docs/performance.md quote are printed. The Python
 * reference is installed from PyPI into its virtual environment on the first run. No figure
 * is asserted: timings are not tests.
 */
test('pnpm bench runs every row with no error and prints the targets and the comparison', async () => {
  const { stdout } = await promisify(execFile)('pnpm', ['-s', 'bench'], {
    cwd: ROOT,
    env: {
      ...process.env,
      BENCH_DURATION: '1',
      BENCH_WARMUP: '0',
      BENCH_PAIRED_DURATION: '1',
      BENCH_ROUNDS: '1',
      BENCH_SOAK_WINDOWS: '1',
      BENCH_COLD_STARTS: '1',
    },
    maxBuffer: 16 * 1024 * 1024,
  });
  const table = new Map(
    stdout
      .split('\n')
      .filter((line) => /^\| [A-Z]/.test(line) && !line.startsWith('| row'))
      .map((line) => line.split('|').map((cell) => cell.trim()))
      .map(([, name, rps, , , errors]) => [name as string, { rps: Number(rps), errors: Number(errors) }]),
  );
  assert.deepEqual([...table.keys()].sort(), [...ROWS].sort());
  for (const [name, row] of table) {
    assert.ok(row.rps > 0, `${name}: ${row.rps} requests/s`);
    assert.equal(row.errors, 0, `${name}: errors or replies that were not the row's`);
  }
  for (const line of [
    /^this server's RSS: idle ≤ \d+ MB \(target ≤ 80: (met|NOT met)\), peak \d+ MB \(target ≤ 120: (met|NOT met)\)$/m,
    /^cold start \(spawn → first authenticated tools\/list, migrations on an empty database\): \d+ ms, median \d+/m,
    // Each round's ratio, marked when other guests took its time (a noisy machine), then the median.
    /^paired rounds, CK keycloak mode read \/ D read = \d+\.\d\d(?: \[\d+ % stolen\])?(?:, \d+\.\d\d(?: \[\d+ % stolen\])?)*; median \d+\.\d\d/m,
    /^paired rounds, C {2}key mode read \/ D′ read/m,
    /^Reference: FastMCP \(bench\/reference\/server\.py\), Python 3\.\d+\.\d+; .*fastmcp==\d/m,
    /^this server \(keycloak mode\) ÷ reference, 1 process: {2}tools\/list \d+\.\d\d, get_user_expenses \d+\.\d\d/m,
    /^cold start: this server median \d+ ms, reference median \d+ ms/m,
  ]) {
    assert.match(stdout, line);
  }
});
