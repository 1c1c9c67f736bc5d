import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import {
  KEYCLOAK_JANITOR_NAMESPACE,
  type KeycloakClientJanitorOptions,
  keycloakClientJanitor,
  keycloakJanitorMigrations,
} from '../src/index.ts';

/**
 * The janitor's own bookkeeping, on a real PostgreSQL (TEST_DATABASE_URL), against a stand-in
 * for Keycloak's admin API: the paging and the clock are what is tested here. A real Keycloak,
 * flooded, is the attacks-realm test's.
 */
let testDb: TestDatabase;
let database: Database;

before(async () => {
  testDb = await createTestDatabase();
  database = await openDatabase({ url: testDb.url });
  await migrate(database.pool, KEYCLOAK_JANITOR_NAMESPACE, keycloakJanitorMigrations);
});

after(async () => {
  await database?.close();
  await testDb?.drop();
});

interface StandInClient {
  id: string;
  clientId: string;
  consentRequired: boolean;
  attributes?: Record<string, string>;
  sessions?: number;
  /** Users with a session of the client (as many sessions as users, when `sessions` is not set). */
  users?: string[];
}

/** Keycloak's admin API as the janitor uses it: the token, pages of clients, sessions and their users, DELETE. */
function standInKeycloak(clients: StandInClient[]) {
  const requests: string[] = [];
  const fetch = async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(String(input));
    const method = init?.method ?? 'GET';
    requests.push(`${method} ${url.pathname}${url.search}`);
    if (url.pathname.endsWith('/protocol/openid-connect/token')) return Response.json({ access_token: 'admin-token' });
    const listing = /\/admin\/realms\/mcp\/clients$/.exec(url.pathname);
    if (listing && method === 'GET') {
      const first = Number(url.searchParams.get('first'));
      const max = Number(url.searchParams.get('max'));
      return Response.json(clients.slice(first, first + max));
    }
    const one = /\/admin\/realms\/mcp\/clients\/([^/]+)(\/(offline-)?(session-count|user-sessions|sessions))?$/.exec(
      url.pathname,
    );
    const client = clients.find((candidate) => candidate.id === one?.[1]);
    if (!client) return new Response(null, { status: 404 });
    if (one?.[4] === 'session-count') {
      return Response.json({ count: one[3] ? 0 : (client.sessions ?? client.users?.length ?? 0) });
    }
    if (one?.[4]) return Response.json(one[3] ? [] : (client.users ?? []).map((userId) => ({ userId })));
    if (method === 'DELETE') {
      clients.splice(clients.indexOf(client), 1);
      return new Response(null, { status: 204 });
    }
    return new Response(null, { status: 405 });
  };
  return { fetch, requests };
}

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

/** The janitor on the test's database, calling `fetch` for Keycloak. */
function janitorWith(
  fetch: typeof globalThis.fetch,
  clock: { now: number } = { now: Date.now() },
  extra: Partial<KeycloakClientJanitorOptions> = {},
) {
  return keycloakClientJanitor({
    baseUrl: 'http://keycloak.test',
    realm: 'mcp',
    pool: database.pool,
    clientId: 'mcp-client-janitor',
    clientSecret: 'secret',
    intervalSeconds: 0,
    // Every pass as under a flood: the 15-minute grace these tests time (the calm one has its own test).
    pressureAt: 0,
    fetch,
    now: () => clock.now,
    ...extra,
  });
}

function janitorFor(clients: StandInClient[], clock: { now: number }) {
  const keycloak = standInKeycloak(clients);
  return { janitor: janitorWith(keycloak.fetch as typeof fetch, clock), requests: keycloak.requests };
}

test('a registrant cannot keep its clients from the janitor with attributes of its own', async () => {
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const clients: StandInClient[] = [
    // What the `default` registration provider lets anyone write on the client it registers.
    { id: 'a', clientId: 'squatter', consentRequired: true, attributes: { 'mcp.janitor.last-used': '99999999999999' } },
    { id: 'b', clientId: 'squatter-2', consentRequired: true, attributes: { 'mcp.janitor.first-seen': '1e300' } },
    { id: 'c', clientId: 'honest', consentRequired: true },
    { id: 'd', clientId: 'in-use', consentRequired: true, sessions: 1 },
    { id: 'e', clientId: 'vscode-mcp-client', consentRequired: false },
  ];
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const { janitor, requests } = janitorFor(clients, clock);
  assert.deepEqual(await janitor.runOnce(), { inspected: 4, removed: [] }, 'first sight: nothing removed yet');
  clock.now += 16 * MINUTE;
  const second = await janitor.runOnce();
  assert.deepEqual(second.removed.sort(), ['honest', 'squatter', 'squatter-2']);
  assert.deepEqual(
    clients.map((client) => client.clientId),
    ['in-use', 'vscode-mcp-client'],
  );
  assert.ok(!requests.some((request) => request.startsWith('PUT')), 'nothing is written on the clients');
  const { rows } = await database.pool.query<{ id: string }>('SELECT id FROM keycloak_janitor_clients');
  assert.deepEqual(
    rows.map((row) => row.id),
    ['d'],
    'the records of removed clients go with them',
  );
});

