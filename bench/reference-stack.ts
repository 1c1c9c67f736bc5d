/**
 * The reference stack of `pnpm bench`: the talk's FastMCP server (bench/reference/server.py) in
 * a virtual environment the bench makes once and fills from PyPI, run under uvicorn.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Started, startProcess } from './processes.ts';

// The reference stack: FastMCP in a virtual environment the bench makes and fills from PyPI.
export const REFERENCE_DIR = fileURLToPath(new URL('./reference/', import.meta.url));
const REFERENCE_REQUIREMENTS = `${REFERENCE_DIR}requirements.txt`;

export interface ReferenceEnvironment {
  uvicorn: string;
  /** `fastmcp==…, mcp==…, …` as installed, and the Python version. */
  versions: string;
}

/**
 * Makes (once per requirements file) a virtual environment with the pinned reference stack.
 * Without Python or its venv module the reference rows are skipped, loudly; a failed install
 * (PyPI unreachable, a bad pin) fails the bench.
 */
export async function referenceEnvironment(): Promise<ReferenceEnvironment | undefined> {
  const requirements = readFileSync(REFERENCE_REQUIREMENTS, 'utf8');
  const digest = createHash('sha256').update(requirements).digest('hex').slice(0, 12);
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  const venv = process.env.BENCH_REFERENCE_VENV ?? join(cache, 'mcp-auth-stack', `bench-reference-${digest}`);
  const python = join(venv, 'bin', 'python');
  const uvicorn = join(venv, 'bin', 'uvicorn');
  const marker = join(venv, '.installed');
  if (!existsSync(marker)) {
    const python3 = process.env.BENCH_PYTHON ?? 'python3';
    const made = spawnSync(python3, ['-m', 'venv', '--clear', venv], { encoding: 'utf8' });
    if (made.error || made.status !== 0) {
      const line = '!'.repeat(100);
      process.stderr.write(
        `\n${line}\n!! NO REFERENCE ROWS: could not make a Python virtual environment with ${python3} (${made.error?.message ?? made.stderr.trim()}).\n!! Install python3 and python3-venv (or set BENCH_PYTHON) for the FastMCP rows and ratios.\n${line}\n\n`,
      );
      return undefined;
    }
    process.stderr.write(`installing the reference stack from PyPI into ${venv}\n`);
    const installed = spawnSync(
      python,
      ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', REFERENCE_REQUIREMENTS],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'inherit', 'inherit'],
      },
    );
    if (installed.status !== 0)
      throw new Error(`pip install -r ${REFERENCE_REQUIREMENTS} failed (exit ${installed.status})`);
    writeFileSync(marker, requirements);
  }
  const freeze = spawnSync(python, ['-m', 'pip', 'freeze', '--disable-pip-version-check'], { encoding: 'utf8' }).stdout;
  const wanted = ['fastmcp', 'mcp', 'asyncpg', 'uvicorn', 'uvloop', 'starlette', 'pydantic', 'pyjwt', 'authlib'];
  const pinned = freeze
    .split('\n')
    .filter((line) => wanted.includes(line.split('==')[0]?.toLowerCase() ?? ''))
    .join(', ');
  const pythonVersion = spawnSync(python, ['--version'], { encoding: 'utf8' }).stdout.trim();
  return { uvicorn, versions: `${pythonVersion}; ${pinned}` };
}

export const uvicornArgs = (workers: number, port: number) => [
  'server:app',
  '--host',
  '127.0.0.1',
  '--port',
  String(port),
  '--workers',
  String(workers),
  '--loop',
  'uvloop',
  '--http',
  'httptools',
  '--log-level',
  'warning',
  '--no-access-log',
];

export function startReference(
  reference: ReferenceEnvironment,
  workers: number,
  port: number,
  env: Record<string, string>,
): Promise<Started> {
  return startProcess(
    uvicornArgs(workers, port),
    { ...env, PORT: String(port) },
    {
      command: reference.uvicorn,
      cwd: REFERENCE_DIR,
    },
  );
}
