import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { RunningKeycloak } from '@mcp-auth-stack/keycloak';
import { createTestDatabase, freePort, type ServerProcess, type TestDatabase } from '@mcp-auth-stack/testing';
import { callTool, storedMarkers } from '@mcp-auth-stack/testing-stack/faults';
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';
import { spawnServer } from './helpers.ts';

/**
 * The path between the server and Keycloak, which the test can cut: the server reaches the
 * realm through it (KEYCLOAK_REALM_INTERNAL_URL), so closing it is, for the server, Keycloak
 * down (connections refused), while tokens are still issued by the real Keycloak.
 */
async function cuttablePath(targetPort: number) {
  const port = await freePort();
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  const open = () =>
    new Promise<void>((resolve) => {
      server = createServer((client) => {
        const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on('close', () => sockets.delete(socket));
          socket.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
      });
      server.listen(port, '127.0.0.1', () => resolve());
    });
  await open();
  return {
    port,
    open,
    cut: () =>
      new Promise<void>((resolve) => {
        server?.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

async function readiness(url: string) {
  const response = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe('Keycloak unreachable from the server (keycloak mode)', () => {
  let keycloak: RunningKeycloak;
  let database: TestDatabase;
  let path: Awaited<ReturnType<typeof cuttablePath>>;
  let baseUrl: string;
  let port: number;
  const servers: ServerProcess[] = [];

  before(
    async () => {
      ({ keycloak, serverPort: port, baseUrl } = await startKeycloakForServer());
      database = await createTestDatabase();
      path = await cuttablePath(Number(new URL(keycloak.url).port));
    },
    { timeout: 600_000 },
  );
  after(async () => {
    for (const server of servers) await server.stop();
    await path?.cut();
    await keycloak?.stop();
    await database?.drop();
  });

  const replica = async (listenPort: number) => {
    const server = await spawnServer({
      PORT: String(listenPort),
      MCP_SERVER_BASE_URL: baseUrl,
      MCP_AUTH_PROVIDER: 'keycloak',
      KEYCLOAK_REALM_URL: keycloak.realmUrl,
      KEYCLOAK_REALM_INTERNAL_URL: `http://127.0.0.1:${path.port}/realms/mcp`,
      DATABASE_URL: database.url,
    });
    servers.push(server);
    return server;
  };

  test('with its keys cached a replica stays ready and serves every request; one without keys is not ready', async () => {
    const first = await replica(port);
    assert.deepEqual(await readiness(first.url), {
      status: 200,
      body: { status: 'ready', checks: { database: 'ok', issuer_metadata: 'ok', jwks: 'ok' } },
    });
    const issued = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        client_id: 'expenses-agent',
        client_secret: 'expenses-agent-demo-secret-not-for-production',
        resource: `${baseUrl}/mcp`,
        scope: 'expenses:read expenses:write',
      }),
    });
    assert.equal(issued.status, 200, await issued.clone().text());
    const token = ((await issued.json()) as { access_token: string }).access_token;
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const write = (server: ServerProcess, marker: string) =>
      callTool(
        server.mcpUrl,
        agent,
        token,
        'add_user_expense',
        { date: '2025-07-01', amount: 2, category: 'other', description: marker, payment_method: 'cash' },
        marker,
      );
    const before = await write(first, 'kc-before');
    assert.equal(before.outcome, 'acknowledged', JSON.stringify(before));

    await path.cut();
    // Past the 30 s for which a successful check is reused: /ready really asks Keycloak again.
    const outcomes: string[] = [];
    const deadline = Date.now() + 32_000;
    for (let i = 0; Date.now() < deadline; i++) {
      outcomes.push((await write(first, `kc-during-${i}`)).outcome);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.deepEqual(
      outcomes.filter((o) => o !== 'acknowledged'),
      [],
      'every request served from the cached keys',
    );
    const during = await readiness(first.url);
    assert.equal(during.status, 200, JSON.stringify(during.body));
    assert.deepEqual(during.body.checks, {
      database: 'ok',
      issuer_metadata: 'unreachable',
      jwks: 'unreachable',
    });
    assert.match(JSON.stringify(during.body.degraded), /identity provider unreachable/);
    await readiness(first.url);
    const unavailableLines = (await first.waitForOutput(/identity provider unavailable/))
      .split('\n')
      .filter((l) => l.includes('identity provider unavailable'));
    assert.equal(unavailableLines.length, 1, 'logged once, however often /ready asked');

    // A replica that starts now has no key to verify anything with: not ready, 503 to callers.
    const second = await replica(await freePort());
    const fresh = await readiness(second.url);
    assert.equal(fresh.status, 503, JSON.stringify(fresh.body));
    assert.equal((await write(second, 'kc-fresh')).status, 503);

    await path.open();
    // A failed check is reused for at most 5 s.
    await new Promise((resolve) => setTimeout(resolve, 5_500));
    assert.equal((await readiness(second.url)).status, 200);
    assert.equal((await write(second, 'kc-after')).outcome, 'acknowledged');
    assert.equal((await readiness(first.url)).body.degraded, undefined);
    await first.waitForOutput(/identity provider available again/);
    agent.destroy();

    const stored = await storedMarkers(database.url, 'kc');
    assert.equal(stored.size, outcomes.length + 2);
    assert.ok([...stored.values()].every((n) => n === 1));
    assert.equal(stored.has('kc-fresh'), false);
  });
});
