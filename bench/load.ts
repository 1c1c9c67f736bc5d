/**
 * `pnpm load`: N users × T seconds of mixed reads and writes against the real server process
 * (key mode, PostgreSQL), optionally with a fault in the middle, then the count that matters:
 * every write the server acknowledged, looked up in PostgreSQL by its unique marker.
 *
 *   pnpm load -- --users 20 --seconds 30 --write-ratio 0.3 --fault freeze
 *
 * Faults: none, sigterm (the server, a third of the way in), freeze (PostgreSQL SIGSTOPped
 * for --down seconds), kill (kill -9, down for --down seconds, started again), restart
 * (pg_ctl stop -m fast, start). freeze/kill/restart run a PostgreSQL of this tool's own
 * (Debian's binaries under /usr/lib/postgresql); none/sigterm use TEST_DATABASE_URL.
 * With --retry, a write that was not acknowledged is retried with its idempotency key until
 * it is (what a careful client does); without it, each write is tried once.
 * It prints figures and asserts nothing; record them in docs/reliability.md.
 */
import { Agent } from 'node:http';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createTestDatabase, spawnServerProcess } from '@mcp-auth-stack/testing';
import {
  type CallResult,
  callTool,
  createKeys,
  type OwnPostgres,
  startOwnPostgres,
  storedMarkers,
} from '@mcp-auth-stack/testing-stack/faults';

/** `pnpm start:server`'s program, through apps/server's declared entry. */
const SERVER_MAIN = fileURLToPath(import.meta.resolve('@mcp-auth-stack/server/main'));

const FAULTS = ['none', 'sigterm', 'freeze', 'kill', 'restart'] as const;
type Fault = (typeof FAULTS)[number];

const { values } = parseArgs({
  // `pnpm load -- --users 5` passes the `--` along.
  args: process.argv.slice(2).filter((arg, i) => !(i === 0 && arg === '--')),
  options: {
    users: { type: 'string', default: '20' },
    seconds: { type: 'string', default: '20' },
    'write-ratio': { type: 'string', default: '0.3' },
    fault: { type: 'string', default: 'none' },
    down: { type: 'string', default: '5' },
    retry: { type: 'boolean', default: false },
  },
});
const users = Number(values.users);
const seconds = Number(values.seconds);
const writeRatio = Number(values['write-ratio']);
const downSeconds = Number(values.down);
const fault = values.fault as Fault;
if (!FAULTS.includes(fault)) throw new Error(`--fault must be one of ${FAULTS.join(', ')}`);
if (!(users >= 1 && seconds > 0 && writeRatio >= 0 && writeRatio <= 1))
  throw new Error('bad --users/--seconds/--write-ratio');

const ownPostgres: OwnPostgres | undefined = ['freeze', 'kill', 'restart'].includes(fault)
  ? await startOwnPostgres()
  : undefined;
const testDatabase = ownPostgres ? undefined : await createTestDatabase();
const databaseUrl = ownPostgres?.url ?? (testDatabase?.url as string);
const server = await spawnServerProcess(SERVER_MAIN, {
  DATABASE_URL: databaseUrl,
  MCP_AUTH_PROVIDER: 'key',
  DATABASE_POOL_SIZE: '10',
}).catch(async (error) => {
  await ownPostgres?.destroy();
  await testDatabase?.drop();
  throw error;
});
const names = Array.from({ length: users }, (_, i) => `load-user-${i}`);
const keys = await createKeys(databaseUrl, names);
const prefix = `load${Date.now().toString(36)}`;

interface Sample extends CallResult {
  kind: 'read' | 'write';
  start: number;
}
const samples: Sample[] = [];
let stopped = false;
const started = performance.now();
const loops = names.map(async (user, u) => {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const key = keys.get(user) as string;
  let seq = 0;
  let pending: string | undefined;
  while (!stopped) {
    const write = pending !== undefined || Math.random() < writeRatio;
    const marker = pending ?? `${prefix}-${u}-${seq++}`;
    const start = performance.now();
    const result = write
      ? await callTool(
          server.mcpUrl,
          agent,
          key,
          'add_user_expense',
          {
            date: '2025-06-01',
            amount: 3.5,
            category: 'food',
            description: marker,
            payment_method: 'visa',
            idempotency_key: marker,
          },
          marker,
        )
      : await callTool(server.mcpUrl, agent, key, 'get_user_expenses', { limit: 10 });
    const end = performance.now();
    samples.push({ ...result, kind: write ? 'write' : 'read', start, at: end, ms: end - start });
    if (result.outcome === 'connection_refused') break;
    pending = write && values.retry && result.outcome !== 'acknowledged' ? marker : undefined;
    if (result.outcome !== 'acknowledged') await new Promise((resolve) => setTimeout(resolve, 100));
  }
  agent.destroy();
});