test('a client never used gets a day while registration is calm, 15 minutes under a flood', async () => {
  // Its MCP client keeps the client id and goes to the login with it once removed, where the
  // realm says "Client not found": a sign-in left half done must not cost that within minutes.
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const clients: StandInClient[] = [
    { id: 'a', clientId: 'left-half-done', consentRequired: true },
    { id: 'b', clientId: 'in-use', consentRequired: true, sessions: 1 },
  ];
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const events: string[] = [];
  const keycloak = standInKeycloak(clients);
  const calm = janitorWith(keycloak.fetch as typeof fetch, clock, {
    pressureAt: 3,
    onEvent: (event) => events.push(event),
  });
  await calm.runOnce();
  clock.now += 16 * MINUTE;
  assert.deepEqual((await calm.runOnce()).removed, [], 'calm: kept past 15 minutes');
  clock.now += DAY;
  assert.deepEqual((await calm.runOnce()).removed, ['left-half-done'], 'removed a day after');
  assert.ok(!events.includes('registration_pressure'));

  // A flood: three clients out of use (two new, and one more once the first is seen).
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  clients.push(
    { id: 'c', clientId: 'flood-1', consentRequired: true },
    { id: 'd', clientId: 'flood-2', consentRequired: true },
    { id: 'e', clientId: 'flood-3', consentRequired: true },
  );
  await calm.runOnce();
  clock.now += 16 * MINUTE;
  assert.deepEqual((await calm.runOnce()).removed.sort(), ['flood-1', 'flood-2', 'flood-3']);
  assert.ok(events.includes('registration_pressure'));
  assert.deepEqual(
    clients.map((client) => client.clientId),
    ['in-use'],
  );
});

test('a realm near its Max Clients counts as flooded, however few clients are out of use', async () => {
  // 150 clients in use (offline sessions keep them for weeks) and a flood of 35: out of use
  // stays under 50, but the realm is full at 200.
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const clients: StandInClient[] = [
    ...Array.from({ length: 150 }, (_, i) => ({
      id: `u${i}`,
      clientId: `used-${i}`,
      consentRequired: true,
      sessions: 1,
    })),
    ...Array.from({ length: 35 }, (_, i) => ({ id: `f${i}`, clientId: `flood-${i}`, consentRequired: true })),
  ];
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const keycloak = standInKeycloak(clients);
  // Shares are the unit test above's: here every client is some user's one.
  const janitor = janitorWith(keycloak.fetch as typeof fetch, clock, { pressureAt: 50, maxClientsPerUser: 1000 });
  await janitor.runOnce();
  clock.now += 16 * MINUTE;
  const { removed } = await janitor.runOnce();
  assert.equal(removed.length, 35, 'the flood goes after the 15 minutes');
  assert.ok(removed.every((clientId) => clientId.startsWith('flood-')));
  // Far from the limit, the same few clients out of use wait a day.
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const few: StandInClient[] = Array.from({ length: 35 }, (_, i) => ({
    id: `g${i}`,
    clientId: `half-${i}`,
    consentRequired: true,
  }));
  const calm = janitorWith(standInKeycloak(few).fetch as typeof fetch, clock, { pressureAt: 50 });
  await calm.runOnce();
  clock.now += 16 * MINUTE;
  assert.deepEqual((await calm.runOnce()).removed, []);
});

test('an admin answer that is not JSON fails the pass without quoting it: the answers hold tokens and client secrets', async () => {
  const truncated: typeof fetch = async (url) =>
    String(url).includes('/protocol/openid-connect/token')
      ? // Not JSON from its first character: V8's message would quote its start.
        new Response('admin-token-secret-part; expires_in=60', {
          headers: { 'content-type': 'application/json' },
        })
      : new Response('[]', { headers: { 'content-type': 'application/json' } });
  await assert.rejects(janitorWith(truncated).runOnce(), (error: Error) => {
    assert.match(error.message, /token answer: the answer is not JSON/);
    assert.doesNotMatch(`${error.message} ${error.stack}`, /admin-toke/);
    return true;
  });
  const listing: typeof fetch = async (url) =>
    String(url).includes('/protocol/openid-connect/token')
      ? Response.json({ access_token: 't', expires_in: 60 })
      : new Response('client-secret-part,x', {
          headers: { 'content-type': 'application/json' },
        });
  await assert.rejects(janitorWith(listing).runOnce(), (error: Error) => {
    assert.match(error.message, /GET \/clients.*the answer is not JSON/);
    assert.doesNotMatch(`${error.message} ${error.stack}`, /client-sec/);
    return true;
  });
});

