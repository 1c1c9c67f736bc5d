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
  /** The suite's exit code (1 when a check failed), `null` when it was stopped. */
  exitCode: number | null;
  /** It ran past its deadline and was stopped (the checks it wrote are still read). */
  timedOut: boolean;
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

export interface ConformanceOptions {
  /** How long a client under test may run (the suite's `--timeout`); default 60 s. */
  timeoutMs?: number;
  /** How long the whole run may take before it is stopped; default the client's time plus 60 s. */
  deadlineMs?: number;
  /** Added to the few variables the suite (and the client it starts) get from this process. */
  env?: Record<string, string>;
  /** Called with all the output so far, each time more arrives. */
  onOutput?: (output: string) => void;
  /** Stops the run. */
  signal?: AbortSignal;
}

/**
 * Runs one scenario (`undefined`: every scenario of an authorization server target) and
 * returns every check it recorded.
 */
export async function runConformance(
  scenario: string | undefined,
  target: ConformanceTarget,
  options: ConformanceOptions = {},
): Promise<ConformanceRun> {
  const outputDir = await mkdtemp(join(tmpdir(), 'conformance-'));
  try {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const args = [...targetArguments(target, timeoutMs), '--output-dir', outputDir];
    if (scenario !== undefined) args.push('--scenario', scenario);
    const ran = await runCli(args, { ...options, deadlineMs: options.deadlineMs ?? timeoutMs + 60_000 });
    const directories = await resultDirectories(outputDir);
    if (directories.length === 0) throw new Error(`conformance ${scenario} recorded no result:\n${ran.output}`);
    const run: ConformanceRun = { checks: [], clientStdout: '', clientStderr: '', ...ran };
    for (const directory of directories) {
      const read = (name: string) => readFile(join(directory, name), 'utf8').catch(() => '');
      try {
        run.checks.push(...(JSON.parse(await read('checks.json')) as ConformanceCheck[]));
      } catch (error) {
        throw new Error(`conformance ${scenario}: ${directory}/checks.json unreadable (${error}):\n${ran.output}`);
      }
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
  const metadata = await metadataOf(issuer);
  const registration = await fetch(metadata.registration_endpoint, {
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
  // A whole line of output: the URL the suite prints for the person to open.
  const printed = new RegExp(`^(${escapeRegExp(metadata.authorization_endpoint)}\\?\\S+)\\n`, 'm');
  const stop = new AbortController();
  let signedIn: Promise<void> | undefined;
  const run = await runConformance(
    undefined,
    { authorization: { url: issuer, clientId, port, resource: options.resource } },
    {
      signal: stop.signal,
      deadlineMs: 120_000,
      onOutput: (output) => {
        const url = printed.exec(output)?.[1];
        if (!url || signedIn) return;
        // A sign-in that fails stops the suite at once, not after its 5-minute wait.
        signedIn = options.signIn(url, callbackPrefix).catch((error: unknown) => {
          stop.abort();
          throw error;
        });
      },
    },
  );
  if (!signedIn) throw new Error(`the suite printed no URL of ${metadata.authorization_endpoint}:\n${run.output}`);
  await signedIn;
  return run;
}

/** The metadata as the suite finds it: RFC 8414 first, then OpenID Connect discovery. */
async function metadataOf(issuer: string): Promise<{ authorization_endpoint: string; registration_endpoint: string }> {
  const url = new URL(issuer);
  const path = url.pathname.replace(/\/$/, '');
  for (const candidate of [
    `${url.origin}/.well-known/oauth-authorization-server${path}`,
    `${url.origin}${path}/.well-known/openid-configuration`,
  ]) {
    const answer = await fetch(candidate);
    if (answer.ok) return (await answer.json()) as { authorization_endpoint: string; registration_endpoint: string };
  }
  throw new Error(`no authorization server metadata for ${issuer}`);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
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

/** What the suite, and the client it starts, see of this process's environment. */
const PASSED_ON = ['PATH', 'HOME', 'TMPDIR', 'LANG'];

function runCli(
  args: string[],
  options: Pick<ConformanceOptions, 'env' | 'onOutput' | 'signal'> & { deadlineMs: number },
): Promise<{ output: string; exitCode: number | null; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    // Nothing else: no tracing, model or MCP settings of the developer's shell reach a client.
    const env: Record<string, string> = { NO_COLOR: '1' };
    for (const name of PASSED_ON) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let timedOut = false;
    const collect = (chunk: Buffer) => {
      output += chunk;
      options.onOutput?.(output);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.deadlineMs);
    const abort = () => child.kill('SIGKILL');
    options.signal?.addEventListener('abort', abort, { once: true });
    child.on('error', reject);
    // The suite exits 1 when a check fails; the checks say which, so the code is not the verdict.
    child.on('close', (exitCode) => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', abort);
      resolve({ output, exitCode, timedOut });
    });
  });
}

/** Each scenario's result folder (`<scenario>-<time>`, nested for names like `auth/…`). */
async function resultDirectories(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile() && entry.name === 'checks.json').map((entry) => entry.parentPath);
}
