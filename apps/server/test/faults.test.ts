import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, openMcpPost, type TestDatabase } from '@mcp-auth-stack/testing';
import {
  createKeys,
  keepAliveWriters,
  type OwnPostgres,
  startOwnPostgres,
  storedMarkers,
  until,
} from '@mcp-auth-stack/testing-stack/faults';
import { spawnServer, startTestStack } from './helpers.ts';

/**
 * Faults under load, against the server as its own process: every assertion is on what the
 * clients saw and what PostgreSQL holds, counted per unique marker.
 */
describe('SIGTERM under keep-alive load', () => {
  let database: TestDatabase;
  before(async () => {
    database = await createTestDatabase();
  });
  after(async () => {
    await database?.drop();
  });

  test('drains: nothing cut, every acknowledged write stored once, nothing stored unacknowledged, no new work, prompt exit', async (t) => {
    const shutdownTimeoutMs = 20_000;
    const server = await spawnServer({
      DATABASE_URL: database.url,
      MCP_AUTH_PROVIDER: 'key',
      SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
    });
    const keys = [...(await createKeys(database.url, ['drain-a', 'drain-b', 'drain-c'])).values()];
    const clients = 6;
    const socketsPerClient = 2;
    const load = keepAliveWriters({ mcpUrl: server.mcpUrl, keys, clients, socketsPerClient, prefix: 'drain' });
    try {
      await until(() => load.count('acknowledged') >= 150, 60_000, '150 acknowledged writes');
      const answeredBeforeSignal = load.count('acknowledged');
      const signalled = Date.now();
      const exitCode = server.stop();
      // Clients keep sending on their keep-alive sockets until the server stops answering.
      let timer: NodeJS.Timeout | undefined;
      const code = await Promise.race([
        exitCode,
        new Promise<'still running'>((resolve) => {
          timer = setTimeout(() => resolve('still running'), 60_000);
        }),
      ]);
      clearTimeout(timer);
      const exitedAfterMs = Date.now() - signalled;
      load.stop();
      const report = await load.done;
      const stored = await storedMarkers(database.url, 'drain');

      const context = JSON.stringify({ byOutcome: report.byOutcome, stored: stored.size, exitedAfterMs, code });
      t.diagnostic(context);
      assert.equal(code, 0, `the process exits cleanly: ${context}`);
      assert.equal(report.byOutcome.reset ?? 0, 0, `no request was cut: ${context}`);
      for (const marker of report.acknowledged) {
        assert.equal(stored.get(marker), 1, `acknowledged write ${marker} stored exactly once`);
      }
      const unacknowledged = [...stored.keys()].filter((marker) => !report.acknowledged.has(marker));
      assert.deepEqual(unacknowledged, [], 'nothing is stored that the client was not told about');
      // Once draining, each keep-alive socket finishes what it had in flight and takes no more
      // work: at most one more answer per socket (two if a request slipped in just before the
      // signal was handled), not thousands.
      const servedAfterSignal = load.count('acknowledged') - answeredBeforeSignal;
      assert.ok(
        servedAfterSignal <= 2 * clients * socketsPerClient,
        `served ${servedAfterSignal} writes after SIGTERM on old sockets: ${context}`,
      );
      // Refusals during the drain are clean: 503 with Connection: close.
      for (const refused of report.results.filter((r) => r.outcome === 'refused')) {
        assert.equal(refused.status, 503, JSON.stringify(refused));
        assert.equal(refused.connectionClose, true, JSON.stringify(refused));
      }
      // Generous: the drain ends with the work in flight, not at the timeout.
      assert.ok(exitedAfterMs < shutdownTimeoutMs, `exited ${exitedAfterMs} ms after SIGTERM: ${context}`);
      assert.doesNotMatch(server.output(), /drain timed out/);
    } finally {
      load.stop();
      await server.stop().catch(() => undefined);
    }
  });
});