let faultWindow: { from: number; to: number } | undefined;
const faultRun = (async () => {
  await new Promise((resolve) => setTimeout(resolve, (seconds * 1000) / 3));
  const from = performance.now();
  if (fault === 'sigterm') {
    await server.stop();
  } else if (fault === 'freeze' && ownPostgres) {
    await ownPostgres.freeze();
    await new Promise((resolve) => setTimeout(resolve, downSeconds * 1000));
    await ownPostgres.thaw();
  } else if (fault === 'kill' && ownPostgres) {
    await ownPostgres.kill();
    await new Promise((resolve) => setTimeout(resolve, downSeconds * 1000));
    await ownPostgres.start();
  } else if (fault === 'restart' && ownPostgres) {
    await ownPostgres.stop();
    await ownPostgres.start();
  } else return;
  faultWindow = { from, to: performance.now() };
})();

await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
stopped = true;
await Promise.all([...loops, faultRun]);
const elapsedS = (performance.now() - started) / 1000;
await server.stop();

const stored = await storedMarkers(databaseUrl, prefix);
await ownPostgres?.destroy();
await testDatabase?.drop();

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number);
const latency = (kind?: 'read' | 'write') => {
  const ms = samples
    .filter((s) => (kind ? s.kind === kind : true) && s.outcome !== 'connection_refused')
    .map((s) => s.ms ?? 0)
    .sort((a, b) => a - b);
  const f = (n: number) => n.toFixed(1);
  return `p50 ${f(percentile(ms, 50))} ms, p95 ${f(percentile(ms, 95))} ms, p99 ${f(percentile(ms, 99))} ms, max ${f(ms.at(-1) ?? 0)} ms`;
};
const kinds = new Map<string, number>();
for (const s of samples) {
  if (s.outcome === 'acknowledged') continue;
  const kind = `${s.kind} ${s.outcome}${s.status ? ` ${s.status}` : ''}`;
  kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
}
const writes = samples.filter((s) => s.kind === 'write');
const acknowledged = new Set(writes.filter((s) => s.outcome === 'acknowledged').map((s) => s.marker));
const lost = [...acknowledged].filter((m) => !stored.has(m)).length;
const doubles = [...stored.values()].filter((n) => n > 1).length;
const unacknowledged = [...stored.keys()].filter((m) => !acknowledged.has(m)).length;
const answered = samples.filter((s) => s.outcome !== 'connection_refused');

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`);
console.log(
  `load: ${users} users × ${seconds} s, ${Math.round(writeRatio * 100)} % writes, fault ${fault}${fault === 'freeze' || fault === 'kill' ? ` (${downSeconds} s)` : ''}${values.retry ? ', writes retried with their idempotency key' : ''}`,
);
console.log(
  `requests: ${answered.length} in ${elapsedS.toFixed(1)} s = ${(answered.length / elapsedS).toFixed(0)} req/s`,
);
console.log(`latency, all: ${latency()}`);
console.log(`latency, reads: ${latency('read')}`);
console.log(`latency, writes: ${latency('write')}`);
console.log(`errors by kind: ${kinds.size === 0 ? 'none' : [...kinds].map(([k, n]) => `${k}: ${n}`).join(', ')}`);
if (faultWindow) {
  const window = faultWindow;
  const failed = samples.filter((s) => s.outcome !== 'acknowledged' && s.outcome !== 'connection_refused');
  const firstAckAfter = samples
    .filter((s) => s.outcome === 'acknowledged' && (s.start ?? 0) >= window.to)
    .map((s) => s.at ?? 0)
    .sort((a, b) => a - b)[0];
  const lastFailure = failed
    .map((s) => s.at ?? 0)
    .sort((a, b) => a - b)
    .at(-1);
  console.log(
    `fault: ${((window.to - window.from) / 1000).toFixed(1)} s; failed requests ${failed.length}` +
      (lastFailure !== undefined
        ? `, last failure ${((lastFailure - window.to) / 1000).toFixed(2)} s after the fault ended`
        : '') +
      (firstAckAfter !== undefined ? `, first success ${((firstAckAfter - window.to) / 1000).toFixed(2)} s after` : ''),
  );
}
console.log(
  `writes: ${writes.length} sent, ${acknowledged.size} acknowledged, ${stored.size} markers stored; acknowledged but missing ${lost}, stored more than once ${doubles}, stored but never acknowledged ${unacknowledged}`,
);
