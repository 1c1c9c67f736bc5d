/**
 * `node bench/memory.ts`: where this server's memory and start-up time go, as the image runs it
 * (the bundle, keycloak mode, PostgreSQL by URL). It prints figures and asserts nothing; record
 * them in docs/performance.md. Needs PostgreSQL: TEST_DATABASE_URL.
 *
 *   node bench/memory.ts flags     paired rounds of V8/Node flag sets under the bench's load
 *   node bench/memory.ts soak      long-lived processes, window after window, alternating
 *   node bench/memory.ts cold      cold start, phase by phase (each on a quiet machine; the
 *                                  first 200 must be the tool list, as in `pnpm bench`)
 *   node bench/memory.ts idle      idle memory, `process.memoryUsage()` and V8's heap spaces
 *
 * Variables: MEMORY_ROUNDS (3), MEMORY_DURATION (8 s per window), MEMORY_WARMUP (4 s),
 * MEMORY_VARIANTS (comma-separated names of the flag sets below; default all, for `idle`
 * `default,sources`, for `soak` `semi2-old256,floor-semi2-old256`), MEMORY_WINDOWS (`soak`: 10),
 * MEMORY_CONNECTIONS (32), MEMORY_LOG_LEVEL (`info`, the image's: an access line per request),
 * MEMORY_REQUEST (`read`: get_user_expenses, the default; `list`:
 * tools/list), MEMORY_COLD_STARTS (5), MEMORY_COLD_DATABASE (`current`: restarts on
 * an up-to-date schema instead of first starts on empty databases), MEMORY_COLD_ARGS (Node flags
 * for those starts: the image's, `--cpu-prof`; a `main.cjs` is warmed under them first, as the
 * image's build does), MEMORY_MAIN (a bundle built elsewhere; several, comma-separated, for
 * `cold` to alternate),
 * MEMORY_PROFILE_DIR (where the `cpu-profile` variants write; they run only when named).
 * The `floor` variants run the bench's database floor D (bench/servers.ts) under the same load
 * (its GET /read), so this server's per-request figures have the floor's beside them; the
 * `floor-post` variants run DP, the same floor behind this server's own request (a POST of the
 * JSON-RPC call with the client's headers) and a JSON-RPC reply.
 *
 * Each server runs with a probe (bench/memory-probe.mjs, `--import`) that reports its memory,
 * when it first opened a socket (so a cold start splits into Node's start, module load, database
 * and migrations, and the rest), and since the last report its CPU time, the main thread's time
 * in collections and the bytes allocated on the V8 heap: `flags` prints them per request,
 * figures that move far less with the machine's load than requests/s do. Beside them,
 * the rest of a request's cost on the shared cores (PostgreSQL's processes, the load generator,
 * the whole machine) and the window's idle and stolen shares (bench/machine.ts).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_KEYS_NAMESPACE, apiKeyMigrations } from '@mcp-auth-stack/auth';
import { migrate, openDatabase } from '@mcp-auth-stack/database';
import { EXPENSES_NAMESPACE, ExpenseRepository, expensesMigrations } from '@mcp-auth-stack/expenses';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import autocannon from 'autocannon';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { machineCpu, machineWindow, settle } from './machine.ts';
import { median } from './median.ts';
import { firstToolList, stopChild } from './processes.ts';
import { checkedReplies, expensesToolListReply, floorListReply, toolReadReply } from './replies.ts';

const mode = process.argv[2] ?? 'flags';
const ROUNDS = Number(process.env.MEMORY_ROUNDS ?? 3);
const DURATION_S = Number(process.env.MEMORY_DURATION ?? 8);
const WARMUP_S = Number(process.env.MEMORY_WARMUP ?? 4);
const CONNECTIONS = Number(process.env.MEMORY_CONNECTIONS ?? 32);
const COLD_STARTS = Number(process.env.MEMORY_COLD_STARTS ?? 5);
const WINDOWS = Number(process.env.MEMORY_WINDOWS ?? 10);
// MEMORY_COLD_ARGS: Node flags for the cold starts, e.g. the image's, or `--cpu-prof`.
const COLD_ARGS = process.env.MEMORY_COLD_ARGS?.split(' ').filter(Boolean) ?? [];
const USER_ID = '0b7d5a34-6c3e-4f51-9a0e-5d0c2f9e7b11';
const BUILD = fileURLToPath(new URL('../apps/server/build.ts', import.meta.url));
const SOURCES_MAIN = fileURLToPath(new URL('../apps/server/src/main.ts', import.meta.url));
const SERVERS = fileURLToPath(new URL('./servers.ts', import.meta.url));
const WORK = join(tmpdir(), `mcp-memory-${process.pid}`);
// MEMORY_MAIN: another bundle to measure (another tree's build.ts --out-dir), e.g. before a change.
// Several, comma-separated: `cold` alternates between them start by start (a before/after pair
// under the same moments of a noisy machine); the other modes take the first.
const MAINS = (process.env.MEMORY_MAIN ?? join(WORK, 'main.cjs')).split(',');
const MAIN = MAINS[0] as string;
/** Loaded into every measured server with `--import`: see bench/memory-probe.mjs. */
const PROBE = fileURLToPath(new URL('./memory-probe.mjs', import.meta.url));

