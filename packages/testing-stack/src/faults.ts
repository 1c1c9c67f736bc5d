/**
 * Fixtures for fault and load runs against the server as its own process: a PostgreSQL cluster
 * of the test's own to freeze and kill, raw `tools/call` requests whose every failure is
 * visible, keep-alive writers with unique markers, and the count of what was stored. Used by
 * apps/server's fault tests and `pnpm load` (bench/load.ts).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiKeyStore } from '@mcp-auth-stack/auth';
import { EXPENSE_USER_SCOPES } from '@mcp-auth-stack/expenses';
import { freePort, run } from '@mcp-auth-stack/testing';
import pg from 'pg';

/**
 * A PostgreSQL cluster of the test's own (Debian's binaries), on its own port, so the test can
 * freeze it (SIGSTOP), kill it (SIGKILL) and start it again. PostgreSQL refuses to run as
 * root: as root it runs as the `postgres` user.
 */
export interface OwnPostgres {
  url: string;
  port: number;
  /** SIGSTOP every process of the cluster: what a network partition or a stuck failover looks like. */
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  /** SIGKILL every process of the cluster (an OOM kill, a crashed host). */
  kill(): Promise<void>;
  /** `pg_ctl stop -m fast`: clients are disconnected, the cluster shuts down cleanly. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  destroy(): Promise<void>;
}

async function postgresBin(): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql')).sort((a, b) => Number(b) - Number(a));
  if (versions.length === 0) throw new Error('PostgreSQL binaries not found under /usr/lib/postgresql');
  return `/usr/lib/postgresql/${versions[0]}/bin`;
}

export async function startOwnPostgres(): Promise<OwnPostgres> {
  const bin = await postgresBin();
  const root = await mkdtemp(join(tmpdir(), 'mcp-faults-pg-'));
  const asRoot = process.getuid?.() === 0;
  await chmod(root, 0o777);
  const as = (command: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', command, ...args]) : run(command, args);
  const dataDir = join(root, 'data');
  const port = await freePort();
  const password = randomBytes(8).toString('hex');
  const passwordFile = join(root, 'pw');
  await writeFile(passwordFile, `${password}\n`, { mode: 0o644 });
  const init = await as(`${bin}/initdb`, [
    '-D',
    dataDir,
    '-U',
    'faults',
    '--auth=scram-sha-256',
    `--pwfile=${passwordFile}`,
    '-E',
    'UTF8',
    '--no-sync',
  ]);
  if (init.code !== 0) throw new Error(`initdb failed: ${init.stderr}${init.stdout}`);
  const options = `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${root} -c fsync=off -c max_connections=60`;
  const pgCtl = (args: string[]) => as(`${bin}/pg_ctl`, ['-D', dataDir, ...args]);
  const pids = async (): Promise<number[]> => {
    const postmaster = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    return [postmaster, ...(await childrenOf(postmaster))];
  };
  const start = async () => {
    const started = await pgCtl(['-o', options, '-l', join(root, 'log'), '-w', '-t', '60', 'start']);
    if (started.code !== 0) {
      const log = await readFile(join(root, 'log'), 'utf8').catch(() => '');
      throw new Error(`pg_ctl start failed: ${started.stderr}${started.stdout}\n${log}`);
    }
  };
  await start();
  const url = `postgres://faults:${password}@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    async freeze() {
      // The postmaster first, so it forks nothing new; then every backend, listed again until
      // none is left running: one forked between the first listing and the postmaster's stop
      // (a pool opening a connection under load) would otherwise go on serving.
      const stopped = new Set<number>();
      for (let round = 0; round < 10; round++) {
        const running = (await pids()).filter((pid) => !stopped.has(pid));
        if (running.length === 0) return;
        for (const pid of running) {
          signal(pid, 'SIGSTOP');
          stopped.add(pid);
        }
      }
    },
    async thaw() {
      for (const pid of await pids()) signal(pid, 'SIGCONT');
    },
    async kill() {
      const all = await pids();
      for (const pid of all) signal(pid, 'SIGKILL');
      // Wait until every one of them is gone, so the port and the data directory are free.
      for (let i = 0; i < 200 && all.some(alive); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    },
    async stop() {
      await pgCtl(['-m', 'fast', '-w', 'stop']);
    },
    start,
    async destroy() {
      await pgCtl(['-m', 'immediate', '-w', 'stop']).catch(() => undefined);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * Sends `name` to `pid`; a process that ended between listing and signalling (a backend whose
 * client had just gone: seen once as ESRCH in `thaw`) has nothing left to stop or continue.
 */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** The processes whose parent is `pid` (from /proc: no procps needed). */
async function childrenOf(pid: number): Promise<number[]> {
  const children: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) children.push(Number(entry));
  }
  return children;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie (killed, not yet reaped by its parent) still answers signal 0.
    return !/^\S+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** API keys with the ordinary user scopes, created straight in the server's database. */
export async function createKeys(databaseUrl: string, users: string[]): Promise<Map<string, string>> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
  try {
    const store = new ApiKeyStore(pool);
    const keys = new Map<string, string>();
    for (const user of users) {
      const created = await store.create({ userId: user, name: 'faults', scopes: [...EXPENSE_USER_SCOPES] });
      keys.set(user, created.secret);
    }
    return keys;
  } finally {
    await pool.end();
  }
}

