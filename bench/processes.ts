/**
 * The processes `pnpm bench` runs and how it reads them: servers started and stopped (killed
 * when the bench exits), their cold start, ports (BENCH_PORT_BASE), the memory of a process
 * tree, and the stand-in OIDC issuer whose RS256 tokens keycloak mode and the reference verify.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { type AddressInfo, createServer } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { settle } from './machine.ts';
import { expensesToolListReply } from './replies.ts';

const PORT_BASE = process.env.BENCH_PORT_BASE ? Number(process.env.BENCH_PORT_BASE) : undefined;
if (PORT_BASE !== undefined && !(Number.isInteger(PORT_BASE) && PORT_BASE > 0 && PORT_BASE < 65_000)) {
  throw new Error(`BENCH_PORT_BASE must be a port number, got ${process.env.BENCH_PORT_BASE}`);
}

export const mcpHeaders = (key: string) => ({
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': '2025-11-25',
  authorization: `Bearer ${key}`,
});

export interface Started {
  process: ChildProcess;
  url: string;
  /** Resident memory of the server (all its processes) one second after it answered. */
  idleRssMb: number;
  stop(): Promise<void>;
}

/** Every server the bench started: killed when the bench exits, even on a crash. */
const spawned = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of spawned) child.kill('SIGKILL');
});

export function startProcess(
  args: string[],
  env: Record<string, string>,
  options: { command?: string; cwd?: string } = {},
): Promise<Started> {
  return new Promise((resolve, reject) => {
    const child = spawn(options.command ?? process.execPath, args, {
      env: { ...process.env, ...env },
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    spawned.add(child);
    child.once('exit', () => spawned.delete(child));
    let resolved = false;
    const started = async (url: string) => {
      if (resolved) return;
      resolved = true;
      await new Promise((r) => setTimeout(r, 1_000));
      resolve({
        process: child,
        url,
        idleRssMb: treeMemoryMb(child.pid as number, 'VmRSS'),
        stop: () => stopChild(child),
      });
    };
    let output = '';
    child.stdout?.on('data', (chunk) => {
      output += chunk;
      const match = /"msg":"listening","url":"([^"]+)"/.exec(output);
      if (match?.[1]) void started(match[1]);
    });
    if (env.PORT && env.PORT !== '0') {
      const url = `http://127.0.0.1:${env.PORT}`;
      const poll = async () => {
        for (let i = 0; i < 600 && !resolved; i++) {
          if (
            await fetch(`${url}/health`).then(
              (r) => r.ok,
              () => false,
            )
          )
            return started(url);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      void poll();
    }
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${output}`)));
  });
}

/**
 * Milliseconds from spawn to the first authenticated `tools/list` answered with 200, polling
 * every 5 ms; the process is then stopped. The spawn waits for a quiet machine first (`settle`:
 * what the previous rows left running stays out of a figure of a fraction of a second), and
 * `settled` says how long that took and how idle the cores were.
 */
export async function coldStart(
  args: string[],
  env: Record<string, string>,
  port: number,
  token: string,
  cwd?: string,
): Promise<{ ms: number; settled: { waitedMs: number; idlePercent: number } }> {
  const settled = await settle();
  // A Node entry (.ts, .mjs, .cjs) runs under this Node; anything else (uvicorn) is a command.
  const [command, ...rest] = /\.(ts|mjs|cjs)$/.test(args.at(-1) ?? '') ? [process.execPath, ...args] : args;
  const began = performance.now();
  const child = spawn(command as string, rest, {
    env: { ...process.env, ...env },
    cwd,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  spawned.add(child);
  child.once('exit', () => spawned.delete(child));
  try {
    const answeredAt = await firstToolList(child, port, token, began, args.join(' '));
    return { ms: Math.round(answeredAt - began), settled };
  } finally {
    await stopChild(child);
  }
}

/** SIGTERM to a child, settled once it has exited (at once when it already has). */
export function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) return done();
    child.once('exit', () => done());
    child.kill('SIGTERM');
  });
}

/**
 * Polls a starting server every 5 ms with an authenticated `tools/list` until it answers 200,
 * and returns when (`performance.now()`). The first 200 must be the tool list
 * (bench/replies.ts): a start counts once it answers rightly. Throws if the process exits, or
 * after 60 s from `began`.
 */
export async function firstToolList(
  child: ChildProcess,
  port: number,
  token: string,
  began: number,
  name: string,
): Promise<number> {
  const request = {
    method: 'POST',
    headers: mcpHeaders(token),
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  };
  let last = '';
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited during its cold start`);
    const response = await fetch(`http://127.0.0.1:${port}/mcp`, request).catch((error: Error) => error);
    last = response instanceof Error ? response.message : String(response.status);
    if (!(response instanceof Error) && response.status === 200) {
      const answeredAt = performance.now();
      const problem = expensesToolListReply.problem(200, await response.text());
      if (problem) throw new Error(`${name}: its first tools/list is not ${expensesToolListReply.what}: ${problem}`);
      return answeredAt;
    }
    if (!(response instanceof Error)) await response.body?.cancel();
    if (performance.now() - began > 60_000) throw new Error(`${name}: no 200 within 60 s (last: ${last})`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

let nextPort = PORT_BASE;

/** The next port: from BENCH_PORT_BASE up (skipping ports in use), else one the OS picks. */
export async function benchPort(): Promise<number> {
  if (nextPort === undefined) return freePort(0);
  for (;;) {
    const port = nextPort++;
    if (port > 65_535) throw new Error('BENCH_PORT_BASE: ran out of ports');
    const free = await freePort(port).then(
      () => true,
      () => false,
    );
    if (free) return port;
  }
}

function freePort(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A /proc/<pid>/status figure summed over the process and its descendants (uvicorn's workers):
 * VmHWM, the most resident memory each has had since it started, or VmRSS, what it has now.
 * Summed peaks overstate a tree a little (peaks need not coincide; shared pages count twice).
 */
export function treeMemoryMb(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  let kb = 0;
  const visit = (id: number) => {
    try {
      const status = readFileSync(`/proc/${id}/status`, 'utf8');
      kb += Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
      const children = readFileSync(`/proc/${id}/task/${id}/children`, 'utf8').trim();
      for (const child of children ? children.split(' ') : []) visit(Number(child));
    } catch {
      // The process ended in between.
    }
  };
  visit(pid);
  return Math.round(kb / 1024);
}

/** A stand-in OIDC issuer on loopback: discovery document, JWKS, and RS256 tokens it signs. */
export async function startTokenIssuer(port: number) {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'bench-key', alg: 'RS256', use: 'sig' };
  const server = createHttpServer((request, response) => {
    response.setHeader('content-type', 'application/json');
    if (request.url?.endsWith('/protocol/openid-connect/certs')) {
      response.end(JSON.stringify({ keys: [jwk] }));
    } else if (request.url?.endsWith('/.well-known/openid-configuration')) {
      response.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/protocol/openid-connect/certs` }));
    } else {
      response.statusCode = 404;
      response.end('{}');
    }
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/realms/bench`;
  return {
    url,
    sign: (claims: Record<string, unknown>) =>
      // As Keycloak 26 issues access tokens: payload typ Bearer, at most an hour's lifetime.
      new SignJWT({ typ: 'Bearer', ...claims })
        .setProtectedHeader({ alg: 'RS256', kid: 'bench-key', typ: 'JWT' })
        .setIssuer(url)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(privateKey),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
