/**
 * The Keycloak process as startKeycloak (start-keycloak.ts) runs it: whether something already
 * answers on its ports, waiting for readiness while reporting progress, its log, and stopping
 * its process group.
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { REALM_NAME } from './realm.ts';

export type KeycloakPhase =
  | 'checking'
  | 'distribution'
  | 'java'
  | 'building'
  | 'starting'
  | 'importing'
  | 'waiting'
  | 'ready'
  | 'reused';

const LOG_LINES_KEPT = 80;
const STOP_GRACE_MS = 20_000;
const PROGRESS_INTERVAL_MS = 5_000;

/**
 * `realm` when a Keycloak serving the realm answers, a description when something else holds a
 * port, else undefined. With `alsoIpv6Loopback` (a public URL on `localhost` served on
 * 127.0.0.1), a program on [::1] at the HTTP port counts too: where `localhost` resolves to ::1
 * first, browsers and clients would reach it instead.
 */
export async function probeExisting(
  host: string,
  httpPort: number,
  managementPort: number,
  alsoIpv6Loopback = false,
): Promise<string | undefined> {
  if (await portAnswers(host, httpPort)) {
    try {
      const response = await fetch(`http://${host}:${httpPort}/realms/${REALM_NAME}`, {
        signal: AbortSignal.timeout(3_000),
      });
      const body = (await response.json()) as { realm?: string };
      if (response.ok && body.realm === REALM_NAME) return 'realm';
    } catch {}
    return `Port ${httpPort} on ${host} is in use by a program that does not serve the Keycloak realm ${REALM_NAME}`;
  }
  if (await portAnswers(host, managementPort)) return `Management port ${managementPort} on ${host} is in use`;
  if (alsoIpv6Loopback && (await portAnswers('::1', httpPort))) {
    return `Port ${httpPort} on ::1 is in use, and localhost may reach that program first`;
  }
  return undefined;
}

function portAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(2_000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function waitUntilReady(
  child: ChildProcess,
  readyUrl: string,
  log: LogCapture,
  timeoutMs: number,
  report: (phase: KeycloakPhase, message: string) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let nextProgress = Date.now() + PROGRESS_INTERVAL_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `Keycloak exited (${child.exitCode ?? child.signalCode}) before it was ready. Its last output:\n${log.tail()}`,
      );
    }
    try {
      const response = await fetch(readyUrl, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return;
    } catch {}
    if (Date.now() >= deadline) {
      throw new Error(
        `Keycloak was not ready within ${timeoutMs / 1000} s (${readyUrl}). Its last output:\n${log.tail()}`,
      );
    }
    if (Date.now() >= nextProgress) {
      report('waiting', `waiting for ${readyUrl}`);
      nextProgress = Date.now() + PROGRESS_INTERVAL_MS;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** SIGTERM to kc.sh and the JVM (Keycloak shuts down in 1-3 s), then SIGKILL if it hangs. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  killGroup(child, 'SIGTERM');
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(true), STOP_GRACE_MS).unref()),
  ]);
  if (timedOut) {
    killGroup(child, 'SIGKILL');
    await exited;
  }
}

export function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (!child.pid) return;
  try {
    // Negative pid: the whole process group this module created for kc.sh and its JVM.
    process.kill(-child.pid, signal);
  } catch {}
}

/** Keycloak's output goes to a log file; the last lines stay in memory and notable ones become progress events. */
export class LogCapture {
  private readonly lines: string[] = [];
  private readonly file: WriteStream;
  private readonly report: (phase: KeycloakPhase, message: string) => void;

  constructor(path: string, report: (phase: KeycloakPhase, message: string) => void) {
    this.file = createWriteStream(path, { flags: 'a' });
    this.report = report;
  }

  attach(child: ChildProcess): void {
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => this.add(line));
    }
  }

  tail(): string {
    return this.lines.join('\n');
  }

  close(): void {
    this.file.end();
  }

  private add(line: string): void {
    this.file.write(`${line}\n`);
    this.lines.push(line);
    if (this.lines.length > LOG_LINES_KEPT) this.lines.shift();
    const progress = notableLine(line);
    if (progress) this.report(progress.phase, progress.message);
  }
}

function notableLine(line: string): { phase: KeycloakPhase; message: string } | undefined {
  if (line.includes('Updating the configuration and installing your custom providers')) {
    return { phase: 'building', message: "running Keycloak's build step (once per cache, 20-40 s)" };
  }
  if (line.includes('Quarkus augmentation completed')) return { phase: 'building', message: 'build step done' };
  if (line.includes('Running the server in development mode')) return { phase: 'starting', message: 'server starting' };
  if (line.includes('Initializing database schema')) return { phase: 'starting', message: 'creating the database' };
  const imported = /Realm '([^']+)' imported/.exec(line);
  if (imported) return { phase: 'importing', message: `realm ${imported[1]} imported` };
  const skipped = /Realm '([^']+)' already exists|Not importing realm (\S+)/.exec(line);
  if (skipped) {
    const realm = skipped[1] ?? skipped[2];
    return {
      phase: 'importing',
      message: `realm ${realm} already in the database; the realm file was not re-imported`,
    };
  }
  if (line.includes(' ERROR ')) return { phase: 'starting', message: line.replace(/^\S+ \S+ /, '') };
  return undefined;
}
