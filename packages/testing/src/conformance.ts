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
import { freePort } from './oauth.ts';

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
  | { client: string }
  /**
   * An authorization server scenario, against the issuer `url`. The code grant prints the
   * authorization URL for a person to open (`onOutput` sees it) and waits for the redirect to
   * `http://127.0.0.1:<port>/callback`, which must be registered for `clientId`.
   */
  | { authorization: { url: string; clientId: string; port: number; resource?: string } };

/**
 * Runs one scenario (`undefined`: every scenario of an authorization server target) and
 * returns every check it recorded.
 */
export async function runConformance(
  scenario: string | undefined,
  target: ConformanceTarget,
  options: { timeoutMs?: number; env?: Record<string, string>; onOutput?: (output: string) => void } = {},
): Promise<ConformanceRun> {
  const outputDir = await mkdtemp(join(tmpdir(), 'conformance-'));
  try {
    const args = [...targetArguments(target, options.timeoutMs ?? 60_000), '--output-dir', outputDir];
    if (scenario !== undefined) args.push('--scenario', scenario);
    const output = await runCli(args, options.env, options.onOutput);
    const directories = await resultDirectories(outputDir);
    if (directories.length === 0) throw new Error(`conformance ${scenario} recorded no result:\n${output}`);
    const run: ConformanceRun = { checks: [], clientStdout: '', clientStderr: '', output };
    for (const directory of directories) {
      const read = (name: string) => readFile(join(directory, name), 'utf8').catch(() => '');
      run.checks.push(...(JSON.parse(await read('checks.json')) as ConformanceCheck[]));
      run.clientStdout += await read('stdout.txt');
      run.clientStderr += await read('stderr.txt');
    }
    return run;
  } finally {
    await rm(outputDir, { recursive: true, force: true });
  }
}

/**
 * The suite's authorization server scenarios (metadata, and the code grant) against `issuer`:
 * a public client is registered there (RFC 7591) for the suite's loopback callback, and when the
 * suite prints the authorization URL, `signIn(url, callbackPrefix)` plays the person (a browser
 * that signs in and consents until it reaches the callback).
 */
export async function checkAuthorizationServer(
  issuer: string,
  options: { resource: string; signIn: (authorizationUrl: string, callbackPrefix: string) => Promise<void> },
): Promise<ConformanceRun> {
  const port = await freePort();
  const callbackPrefix = `http://127.0.0.1:${port}/callback`;
  const registration = await fetch(`${issuer}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'MCP conformance suite',
      redirect_uris: [callbackPrefix],
      token_endpoint_auth_method: 'none',
    }),
  });
  if (registration.status !== 201) throw new Error(`registration: ${registration.status} ${await registration.text()}`);
  const { client_id: clientId } = (await registration.json()) as { client_id: string };
  const authorizationUrl = new RegExp(`^${issuer}/authorize\\?\\S+$`, 'm');
  let signedIn: Promise<void> | undefined;
  const run = await runConformance(
    undefined,
    { authorization: { url: issuer, clientId, port, resource: options.resource } },
    {
      onOutput: (output) => {
        const url = authorizationUrl.exec(output)?.[0];
        if (url && !signedIn) signedIn = options.signIn(url, callbackPrefix);
      },
    },
  );
  await signedIn;
  return run;
}

function targetArguments(target: ConformanceTarget, timeoutMs: number): string[] {
  if ('server' in target) return ['server', '--url', target.server];
  if ('client' in target) return ['client', '--command', target.client, '--timeout', String(timeoutMs)];
  const { url, clientId, port, resource } = target.authorization;
  return [
    'authorization',
    '--url',
    url,
    '--client-id',
    clientId,
    '--port',
    String(port),
    ...(resource ? ['--resource', resource] : []),
  ];
}

/** `id STATUS` of every check, sorted. */
export function summary(run: ConformanceRun): string[] {
  return run.checks.map((check) => `${check.id} ${check.status}`).sort();
}

/** What an authorization server that passes both of the suite's scenarios, CIMD included, records. */
export const AUTHORIZATION_SERVER_PASSES: readonly string[] = [
  'authorization-code-grant SUCCESS',
  'authorization-server-metadata SUCCESS',
  'authorization-server-metadata-cimd SUCCESS',
];

/** `id STATUS` of every check that failed or warned (INFO and SKIPPED only inform). */
export function unsuccessful(run: ConformanceRun): string[] {
  return run.checks
    .filter((check) => check.status === 'FAILURE' || check.status === 'WARNING')
    .map((check) => `${check.id} ${check.status}`);
}

function runCli(
  args: string[],
  env: Record<string, string> = {},
  onOutput?: (output: string) => void,
): Promise<string> {
  return new Promise((resolve, reject) => {
    // The suite exits 1 when a check fails; the checks say which, so the code is not the result.
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const collect = (chunk: Buffer) => {
      output += chunk;
      onOutput?.(output);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', () => resolve(output));
  });
}

/** Each scenario's result folder (`<scenario>-<time>`, nested for names like `auth/…`). */
async function resultDirectories(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile() && entry.name === 'checks.json').map((entry) => entry.parentPath);
}