describe('the drain, one connection at a time', () => {
  test('a request still unanswered at SHUTDOWN_TIMEOUT_MS is cut there: the process exits 0 and the warning counts it', async () => {
    const database = await createTestDatabase();
    const shutdownTimeoutMs = 1_000;
    const server = await spawnServer({
      DATABASE_URL: database.url,
      MCP_AUTH_PROVIDER: 'key',
      SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
    });
    try {
      const [key = ''] = (await createKeys(database.url, ['cut'])).values();
      // A request whose body never ends: nothing but the drain's timeout ends it.
      const stalled = openMcpPost(server.mcpUrl, key, {
        headers: {
          'transfer-encoding': 'chunked',
        },
      });
      const outcome = new Promise<string>((resolve) => {
        stalled.on('response', (response) => resolve(`answered ${response.statusCode}`));
        stalled.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      });
      stalled.write('{"jsonrpc":"2.0","id":1,');
      // Time for the server to take the request in (a connection without one would be idle, and
      // the drain would answer a late request 503 instead of cutting it).
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      // Past the drain's bound, the backstop in main.ts would end the process with exit 1.
      assert.equal(await server.stop(), 0, server.output());
      assert.equal(await outcome, 'ECONNRESET', 'the request was cut, not answered');
      const warning = server
        .output()
        .split('\n')
        .find((line) => line.includes('"msg":"drain timed out'));
      assert.ok(warning, server.output());
      assert.deepEqual(
        (({ cut, refused, shutdown_timeout_ms }) => ({ cut, refused, shutdown_timeout_ms }))(JSON.parse(warning)),
        { cut: 1, refused: 0, shutdown_timeout_ms: shutdownTimeoutMs },
      );
    } finally {
      await server.stop().catch(() => undefined);
      await database.drop();
    }
  });

  test('in flight: the response carries Connection: close and its socket closes; an idle keep-alive socket gets 503 draining', async () => {
    const stack = await startTestStack();
    const key = (await stack.keys.create({ userId: 'drain-one' })).secret;
    const busy = new Agent({ keepAlive: true, maxSockets: 1 });
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    let closed: Promise<void> | undefined;
    const get = (path: string) =>
      new Promise<{ status: number; connection: string | undefined; body: string }>((resolve, reject) => {
        httpRequest(`${stack.url}${path}`, { agent: idle }, (response) => {
          let body = '';
          response.on('data', (chunk) => (body += chunk));
          response.on('end', () =>
            resolve({ status: response.statusCode ?? 0, connection: response.headers.connection, body }),
          );
        })
          .on('error', reject)
          .end();
      });
    try {
      // A keep-alive socket that has served one request and now waits.
      assert.equal((await get('/health')).status, 200);
      // A request whose body is still coming when the drain starts.
      let socketClosed = false;
      const inFlight = openMcpPost(stack.mcpUrl, key, {
        agent: busy,
        headers: {
          'transfer-encoding': 'chunked',
        },
      });
      inFlight.on('socket', (socket) => socket.on('close', () => (socketClosed = true)));
      const answered = new Promise<{ status: number; connection: string | undefined; body: string }>(
        (resolve, reject) => {
          inFlight.on('response', (response) => {
            let body = '';
            response.on('data', (chunk) => (body += chunk));
            response.on('end', () =>
              resolve({ status: response.statusCode ?? 0, connection: response.headers.connection, body }),
            );
          });
          inFlight.on('error', reject);
        },
      );
      inFlight.write('{"jsonrpc":"2.0","id":7,');
      await new Promise((resolve) => setTimeout(resolve, 200));
      closed = stack.close();
      // New work on the old, idle socket: refused before it runs.
      const ready = await get('/ready');
      assert.deepEqual(
        [ready.status, ready.connection, JSON.parse(ready.body)],
        [503, 'close', { status: 'draining' }],
      );
      inFlight.end('"method":"ping"}');
      const reply = await answered;
      assert.deepEqual(
        [reply.status, reply.connection, JSON.parse(reply.body)],
        [200, 'close', { jsonrpc: '2.0', id: 7, result: {} }],
      );
      await closed;
      await until(() => socketClosed, 5_000, 'the socket of the last response to close');
    } finally {
      busy.destroy();
      idle.destroy();
      await (closed ?? stack.close());
    }
  });
});

/** GET /ready on a fresh connection; `undefined` when it does not answer within `ms`. */
async function ready(url: string, ms: number): Promise<{ status: number; body: Record<string, unknown> } | undefined> {
  try {
    const response = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(ms) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  } catch {
    return undefined;
  }
}

