import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase, tcpRelayTo } from '@mcp-auth-stack/testing';
import pg from 'pg';
import { API_KEYS_NAMESPACE, ApiKeyCache, ApiKeyStore, apiKeyMigrations, apiKeyProvider } from '../src/index.ts';

// Real PostgreSQL (TEST_DATABASE_URL): LISTEN/NOTIFY and the trigger are what is tested.
const MAX_STALENESS_MS = 400;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let testDb: TestDatabase;
let database: Database;
let store: ApiKeyStore;
/** Another connection, standing for another process (`pnpm keys revoke`, psql). */
let other: pg.Pool;
let otherStore: ApiKeyStore;

before(async () => {
  testDb = await createTestDatabase();
  database = await openDatabase({ url: testDb.url });
  await migrate(database.pool, API_KEYS_NAMESPACE, apiKeyMigrations);
  store = new ApiKeyStore(database.pool);
  other = new pg.Pool({ connectionString: testDb.url, max: 2 });
  other.on('error', () => {});
  otherStore = new ApiKeyStore(other);
});

after(async () => {
  await other?.end();
  await database?.close();
  await testDb?.drop();
});

function newCache(
  options: { newClient?: () => pg.Client; events?: string[]; details?: Record<string, unknown>[] } = {},
) {
  return new ApiKeyCache({
    store,
    newClient: options.newClient ?? (() => database.dedicatedClient?.() as pg.Client),
    maxStalenessMs: MAX_STALENESS_MS,
    maxReconnectDelayMs: 250,
    onEvent: (event, details) => {
      options.events?.push(event);
      options.details?.push(details);
    },
  });
}

/** A TCP relay to the test database (`tcpRelayTo`). */
const relayToDatabase = (options: Parameters<typeof tcpRelayTo>[1] = {}) => tcpRelayTo(testDb.url, options);

/**
 * A relay that, as a connection pooler does, gives its clients a cancel key of its own: the
 * process id in the server's BackendKeyData is replaced.
 */
function poolerLikeRelay(): Promise<{ url: string; close: () => Promise<void> }> {
  // Up to the first ReadyForQuery ('Z'), server messages are read whole: a type byte, a length
  // that counts itself, the body. BackendKeyData ('K') is the process id, the secret. One
  // connection at a time is enough here (the listener's).
  let starting = true;
  let pending = Buffer.alloc(0);
  return relayToDatabase({
    fromServer: (bytes, toClient) => {
      if (!starting) return toClient(bytes);
      pending = Buffer.concat([pending, bytes]);
      while (starting && pending.length >= 5 && pending.length >= 1 + pending.readInt32BE(1)) {
        const message = pending.subarray(0, 1 + pending.readInt32BE(1));
        pending = pending.subarray(message.length);
        if (message.readUInt8(0) === 0x4b) message.writeInt32BE(1, 5); // pid 1: never a backend
        if (message.readUInt8(0) === 0x5a) starting = false;
        toClient(message);
      }
      if (!starting && pending.length > 0) toClient(pending);
    },
  });
}