/** Flag sets: name → Node arguments before the entry, and extra environment. */
const VARIANTS: Record<
  string,
  {
    args: string[];
    env?: Record<string, string>;
    entry?: string;
    /** Not this server: the floor D, loaded with GET /read. */
    floor?: true;
  }
> = {
  default: { args: [] },
  semi2: { args: ['--max-semi-space-size=2'] },
  semi1: { args: ['--max-semi-space-size=1'] },
  'semi1-old64': { args: ['--max-semi-space-size=1', '--max-old-space-size=64'] },
  'semi1-single-gc': { args: ['--max-semi-space-size=1', '--single-threaded-gc'] },
  'semi1-pool1': { args: ['--max-semi-space-size=1', '--v8-pool-size=1'], env: { UV_THREADPOOL_SIZE: '1' } },
  'semi1-dbpool4': { args: ['--max-semi-space-size=1'], env: { DATABASE_POOL_SIZE: '4' } },
  'semi1-arena2': { args: ['--max-semi-space-size=1'], env: { MALLOC_ARENA_MAX: '2' } },
  'semi2-arena2': { args: ['--max-semi-space-size=2'], env: { MALLOC_ARENA_MAX: '2' } },
  'semi1-optsize': { args: ['--max-semi-space-size=1', '--optimize-for-size'] },
  optsize: { args: ['--optimize-for-size'] },
  'semi2-optsize': { args: ['--max-semi-space-size=2', '--optimize-for-size'] },
  'semi2-old96': { args: ['--max-semi-space-size=2', '--max-old-space-size=96'] },
  'semi2-old128': { args: ['--max-semi-space-size=2', '--max-old-space-size=128'] },
  old256: { args: ['--max-old-space-size=256'] },
  'semi4-old256': { args: ['--max-semi-space-size=4', '--max-old-space-size=256'] },
  'semi8-old256': { args: ['--max-semi-space-size=8', '--max-old-space-size=256'] },
  'semi4-old128': { args: ['--max-semi-space-size=4', '--max-old-space-size=128'] },
  'semi8-old128': { args: ['--max-semi-space-size=8', '--max-old-space-size=128'] },
  'semi2-old256': { args: ['--max-semi-space-size=2', '--max-old-space-size=256'] },
  'semi2-init16': { args: ['--max-semi-space-size=2', '--initial-old-space-size=16'] },
  'semi2-grow50': { args: ['--max-semi-space-size=2', '--heap-growing-percent=50'] },
  'semi2-init16-grow50': {
    args: ['--max-semi-space-size=2', '--initial-old-space-size=16', '--heap-growing-percent=50'],
  },
  'semi2-old64': { args: ['--max-semi-space-size=2', '--max-old-space-size=64'] },
  sources: { args: [], entry: SOURCES_MAIN },
  // The bench's database floor D (bench/servers.ts: a bare Hono route, the read's SQL, the same
  // pool), so its CPU, collections and allocation per request sit beside this server's.
  floor: { args: [], entry: SERVERS, env: { BENCH_VARIANT: 'D', BENCH_USER_ID: USER_ID }, floor: true },
  'floor-semi2-old256': {
    args: ['--max-semi-space-size=2', '--max-old-space-size=256'],
    entry: SERVERS,
    env: { BENCH_VARIANT: 'D', BENCH_USER_ID: USER_ID },
    floor: true,
  },
  // The floor reached as an MCP client reaches this server (bench/servers.ts, DP): the same
  // POST, headers and body as this server's variants, so the two sets of figures differ only
  // by what this server does with the request (authentication, validation, the SDK's tool).
  'floor-post': { args: [], entry: SERVERS, env: { BENCH_VARIANT: 'DP', BENCH_USER_ID: USER_ID } },
  'floor-post-semi2-old256': {
    args: ['--max-semi-space-size=2', '--max-old-space-size=256'],
    entry: SERVERS,
    env: { BENCH_VARIANT: 'DP', BENCH_USER_ID: USER_ID },
  },
  // A CPU profile of the read under load, written to MEMORY_PROFILE_DIR (default
  // ./cpu-profiles) when the server exits: open it in Chrome's DevTools.
  'cpu-profile': { args: ['--cpu-prof', `--cpu-prof-dir=${process.env.MEMORY_PROFILE_DIR ?? 'cpu-profiles'}`] },
  'cpu-profile-image': {
    args: [
      '--max-semi-space-size=2',
      '--max-old-space-size=256',
      '--cpu-prof',
      `--cpu-prof-dir=${process.env.MEMORY_PROFILE_DIR ?? 'cpu-profiles'}`,
    ],
  },
  // Node's side of `perf record` (JIT code named in /tmp/perf-<pid>.map): on-CPU time, kernel
  // included, where `--cpu-prof` counts a thread waiting in a system call as busy.
  'cpu-profile-perf': { args: ['--max-semi-space-size=2', '--max-old-space-size=256', '--perf-basic-prof'] },
  'cpu-profile-perf-floor': {
    args: ['--max-semi-space-size=2', '--max-old-space-size=256', '--perf-basic-prof'],
    entry: SERVERS,
    env: { BENCH_VARIANT: 'D', BENCH_USER_ID: USER_ID },
    floor: true,
  },
  'cpu-profile-floor': {
    args: [
      '--max-semi-space-size=2',
      '--max-old-space-size=256',
      '--cpu-prof',
      `--cpu-prof-dir=${process.env.MEMORY_PROFILE_DIR ?? 'cpu-profiles'}`,
    ],
    entry: SERVERS,
    env: { BENCH_VARIANT: 'D', BENCH_USER_ID: USER_ID },
    floor: true,
  },
};