export type Outcome =
  | 'acknowledged' // HTTP 200 and the tool's result: the write is promised
  | 'tool_error' // HTTP 200 with isError: the tool ran and failed
  | 'refused' // an HTTP error status (503, 401...): the request was answered, not served
  | 'reset' // the connection broke after the request was sent: the client cannot know what happened
  | 'connection_refused'; // nothing listens any more: nothing was sent

export interface CallResult {
  outcome: Outcome;
  /** How long the call took, from sending to its outcome. */
  ms?: number;
  /** When it ended (performance.now()). */
  at?: number;
  status?: number;
  connectionClose?: boolean;
  body?: unknown;
  error?: string;
  marker: string;
}

/** One JSON-RPC `tools/call` over a given keep-alive agent (raw HTTP: every failure is visible). */
export function callTool(
  mcpUrl: string,
  agent: Agent,
  key: string,
  name: string,
  args: Record<string, unknown>,
  marker = '',
): Promise<CallResult> {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } });
  return new Promise((resolve) => {
    let sent = false;
    const req = httpRequest(
      mcpUrl,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'content-length': Buffer.byteLength(body),
        },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (text += chunk));
        response.on('error', (error) => resolve({ outcome: 'reset', error: error.message, marker }));
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          const connectionClose = /close/i.test(String(response.headers.connection ?? ''));
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
          if (status !== 200) {
            resolve({ outcome: 'refused', status, connectionClose, body: parsed, marker });
            return;
          }
          const result = (parsed as { result?: { isError?: boolean } }).result;
          resolve({
            outcome: result && !result.isError ? 'acknowledged' : 'tool_error',
            status,
            connectionClose,
            body: parsed,
            marker,
          });
        });
      },
    );
    req.on('socket', (socket) => {
      if (!socket.connecting) sent = true;
      else socket.once('connect', () => (sent = true));
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      const refusedBeforeSending = error.code === 'ECONNREFUSED' && !sent;
      resolve({ outcome: refusedBeforeSending ? 'connection_refused' : 'reset', error: error.message, marker });
    });
    req.end(body);
  });
}

export interface LoadReport {
  results: CallResult[];
  /** Markers of writes the server acknowledged. */
  acknowledged: Set<string>;
  byOutcome: Record<string, number>;
}

/**
 * `clients` keep-alive clients (each its own agent, `socketsPerClient` sockets) adding expenses
 * with unique markers as fast as they are answered, until `stop()` or until the server stops
 * taking connections.
 */
export function keepAliveWriters(options: {
  mcpUrl: string;
  keys: string[];
  clients: number;
  socketsPerClient: number;
  prefix: string;
  /**
   * Each write carries its marker as `idempotency_key`, and a write that was not acknowledged
   * is retried (same marker, same key) until it is: what a careful client does.
   */
  retryWithKey?: boolean;
}): { stop(): void; done: Promise<LoadReport>; count(outcome: Outcome): number } {
  let stopped = false;
  const results: CallResult[] = [];
  const loops: Promise<void>[] = [];
  const agents: Agent[] = [];
  for (let client = 0; client < options.clients; client++) {
    const agent = new Agent({ keepAlive: true, maxSockets: options.socketsPerClient });
    agents.push(agent);
    const key = options.keys[client % options.keys.length] as string;
    for (let lane = 0; lane < options.socketsPerClient; lane++) {
      loops.push(
        (async () => {
          for (let seq = 0; !stopped; seq++) {
            const marker = `${options.prefix}-${client}-${lane}-${seq}`;
            const started = performance.now();
            const result = await callTool(
              options.mcpUrl,
              agent,
              key,
              'add_user_expense',
              {
                date: '2025-06-01',
                amount: 1.25,
                category: 'other',
                description: marker,
                payment_method: 'cash',
                ...(options.retryWithKey ? { idempotency_key: marker } : {}),
              },
              marker,
            );
            result.at = performance.now();
            result.ms = result.at - started;
            results.push(result);
            // Nothing listens any more: this client is done.
            if (result.outcome === 'connection_refused') return;
            if (options.retryWithKey && result.outcome !== 'acknowledged') {
              seq -= 1; // the same marker again, after a pause
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
          }
        })(),
      );
    }
  }
  const done = Promise.all(loops).then(() => {
    for (const agent of agents) agent.destroy();
    const acknowledged = new Set(results.filter((r) => r.outcome === 'acknowledged').map((r) => r.marker));
    const byOutcome: Record<string, number> = {};
    for (const result of results) byOutcome[result.outcome] = (byOutcome[result.outcome] ?? 0) + 1;
    return { results, acknowledged, byOutcome };
  });
  return {
    stop: () => {
      stopped = true;
    },
    done,
    count: (outcome) => results.filter((r) => r.outcome === outcome).length,
  };
}

/** How many rows carry each marker with the prefix. */
export async function storedMarkers(databaseUrl: string, prefix: string): Promise<Map<string, number>> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ description: string; n: number }>(
      'SELECT description, count(*)::int AS n FROM expenses WHERE description LIKE $1 GROUP BY description',
      [`${prefix}-%`],
    );
    return new Map(rows.map((row) => [row.description, row.n]));
  } finally {
    await client.end();
  }
}

/** Resolves once `predicate` holds (checked every 20 ms), or rejects after `ms`. */
export async function until(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