async function until(condition: () => boolean, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Polls `secret` from just after a revocation's commit until `MAX_STALENESS_MS` have passed: a
 * call that starts after that must see the revocation.
 */
async function assertRefusedWithinBound(cache: ApiKeyCache, secret: string): Promise<void> {
  const revokedAt = performance.now();
  for (;;) {
    const started = performance.now();
    const key = await cache.verify(secret);
    if (started - revokedAt >= MAX_STALENESS_MS) {
      assert.equal(key, undefined, `still accepted ${Math.round(started - revokedAt)} ms after revocation`);
      return;
    }
    await sleep(25);
  }
}

/** After a lost listener: it listens again on a new session (`check` then), and serves from memory again. */
async function assertListensAgain(cache: ApiKeyCache, events: string[], userId: string, check?: () => void) {
  await until(() => events.filter((e) => e === 'listening').length === 2 && cache.serving, 'the reconnection');
  check?.();
  const again = await store.create({ userId });
  await cache.verify(again.secret);
  const hits = cache.stats.hits;
  await cache.verify(again.secret);
  assert.equal(cache.stats.hits, hits + 1, 'serving from memory again');
}

/** Without a listener to trust: each call asks the database, and a revocation applies to the very next one. */
async function assertEveryKeyFromTheDatabase(cache: ApiKeyCache, userId: string): Promise<void> {
  const { record, secret } = await store.create({ userId });
  for (let i = 0; i < 3; i++) assert.equal((await cache.verify(secret))?.id, record.id);
  assert.deepEqual(cache.stats, { hits: 0, misses: 3, entries: 0 });
  assert.ok(await otherStore.revoke(record.id));
  assert.equal(await cache.verify(secret), undefined, 'the very next call sees the revocation');
}

describe('ApiKeyCache on PostgreSQL', () => {
  test('serves a verified key from memory: a change the trigger does not announce goes unseen', async () => {
    const cache = newCache();
    await cache.start();
    try {
      assert.equal(cache.serving, true);
      const { record, secret } = await store.create({ userId: 'alice', scopes: ['expenses:read'] });
      assert.deepEqual(await cache.verify(secret), {
        id: record.id,
        userId: 'alice',
        scopes: ['expenses:read'],
        expiresInMs: null,
      });
      assert.deepEqual(await cache.verify(secret), {
        id: record.id,
        userId: 'alice',
        scopes: ['expenses:read'],
        expiresInMs: null,
      });
      assert.deepEqual(cache.stats, { hits: 1, misses: 1, entries: 1 });
      // Without the trigger's NOTIFY the revocation is invisible to the cache: proof that the
      // hit came from memory, and that the notification is what withdraws a key.
      await other.query('ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed');
      try {
        assert.ok(await otherStore.revoke(record.id));
        await sleep(MAX_STALENESS_MS * 2);
        assert.equal((await cache.verify(secret))?.id, record.id);
      } finally {
        await other.query('ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed');
      }
      await other.query(`SELECT pg_notify('api_keys_changed', $1)`, [record.id]);
      await sleep(MAX_STALENESS_MS);
      assert.equal(await cache.verify(secret), undefined);
      assert.equal(await store.verify(secret), undefined);
    } finally {
      await cache.close();
    }
  });

  test("a cached key's principal cannot be changed by a tool for the requests after it", async () => {
    const cache = newCache();
    await cache.start();
    try {
      const { secret } = await store.create({ userId: 'alice', scopes: ['expenses:read'] });
      const provider = apiKeyProvider({ store: cache });
      const first = await provider.verify(secret);
      assert.ok(first.ok);
      assert.throws(() => (first.principal.scopes as string[]).push('expenses:admin'), TypeError);
      const second = await provider.verify(secret);
      assert.ok(second.ok);
      assert.deepEqual(second.principal.scopes, ['expenses:read']);
      assert.equal(cache.stats.hits, 1, 'the second came from memory');
    } finally {
      await cache.close();
    }
  });

  test('a revocation committed by another connection applies within maxStalenessMs', async () => {
    const cache = newCache();
    await cache.start();
    try {
      const { record, secret } = await store.create({ userId: 'bob' });
      await cache.verify(secret);
      assert.equal((await cache.verify(secret))?.id, record.id);
      assert.equal(cache.stats.hits, 1, 'the second call was a hit');
      assert.ok(await otherStore.revoke(record.id));
      await assertRefusedWithinBound(cache, secret);
      // Changing a key's scopes is announced too: the cached scopes are not kept.
      const second = await store.create({ userId: 'bob', scopes: ['expenses:read', 'expenses:write'] });
      await cache.verify(second.secret);
      await other.query(`UPDATE api_keys SET scopes = '{expenses:read}' WHERE id = $1`, [second.record.id]);
      await sleep(MAX_STALENESS_MS);
      assert.deepEqual((await cache.verify(second.secret))?.scopes, ['expenses:read']);
    } finally {
      await cache.close();
    }
  });

  test('a key made to expire stops working then, from memory too, and a shorter expiry set by hand is announced', async () => {
    const cache = newCache();
    await cache.start();
    try {
      const brief = await store.create({ userId: 'ida', expiresInSeconds: 2 });
      assert.match(brief.record.expiresAt ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      assert.equal((await cache.verify(brief.secret))?.id, brief.record.id);
      assert.equal((await cache.verify(brief.secret))?.id, brief.record.id);
      assert.equal(cache.stats.hits, 1, 'served from memory until then');
      await until(() => Date.now() > Date.parse(brief.record.expiresAt as string) + 1000, 'the expiry');
      assert.equal(await cache.verify(brief.secret), undefined, 'not served from memory past its expiry');
      assert.equal(await store.verify(brief.secret), undefined);

      // Cached for minutes; an administrator ends it now in psql: announced like a revocation.
      const long = await store.create({ userId: 'ida', expiresInSeconds: 86_400 });
      await cache.verify(long.secret);
      await other.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [long.record.id]);
      await assertRefusedWithinBound(cache, long.secret);
      assert.equal(
        await store.countActive(),
        (await store.list()).filter((key) => !key.revokedAt && !key.expiresAt).length,
      );
    } finally {
      await cache.close();
    }
  });

  test('a slow lookup does not lengthen a key past its expiry in memory', async () => {
    // The database measures the time left while it answers; the answer takes 2 s to arrive, so
    // the check just past the expiry comes well before the end the old code gave the entry.
    class SlowStore extends ApiKeyStore {
      override async verify(secret: string) {
        const key = await super.verify(secret);
        await sleep(2_000);
        return key;
      }
    }
    const cache = new ApiKeyCache({
      store: new SlowStore(database.pool),
      newClient: () => database.dedicatedClient?.() as pg.Client,
      maxStalenessMs: MAX_STALENESS_MS,
    });
    try {
      await cache.start();
      const brief = await store.create({ userId: 'ida', expiresInSeconds: 3 });
      const { rows } = await other.query(
        'SELECT extract(epoch FROM expires_at) * 1000 AS at FROM api_keys WHERE id = $1',
        [brief.record.id],
      );
      const expiresAt = Number(rows[0].at);
      assert.equal((await cache.verify(brief.secret))?.id, brief.record.id);
      assert.equal(cache.stats.entries, 1, 'the key is in memory');
      await until(() => Date.now() > expiresAt + 100, 'just past the expiry');
      assert.equal(cache.serving, true, 'entries are served now');
      assert.equal(await cache.verify(brief.secret), undefined, 'served from memory after its expiry');
      assert.equal(cache.stats.hits, 0);
    } finally {
      await cache.close();
    }
  });

  test("with this process's clock 10 s behind the database's, a key is still not served from memory past its expiry", async () => {
    const realNow = Date.now;
    Date.now = () => realNow() - 10_000;
    const cache = newCache();
    try {
      await cache.start();
      const brief = await store.create({ userId: 'ida', expiresInSeconds: 2 });
      await cache.verify(brief.secret);
      assert.equal((await cache.verify(brief.secret))?.id, brief.record.id);
      assert.equal(cache.stats.hits, 1);
      await until(() => realNow() > Date.parse(brief.record.expiresAt as string) + 1000, 'the expiry');
      assert.equal(await cache.verify(brief.secret), undefined);
    } finally {
      Date.now = realNow;
      await cache.close();
    }
  });

  test('a lifetime that is not a whole number of seconds from 1 to ten years is refused, nothing stored', async () => {
    const before = (await store.list()).length;
    for (const expiresInSeconds of [0, -1, 1.5, Number.NaN, 10 * 366 * 86_400 + 1]) {
      await assert.rejects(
        store.create({ userId: 'ida', expiresInSeconds }),
        /whole number of seconds/,
        String(expiresInSeconds),
      );
    }
    assert.equal((await store.list()).length, before);
  });

  test('keys removed with TRUNCATE are withdrawn too (a statement trigger: no row trigger fires)', async () => {
    const cache = newCache();
    await cache.start();
    try {
      const { secret } = await store.create({ userId: 'carol' });
      await cache.verify(secret);
      assert.ok(await cache.verify(secret), 'cached');
      await other.query('TRUNCATE api_keys');
      await sleep(MAX_STALENESS_MS);
      assert.equal(await cache.verify(secret), undefined);
    } finally {
      await cache.close();
    }
  });

  test('recording use (last_used_at) is not announced, so busy keys stay cached', async () => {
    const cache = newCache();
    await cache.start();
    try {
      const { record, secret } = await store.create({ userId: 'dora' });
      await cache.verify(secret);
      await other.query('UPDATE api_keys SET last_used_at = now() WHERE id = $1', [record.id]);
      await sleep(MAX_STALENESS_MS / 2);
      await cache.verify(secret);
      assert.equal(cache.stats.hits, 1);
    } finally {
      await cache.close();
    }
  });

  test('without a listening connection nothing is served from memory (fail safe)', async () => {
    const events: string[] = [];
    // A port nothing listens on: the listener can never connect.
    const cache = newCache({
      events,
      newClient: () => new pg.Client({ host: '127.0.0.1', port: 9, user: 'x', connectionTimeoutMillis: 500 }),
    });
    await cache.start();
    try {
      assert.equal(cache.serving, false);
      assert.deepEqual(events, ['listener_lost']);
      await assertEveryKeyFromTheDatabase(cache, 'erin');
    } finally {
      await cache.close();
    }
  });

  test('a lost listening connection empties the cache, which reconnects and serves again', async () => {
    const events: string[] = [];
    const cache = newCache({ events });
    await cache.start();
    try {
      const { record, secret } = await store.create({ userId: 'finn' });
      await cache.verify(secret);
      await cache.verify(secret);
      assert.equal(cache.stats.entries, 1);
      // What a database restart or a network cut does to the listening session.
      const { rowCount } = await other.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE '%pg_listening_channels()%' AND pid <> pg_backend_pid()`,
      );
      assert.equal(rowCount, 1, 'found the listening session');
      await until(() => events.includes('listener_lost'), 'the loss to be noticed');
      assert.equal(cache.serving, false);
      assert.equal(cache.stats.entries, 0, 'emptied: notifications may have been missed');
      // Revoked while no one listened: no notification will ever reach this cache.
      assert.ok(await otherStore.revoke(record.id));
      assert.equal(await cache.verify(secret), undefined);
      await assertListensAgain(cache, events, 'finn');
    } finally {
      await cache.close();
    }
  });

  test('a listening session that stops listening stops serving from memory within maxStalenessMs', async () => {
    // Behind a transaction-pooling pooler (PgBouncer, Azure's built-in one on 6432) the LISTEN
    // stays on one server session while the heartbeats may be answered by others: they answer,
    // but no notification ever comes. The same on a direct connection: the listening session
    // stops listening (UNLISTEN) and goes on answering.
    const events: string[] = [];
    const listeners: pg.Client[] = [];
    const cache = newCache({
      events,
      newClient: () => {
        const client = database.dedicatedClient?.() as pg.Client;
        listeners.push(client);
        return client;
      },
    });
    await cache.start();
    try {
      const { record, secret } = await store.create({ userId: 'ivy' });
      await cache.verify(secret);
      await cache.verify(secret);
      assert.equal(cache.stats.hits, 1, 'served from memory while the session listens');
      await listeners[0]?.query('UNLISTEN *');
      assert.ok(await otherStore.revoke(record.id));
      await assertRefusedWithinBound(cache, secret);
      assert.ok(events.includes('listener_lost'), 'a session that does not listen counts as a lost listener');
      await assertListensAgain(cache, events, 'ivy', () => assert.equal(listeners.length, 2));
    } finally {
      await cache.close();
    }
  });

  test('a listening connection through a connection pooler is refused: nothing is served from memory', async () => {
    // PgBouncer in transaction mode (Azure's built-in one on 6432) runs the LISTEN on one server
    // session, lends that session to other clients between transactions and drops what it
    // receives while not lent ("got packet 'A' from server when not linked"), yet every
    // heartbeat is answered, even by that very session, which still listens. What gives such a
    // pooler away is the cancel key it hands its clients: its process id is not the server's.
    const relay = await poolerLikeRelay();
    const events: string[] = [];
    const details: Record<string, unknown>[] = [];
    let connects = 0;
    const cache = newCache({
      events,
      details,
      newClient: () => {
        connects++;
        return new pg.Client({ connectionString: relay.url });
      },
    });
    await cache.start();
    try {
      assert.equal(cache.serving, false, 'a listener behind a pooler is not trusted');
      assert.deepEqual(events, ['listener_refused'], 'said once, not retried (it would be refused again)');
      assert.match(String(details[0]?.message), /connection pooler/);
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.equal(connects, 1, 'no reconnection');
      await assertEveryKeyFromTheDatabase(cache, 'jo');
    } finally {
      await cache.close();
      await relay.close();
    }
  });

  test('a listener that stalls without closing stops serving from memory within maxStalenessMs', async () => {
    // The listening session goes through a relay that can stop passing bytes, as a network
    // partition does: no error, no close, no notification, no heartbeat answer.
    let stalled = false;
    const relay = await relayToDatabase({ passes: () => !stalled });
    // A larger bound than the other tests: the stalled heartbeat times out only after about
    // twice this, and the check below must come well before that.
    const maxStalenessMs = 2_000;
    const cache = new ApiKeyCache({
      store,
      newClient: () => new pg.Client({ connectionString: relay.url }),
      maxStalenessMs,
    });
    await cache.start();
    try {
      const { record, secret } = await store.create({ userId: 'hal' });
      await cache.verify(secret);
      await cache.verify(secret);
      assert.equal(cache.stats.hits, 1, 'served from memory while the listener answers');
      stalled = true;
      assert.ok(await otherStore.revoke(record.id));
      const revokedAt = performance.now();
      await sleep(maxStalenessMs + 50);
      // The heartbeat in flight at the stall was sent up to a quarter of the bound before it, and
      // times out twice the bound after it was sent: from 1.75 × the bound on, a refusal could be
      // that timeout's and not the staleness bound's.
      assert.ok(performance.now() - revokedAt < 1.75 * maxStalenessMs, 'checked before the heartbeat timed out');
      assert.equal(await cache.verify(secret), undefined, 'the revocation applies although no notification came');
      assert.equal(cache.serving, false);
    } finally {
      await relay.close();
      await cache.close();
    }
  });

  test('a lookup in flight when a notification arrives is not stored', async () => {
    let release: (() => void) | undefined;
    const slowStore = {
      verify: async (secret: string) => {
        const key = await store.verify(secret);
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return key;
      },
      recordUse: () => {},
    };
    const cache = new ApiKeyCache({
      store: slowStore,
      newClient: () => database.dedicatedClient?.() as pg.Client,
      maxStalenessMs: MAX_STALENESS_MS,
    });
    await cache.start();
    try {
      const { record, secret } = await store.create({ userId: 'gus' });
      const pending = cache.verify(secret);
      await until(() => release !== undefined, 'the lookup to start');
      // The key is revoked while its (earlier) lookup is still on its way back.
      assert.ok(await otherStore.revoke(record.id));
      await sleep(MAX_STALENESS_MS);
      release?.();
      assert.equal((await pending)?.id, record.id, 'the stale answer goes to the request that asked');
      assert.equal(cache.stats.entries, 0, 'but it is not kept');
    } finally {
      await cache.close();
    }
  });
});