const loadAverage = () =>
  loadavg()
    .map((v) => v.toFixed(2))
    .join(' / ');
const status = (pid: number, field: string) =>
  Math.round(
    Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024,
  );

interface Running {
  child: ChildProcess;
  url: string;
  output: () => string;
  probe(): Promise<{
    now: Record<string, number>;
    peak: Record<string, number>;
    spaces: Record<string, string>;
    marks: Record<string, number>;
    /** Since the last report: main-thread milliseconds of collection by kind (`Scavenge`, `MarkSweepCompact`, …), MB allocated on the V8 heap, CPU milliseconds. */
    gcMs: Record<string, number>;
    allocatedMb: number;
    cpuMs: number;
  }>;
  stop(): Promise<void>;
}

function startServer(
  args: string[],
  env: Record<string, string>,
  probeOut: string,
  readyPath = '/health',
): Promise<Running> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', PROBE, ...args], {
      env: {
        ...process.env,
        ...env,
        PROBE_OUT: probeOut,
        LOG_LEVEL: process.env.MEMORY_LOG_LEVEL ?? 'info',
        HOST: '127.0.0.1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let resolved = false;
    // The last 64 KB, kept for error messages and never scanned: at LOG_LEVEL=info the server
    // writes a line per request, and rescanning it per chunk costs this process, on the same two
    // cores as the server, time that grows with the run.
    const keep = (chunk: Buffer) => {
      output = (output + chunk).slice(-65_536);
    };
    child.stderr.on('data', keep);
    child.stdout.on('data', keep);
    const ready = (url: string) => {
      if (resolved) return;
      resolved = true;
      resolve({
        child,
        url,
        output: () => output,
        async probe() {
          rmSync(probeOut, { force: true });
          child.kill('SIGUSR2');
          for (let i = 0; i < 200; i++) {
            await new Promise((r) => setTimeout(r, 10));
            try {
              return JSON.parse(readFileSync(probeOut, 'utf8'));
            } catch {
              // not written yet
            }
          }
          throw new Error('the probe did not answer');
        },
        stop: () => stopChild(child),
      });
    };
    // Ready when /health (the floor: its route) answers: below LOG_LEVEL=info there is no
    // "listening" line to wait for.
    const url = `http://127.0.0.1:${env.PORT}`;
    const poll = async () => {
      while (!resolved && child.exitCode === null) {
        const up = await fetch(`${url}${readyPath}`).then(
          (response) => response.ok,
          () => false,
        );
        if (up) return ready(url);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    void poll();
    child.once('exit', (code) => reject(new Error(`server exited with ${code}: ${output}`)));
  });
}