describe('PostgreSQL frozen, killed and restarted under load', () => {
  let postgres: OwnPostgres;
  before(async () => {
    postgres = await startOwnPostgres();
  });
  after(async () => {
    await postgres?.thaw().catch(() => undefined);
    await postgres?.destroy();
  });

  test('bounded errors, recovery after each fault, nothing lost or doubled with idempotency keys; shutdown bounded while frozen', async (t) => {
    const shutdownTimeoutMs = 5_000;
    const databaseCloseTimeoutMs = 1_000;
    const server = await spawnServer({
      DATABASE_URL: postgres.url,
      MCP_AUTH_PROVIDER: 'key',
      SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
      DATABASE_CONNECT_TIMEOUT_MS: '1000',
      DATABASE_QUERY_TIMEOUT_MS: '1000',
      DATABASE_CLOSE_TIMEOUT_MS: String(databaseCloseTimeoutMs),
      READY_TIMEOUT_MS: '1000',
    });
    const keys = [...(await createKeys(postgres.url, ['pg-a', 'pg-b'])).values()];
    const load = keepAliveWriters({
      mcpUrl: server.mcpUrl,
      keys,
      clients: 3,
      socketsPerClient: 2,
      prefix: 'pgfault',
      retryWithKey: true,
    });
    const recovers = async (what: string) => {
      const before = load.count('acknowledged');
      await until(() => load.count('acknowledged') >= before + 30, 60_000, `writes acknowledged again after ${what}`);
    };
    try {
      await until(() => load.count('acknowledged') >= 50, 60_000, '50 acknowledged writes');

      // Frozen (a partition, a stuck failover): requests fail within their bounds, /ready answers.
      await postgres.freeze();
      const frozenAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const frozenReady = await ready(server.url, 5_000);
      await new Promise((resolve) => setTimeout(resolve, 6_000));
      await postgres.thaw();
      const thawedAt = performance.now();
      assert.equal(
        frozenReady?.status,
        503,
        `/ready answers 503 while the database is frozen: ${JSON.stringify(frozenReady)}`,
      );
      assert.deepEqual(frozenReady?.body.checks, { database: 'unreachable' });
      await recovers('the freeze');
      assert.equal((await ready(server.url, 5_000))?.status, 200, '/ready is 200 again');

      // kill -9, down for 3 s, started again.
      await postgres.kill();
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      await postgres.start();
      await recovers('kill -9');

      // A clean restart (pg_ctl restart -m fast).
      await postgres.stop();
      await postgres.start();
      await recovers('the restart');

      load.stop();
      const report = await load.done;
      const stored = await storedMarkers(postgres.url, 'pgfault');
      const failedDuringFreeze = report.results.filter(
        (r) => r.outcome !== 'acknowledged' && (r.at ?? 0) > frozenAt && (r.at ?? 0) <= thawedAt,
      );
      const slowest = Math.max(...report.results.map((r) => r.ms ?? 0));
      const retried = new Set(report.results.filter((r) => r.outcome !== 'acknowledged').map((r) => r.marker));
      const context = JSON.stringify({
        byOutcome: report.byOutcome,
        stored: stored.size,
        failedDuringFreeze: failedDuringFreeze.length,
        retriedMarkers: retried.size,
        slowestMs: Math.round(slowest),
      });
      t.diagnostic(context);
      t.diagnostic(
        server
          .output()
          .split('\n')
          .filter((line) => /database (unavailable|available again)/.test(line))
          .join('\n'),
      );

      assert.equal(report.byOutcome.reset ?? 0, 0, `no connection was cut: ${context}`);
      assert.ok(
        failedDuringFreeze.length > 0,
        `requests failed (cleanly) during the freeze instead of hanging: ${context}`,
      );
      // Generous: the bounds are 1 s to connect and 2 s per statement, two database steps per
      // call; unbounded, a call waits out the whole 8 s freeze.
      assert.ok(slowest < 7_500, `every call answered within its bounds: ${context}`);
      for (const marker of report.acknowledged) {
        assert.equal(stored.get(marker), 1, `acknowledged ${marker} stored exactly once: ${context}`);
      }
      for (const [marker, count] of stored) {
        assert.equal(count, 1, `${marker} stored once, however often it was retried`);
      }
      // The outage was logged with its cause, once per outage rather than per request.
      const output = server.output();
      const outages = output.split('\n').filter((line) => line.includes('"msg":"database unavailable"'));
      assert.ok(outages.length >= 1 && outages.length <= 10, `${outages.length} outage lines:\n${outages.join('\n')}`);
      assert.ok(outages.length < failedDuringFreeze.length, 'fewer lines than failed requests');
      for (const line of outages) {
        const logged = JSON.parse(line) as { level: string; where?: string; error?: string };
        assert.equal(logged.level, 'error');
        assert.ok(logged.where && logged.error, `says where and why: ${line}`);
      }
      await server.waitForOutput(/"msg":"database available again"/);
      assert.ok(!output.includes(new URL(postgres.url).password), 'the database password is never logged');

      // SIGTERM while the database is frozen: the process still exits, within its bounds.
      await postgres.freeze();
      const signalled = performance.now();
      const code = await server.stop();
      const exitedAfterMs = performance.now() - signalled;
      await postgres.thaw();
      assert.equal(code, 0);
      assert.ok(
        exitedAfterMs < shutdownTimeoutMs + databaseCloseTimeoutMs + 3_000,
        `exited ${Math.round(exitedAfterMs)} ms after SIGTERM with the database frozen`,
      );
    } finally {
      load.stop();
      await postgres.thaw().catch(() => undefined);
      await server.stop().catch(() => undefined);
    }
  });
  test('/ready answers 503 within READY_TIMEOUT_MS while the database is frozen, however long its own bounds', async () => {
    const server = await spawnServer({
      DATABASE_URL: postgres.url,
      MCP_AUTH_PROVIDER: 'key',
      // A query may wait 10 s for its connection and 11 s for its answer; readiness 0.5 s.
      DATABASE_CONNECT_TIMEOUT_MS: '10000',
      DATABASE_QUERY_TIMEOUT_MS: '10000',
      READY_TIMEOUT_MS: '500',
      DATABASE_CLOSE_TIMEOUT_MS: '500',
    });
    try {
      assert.equal((await ready(server.url, 5_000))?.status, 200);
      await postgres.freeze();
      try {
        const frozen = await ready(server.url, 5_000);
        assert.equal(frozen?.status, 503, `/ready answered within its bound: ${JSON.stringify(frozen)}`);
        assert.deepEqual(frozen?.body.checks, { database: 'unreachable' });
      } finally {
        await postgres.thaw();
      }
    } finally {
      await server.stop().catch(() => undefined);
    }
  });
});
