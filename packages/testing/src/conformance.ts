/**
 * The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in
 * package.json) as a third-party judge: its scenarios start their own MCP and authorization
 * servers to test a client, or act as a client to test a server, and record what they checked.
 * This runs its command line as a user would and reads those records.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const CLI = join(
  dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/conformance/package.json')),
  'dist/index.js',
);

export interface ConformanceCheck {
  id: string;
  name: string;
  description: string;
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'INFO' | 'SKIPPED';
  errorMessage?: string;
  details?: unknown;
}

export interface ConformanceRun {
  checks: ConformanceCheck[];
  /** What the client under test printed (client scenarios only). */
  clientStdout: string;
  clientStderr: string;
  /** The suite's own output, for a failing test's message. */
  output: string;
}

export type ConformanceTarget =
  /** A server scenario, against the MCP endpoint at `url`. */
  | { server: string }
  /** A client scenario: the suite appends its server's URL to `command` and runs it. */
  | { client: string };

/** Runs one scenario and returns every check it recorded. */
export async function runConformance(
  scenario: string,
  target: ConformanceTarget,
  options: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<ConformanceRun> {
  const outputDir = await mkdtemp(join(tmpdir(), 'conformance-'));
  try {
    const args =
      'server' in target
        ? ['server', '--url', target.server]
        : ['client', '--command', target.client, '--timeout', String(options.timeoutMs ?? 60_000)];
    const output = await runCli([...args, '--scenario', scenario, '--output-dir', outputDir], options.env);
    const directory = await resultDirectory(outputDir);
    if (!directory) throw new Error(`conformance ${scenario} recorded no result:\n${output}`);
    const read = (name: string) => readFile(join(directory, name), 'utf8').catch(() => '');
    return {
      checks: JSON.parse(await read('checks.json')) as ConformanceCheck[],
      clientStdout: await read('stdout.txt'),
      clientStderr: await read('stderr.txt'),
      output,
    };
  } finally {
    await rm(outputDir, { recursive: true, force: true });
  }
}

/** `id STATUS` of every check that failed or warned (INFO and SKIPPED only inform). */
export function unsuccessful(run: ConformanceRun): string[] {
  return run.checks
    .filter((check) => check.status === 'FAILURE' || check.status === 'WARNING')
    .map((check) => `${check.id} ${check.status}`);
}

function runCli(args: string[], env: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    // The suite exits 1 when a check fails; the checks say which, so the code is not the result.
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', () => resolve(output));
  });
}

/** The scenario's result folder (`<scenario>-<time>`, nested for names like `auth/…`). */
async function resultDirectory(root: string): Promise<string | undefined> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  const checks = entries.find((entry) => entry.isFile() && entry.name === 'checks.json');
  return checks ? checks.parentPath : undefined;
}