async function startTokenIssuer() {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'memory-key', alg: 'RS256', use: 'sig' };
  const server = createHttpServer((request, response) => {
    response.setHeader('content-type', 'application/json');
    if (request.url?.endsWith('/protocol/openid-connect/certs')) response.end(JSON.stringify({ keys: [jwk] }));
    else if (request.url?.endsWith('/.well-known/openid-configuration'))
      response.end(JSON.stringify({ issuer: url, jwks_uri: `${url}/protocol/openid-connect/certs` }));
    else {
      response.statusCode = 404;
      response.end('{}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/realms/memory`;
  return {
    url,
    sign: (aud: string) =>
      new SignJWT({ typ: 'Bearer', sub: USER_ID, aud, scope: 'mcp:access expenses:read expenses:write', azp: 'm' })
        .setProtectedHeader({ alg: 'RS256', kid: 'memory-key', typ: 'JWT' })
        .setIssuer(url)
        .setIssuedAt()
        .setExpirationTime('1h')
        .sign(privateKey),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function seeded(): Promise<TestDatabase> {
  const database = await createTestDatabase();
  const db = await openDatabase({ url: database.url });
  await migrate(db.pool, API_KEYS_NAMESPACE, apiKeyMigrations);
  await migrate(db.pool, EXPENSES_NAMESPACE, expensesMigrations);
  const repository = new ExpenseRepository(db.pool);
  for (let day = 0; day < 365; day += 3) {
    const date = new Date(Date.UTC(2025, 0, 1 + day)).toISOString().slice(0, 10);
    await repository.add(USER_ID, {
      date,
      amount: 1 + (day % 50),
      category: 'food',
      description: 'Pizza',
      payment_method: 'amex',
    } as never);
  }
  await db.pool.query(`INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
    SELECT 'user-' || (i % 200), DATE '2025-01-01' + (i % 365), (i % 90) + 1, 'food', 'seed', 'visa'
    FROM generate_series(1, 20000) AS i`);
  await db.pool.query('ANALYZE');
  await db.close();
  return database;
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createHttpServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });

const READ = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'tools/call',
  params: { name: 'get_user_expenses', arguments: { limit: 10 } },
});
const LIST = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
const headers = (token: string) => ({
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-protocol-version': '2025-11-25',
  authorization: `Bearer ${token}`,
});

/** One measured window's figures, per request answered where it says so. */
interface WindowFigures {
  rps: number;
  p99: number;
  errors: number;
  idle: number;
  peak: number;
  heapPeak: number;
  /** The server's CPU (all its threads), the main thread's time in collections (all, then scavenges). */
  cpuUs: number;
  gcUs: number;
  scavengeUs: number;
  kb: number;
  /** The rest of a request's cost on the shared cores: PostgreSQL, the load generator (this process), the machine. */
  postgresUs: number;
  loadUs: number;
  machineUs: number;
  /** The window's idle and stolen shares of the machine: whether it was CPU-bound (then requests/s ≈ cores ÷ machine µs). */
  idleShare: number;
  stealShare: number;
  oldSpace: string;
}

async function measureWindow(
  server: Running,
  load: Parameters<typeof autocannon>[0],
  idle: number,
): Promise<WindowFigures> {
  await server.probe(); // resets the probe's peaks and counters: the measured window's own
  const machineBefore = machineCpu();
  const benchBefore = process.cpuUsage();
  const result = await autocannon({ ...load, duration: DURATION_S });
  const benchMs = (({ user, system }) => (user + system) / 1000)(process.cpuUsage(benchBefore));
  const machine = machineWindow(machineBefore, machineCpu());
  const probe = await server.probe();
  const perRequest = (ms: number) => Math.round((ms * 1000) / result.requests.total);
  return {
    rps: Math.round(result.requests.average),
    p99: result.latency.p99,
    // Replies that were not the checked one (bench/replies.ts) count as errors.
    errors: result.errors + result.timeouts + result.non2xx + result.mismatches,
    idle,
    peak: status(server.child.pid as number, 'VmHWM'),
    heapPeak: probe.peak.heapTotal as number,
    cpuUs: perRequest(probe.cpuMs),
    gcUs: perRequest(Object.values(probe.gcMs).reduce((sum, ms) => sum + ms, 0)),
    scavengeUs: perRequest(probe.gcMs.Scavenge ?? 0),
    kb: Math.round((probe.allocatedMb * 1024) / result.requests.total),
    postgresUs: perRequest(machine.postgresMs),
    loadUs: perRequest(benchMs),
    machineUs: perRequest(machine.busyMs),
    idleShare: machine.idlePercent,
    stealShare: machine.stolenPercent,
    oldSpace: probe.spaces.old_space ?? '',
  };
}

const describeWindow = (f: WindowFigures) =>
  `${String(f.rps).padStart(6)} req/s p99 ${f.p99} ms errors ${f.errors} idle ${f.idle} MB peak ${f.peak} MB; CPU ${f.cpuUs} µs/request, GC ${f.gcUs} µs/request (scavenges ${f.scavengeUs}), ${f.kb} KB allocated/request; PostgreSQL ${f.postgresUs} µs, load generator ${f.loadUs} µs, machine ${f.machineUs} µs/request, ${f.idleShare} % idle, ${f.stealShare} % stolen; old space ${f.oldSpace} MB; load ${loadAverage()}`;

async function main() {
  rmSync(WORK, { recursive: true, force: true });
  const built = spawnSync(process.execPath, [BUILD, '--out-dir', WORK], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(built.stderr);
  process.stderr.write(`load average at start: ${loadAverage()}\n`);
  const issuer = await startTokenIssuer();
  const databases: TestDatabase[] = [];
  try {
    const database = await seeded();
    databases.push(database);
    const serve = async (name: string, extra: Record<string, string> = {}, databaseUrl = database.url) => {
      const variant = VARIANTS[name];
      if (!variant) throw new Error(`no variant ${name}`);
      const port = await freePort();
      const base = `http://localhost:${port}`;
      const server = await startServer(
        [...variant.args, variant.entry ?? MAIN],
        {
          DATABASE_URL: databaseUrl,
          MCP_AUTH_PROVIDER: 'keycloak',
          KEYCLOAK_REALM_URL: issuer.url,
          MCP_SERVER_BASE_URL: base,
          PORT: String(port),
          ...variant.env,
          ...extra,
        },
        join(WORK, `probe-${name}.json`),
        variant.floor ? '/read' : '/health',
      );
      return { server, token: await issuer.sign(`${base}/mcp`) };
    };

    if (mode === 'idle') {
      for (const name of (process.env.MEMORY_VARIANTS ?? 'default,sources').split(',')) {
        const { server, token } = await serve(name);
        await fetch(`${server.url}/mcp`, { method: 'POST', headers: headers(token), body: READ });
        await new Promise((r) => setTimeout(r, 1_000));
        const probe = await server.probe();
        console.log(
          `${name}: VmRSS ${status(server.child.pid as number, 'VmRSS')} MB after one read;`,
          JSON.stringify(probe.now),
          JSON.stringify(probe.spaces),
        );
        await server.stop();
      }
      const bare = spawnSync(process.execPath, ['-e', 'console.log(JSON.stringify(process.memoryUsage()))'], {
        encoding: 'utf8',
      });
      console.log(`node -e: ${bare.stdout.trim()}`);
      return;
    }

    if (mode === 'cold') {
      // Each bundle's code cache written as the image's build writes it, under the starts' flags.
      for (const main of MAINS.filter((path) => path.endsWith('main.cjs'))) {
        const warmed = spawnSync(process.execPath, [...COLD_ARGS, main, '--warm-up'], { encoding: 'utf8' });
        if (warmed.status !== 0) throw new Error(`${main} --warm-up failed: ${warmed.stderr}`);
      }
      const rows: Record<string, number[]> = {};
      const add = (key: string, value: number) => {
        rows[key] ??= [];
        rows[key].push(Math.round(value));
      };
      // MEMORY_COLD_DATABASE=current: every start on the seeded database (a restart: the schema
      // is current); otherwise each on an empty one (the first start: every migration runs).
      const current = process.env.MEMORY_COLD_DATABASE === 'current';
      const starts = Array.from({ length: COLD_STARTS }, (_, i) => (i % 2 ? [...MAINS].reverse() : MAINS)).flat();
      for (const main of starts) {
        const label = MAINS.length > 1 ? `[${main}] ` : '';
        const fresh = current ? database : await createTestDatabase();
        if (!current) databases.push(fresh);
        const port = await freePort();
        const base = `http://localhost:${port}`;
        const token = await issuer.sign(`${base}/mcp`);
        // As the bench's cold start: each spawn on a quiet machine, so starts compare.
        await settle();
        const began = performance.now();
        const child = spawn(process.execPath, ['--import', PROBE, ...COLD_ARGS, main], {
          env: {
            ...process.env,
            DATABASE_URL: fresh.url,
            MCP_AUTH_PROVIDER: 'keycloak',
            KEYCLOAK_REALM_URL: issuer.url,
            MCP_SERVER_BASE_URL: base,
            PORT: String(port),
            LOG_LEVEL: 'info',
            HOST: '127.0.0.1',
            PROBE_OUT: join(WORK, 'probe-cold.json'),
          },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let listenedAt = 0;
        child.stdout.on('data', (chunk: Buffer) => {
          if (!listenedAt && chunk.toString().includes('"msg":"listening"')) listenedAt = performance.now();
        });
        let answeredAt: number;
        try {
          answeredAt = await firstToolList(child, port, token, began, main);
        } catch (error) {
          // Stopped first: main's `finally` then drops the database it was connected to.
          await stopChild(child);
          throw error;
        }
        rmSync(join(WORK, 'probe-cold.json'), { force: true });
        child.kill('SIGUSR2');
        await new Promise((r) => setTimeout(r, 200));
        const probe = JSON.parse(readFileSync(join(WORK, 'probe-cold.json'), 'utf8'));
        // The probe's clock starts at the process's time origin; `began` is this process's.
        const marks = probe.marks as Record<string, number>;
        add(`${label}spawn → Node bootstrapped`, marks.bootstrapComplete as number);
        add(
          `${label}→ modules loaded, first socket (the database)`,
          (marks.firstSocket as number) - (marks.probe as number),
        );
        add(
          `${label}→ listening (database connect + migrations + app)`,
          listenedAt - began - (marks.firstSocket as number),
        );
        add(`${label}→ first authenticated tools/list answered`, answeredAt - listenedAt);
        add(`${label}total (spawn → answered)`, answeredAt - began);
        await stopChild(child);
      }
      console.log(`cold start phases (ms, ${COLD_STARTS} starts, median last), load ${loadAverage()}`);
      for (const [key, values] of Object.entries(rows)) console.log(`${key}: ${values.join(', ')} (${median(values)})`);
      return;
    }

    const names = (
      process.env.MEMORY_VARIANTS ??
      (mode === 'soak'
        ? 'semi2-old256,floor-semi2-old256'
        : Object.keys(VARIANTS)
            .filter((name) => !name.startsWith('cpu-profile'))
            .join(','))
    ).split(',');
    const results: Record<string, WindowFigures[]> = {};
    const record = (name: string, figures: WindowFigures) => {
      results[name] ??= [];
      results[name].push(figures);
    };
    /** The variant's load, every reply held to what the first one was checked to be (bench/replies.ts). */
    const loadOf = async (name: string, server: Running, token: string) => {
      const list = process.env.MEMORY_REQUEST === 'list';
      const [request, expected] = VARIANTS[name]?.floor
        ? [{ url: `${server.url}/read` }, floorListReply(10)]
        : [
            { url: `${server.url}/mcp`, method: 'POST' as const, headers: headers(token), body: list ? LIST : READ },
            list ? expensesToolListReply : toolReadReply(10),
          ];
      const verify = await checkedReplies(name, request, expected);
      return {
        ...request,
        connections: CONNECTIONS,
        verifyBody: (body: string | Buffer | undefined) => verify(String(body ?? '')),
      };
    };

    if (mode === 'soak') {
      // One process per variant for the whole run, as `pnpm bench` keeps its servers: windows
      // back to back, alternating between the variants as the bench's paired rounds do, so a
      // figure that drifts with a process's age shows against one that does not.
      const running = [];
      for (const name of names) {
        const { server, token } = await serve(name);
        await new Promise((r) => setTimeout(r, 1_000));
        const idle = status(server.child.pid as number, 'VmRSS');
        const load = await loadOf(name, server, token);
        await autocannon({ ...load, duration: WARMUP_S });
        running.push({ name, server, load, idle });
      }
      for (let window = 1; window <= WINDOWS; window++) {
        for (const { name, server, load, idle } of running) {
          const figures = await measureWindow(server, load, idle);
          record(name, figures);
          console.log(`window ${window} ${name.padEnd(16)} ${describeWindow(figures)}`);
        }
      }
      for (const { server } of running) await server.stop();
    } else {
      // Paired rounds of flag sets under the bench's read load, each window a fresh process.
      for (let round = 1; round <= ROUNDS; round++) {
        for (const name of round % 2 ? names : [...names].reverse()) {
          const { server, token } = await serve(name);
          await new Promise((r) => setTimeout(r, 1_000));
          const idle = status(server.child.pid as number, 'VmRSS');
          const load = await loadOf(name, server, token);
          await autocannon({ ...load, duration: WARMUP_S });
          const figures = await measureWindow(server, load, idle);
          record(name, figures);
          console.log(`round ${round} ${name.padEnd(16)} ${describeWindow(figures)}`);
          await server.stop();
        }
      }
    }
    const count = mode === 'soak' ? `${WINDOWS} windows` : `${ROUNDS} rounds`;
    console.log(`\nmedians over ${count} (${CONNECTIONS} connections), load ${loadAverage()}`);
    for (const [name, windows] of Object.entries(results)) {
      type Figure = Exclude<keyof WindowFigures, 'oldSpace'>;
      const all = (key: Figure) => windows.map((figures) => figures[key]);
      const both = (key: Figure) => `${median(all(key))} (${all(key).join(', ')})`;
      console.log(
        `${name.padEnd(16)} req/s ${both('rps')}  CPU ${both('cpuUs')} µs/request  GC ${both('gcUs')} µs/request  ${median(all('kb'))} KB allocated/request  PostgreSQL ${median(all('postgresUs'))} µs  load generator ${median(all('loadUs'))} µs  machine ${median(all('machineUs'))} µs/request (${median(all('idleShare'))} % idle, ${median(all('stealShare'))} % stolen)  idle ${median(all('idle'))} MB  peak ${both('peak')} MB  heapTotal peak ${median(all('heapPeak'))} MB`,
      );
    }
  } finally {
    await issuer.close();
    for (const database of databases) await database.drop();
    rmSync(WORK, { recursive: true, force: true });
  }
}

await main();
