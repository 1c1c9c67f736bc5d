import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { createKeys, keepAliveWriters, storedMarkers, until } from './fault-helpers.ts';
import { spawnServer } from './helpers.ts';

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