test('a client a pass did not see (a listing shifted by a deletion elsewhere) keeps its record; one gone for good loses it once due', async () => {
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const used: StandInClient = { id: 'm', clientId: 'missed', consentRequired: true, sessions: 1 };
  const clients = [used];
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const { janitor } = janitorFor(clients, clock);
  await janitor.runOnce(); // in use: its last use recorded
  clients.splice(0, 1); // not in this pass's listing
  clock.now += DAY;
  await janitor.runOnce();
  clients.push(used);
  used.sessions = 0;
  clock.now += 16 * MINUTE;
  await janitor.runOnce();
  clock.now += 16 * MINUTE;
  assert.deepEqual((await janitor.runOnce()).removed, [], 'used a day ago: kept, not taken for a new client');
  // Gone for good: its record goes once it would have been due.
  clients.splice(0, 1);
  clock.now += 8 * DAY;
  await janitor.runOnce();
  const { rows } = await database.pool.query('SELECT id FROM keycloak_janitor_clients');
  assert.deepEqual(rows, []);
});

test('a client once in use is removed after a week without a session, and not before', async () => {
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const used: StandInClient = { id: 'u', clientId: 'used', consentRequired: true, sessions: 1 };
  const clients = [used];
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const { janitor } = janitorFor(clients, clock);
  await janitor.runOnce();
  used.sessions = 0;
  clock.now += 6 * DAY;
  assert.deepEqual((await janitor.runOnce()).removed, [], 'idle for six days: kept');
  clock.now += 2 * DAY;
  assert.deepEqual((await janitor.runOnce()).removed, ['used']);
});

test('a user keeps at most her share of clients in use: the ones first seen earliest; the rest go after the grace', async () => {
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const clients: StandInClient[] = [
    { id: 'a1', clientId: 'alice-real', consentRequired: true, users: ['alice'] },
    { id: 'a2', clientId: 'alice-second', consentRequired: true, users: ['alice'] },
  ];
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const events: string[] = [];
  const janitor = janitorWith(standInKeycloak(clients).fetch as typeof fetch, clock, {
    maxClientsPerUser: 2,
    onEvent: (event) => events.push(event),
  });
  await janitor.runOnce();
  clock.now += MINUTE;
  // Later: she signs in to a flood of her own clients, and bob shares one of them.
  clients.push(
    { id: 'f1', clientId: 'flood-1', consentRequired: true, users: ['alice'] },
    { id: 'f2', clientId: 'flood-2', consentRequired: true, users: ['alice', 'bob'] },
    { id: 'f3', clientId: 'flood-3', consentRequired: true, users: ['alice'] },
  );
  assert.deepEqual((await janitor.runOnce()).removed, [], 'within the grace');
  assert.ok(events.includes('clients_beyond_user_share'));
  clock.now += 16 * MINUTE;
  const { removed } = await janitor.runOnce();
  assert.deepEqual(removed.sort(), ['flood-1', 'flood-3']);
  assert.deepEqual(
    clients.map((client) => client.clientId),
    ['alice-real', 'alice-second', 'flood-2'],
    "her two first clients, and the one within bob's share",
  );
});

test('one pass removes every due client, however many pages they fill', async () => {
  await database.pool.query('TRUNCATE keycloak_janitor_clients');
  const clients: StandInClient[] = Array.from({ length: 250 }, (_, index) => ({
    id: `flood-${index}`,
    clientId: `flood-${index}`,
    consentRequired: true,
  }));
  const clock = { now: Date.parse('2026-12-05T12:00:00Z') };
  const { janitor } = janitorFor(clients, clock);
  assert.equal((await janitor.runOnce()).inspected, 250);
  clock.now += 16 * MINUTE;
  const { removed } = await janitor.runOnce();
  assert.equal(removed.length, 250, 'deleting while paging would skip as many as it deleted');
  assert.equal(clients.length, 0);
});

test('an admin answer past 4 MB fails the pass, read no further than the limit', async () => {
  let pulled = 0;
  const huge = () =>
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= 16 * 1024 * 1024) return controller.close();
        pulled += 64 * 1024;
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x20)); // JSON whitespace
      },
    });
  const janitor = janitorWith(async (input) =>
    String(input).endsWith('/protocol/openid-connect/token')
      ? Response.json({ access_token: 'admin-token' })
      : new Response(huge(), { headers: { 'content-type': 'application/json' } }),
  );
  await assert.rejects(janitor.runOnce(), /GET \/clients\?first=0&max=100 is larger than 4194304 bytes/);
  assert.ok(pulled < 5 * 1024 * 1024, `read ${pulled} bytes`);
});
