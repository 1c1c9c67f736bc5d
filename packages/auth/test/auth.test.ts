import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { Hono } from 'hono';
import pg from 'pg';
import {
  API_KEYS_NAMESPACE,
  ApiKeyStore,
  type AuthVariables,
  apiKeyMigrations,
  apiKeyProvider,
  bearerChallenge,
  bearerCredential,
  couldBeAKey,
  holdsAKey,
  looksLikeApiKey,
  noAuthProvider,
  principalFromAuthInfo,
  requireAuth,
  requirePrincipal,
  reverifyAfterSlowBody,
  toAuthInfo,
} from '../src/index.ts';

describe('bearerChallenge', () => {
  test('quotes every value and escapes quotes and backslashes', () => {
    assert.equal(
      bearerChallenge({ realm: 'mcp', error: 'invalid_token', error_description: 'say "hi" \\ bye', scope: undefined }),
      'Bearer realm="mcp", error="invalid_token", error_description="say \\"hi\\" \\\\ bye"',
    );
  });
  test('folds line breaks so a header cannot be split', () => {
    assert.equal(
      bearerChallenge({ error_description: 'a\r\nSet-Cookie: x=1' }),
      'Bearer error_description="a  Set-Cookie: x=1"',
    );
  });
  test('is bare with no parameters', () => {
    assert.equal(bearerChallenge({}), 'Bearer');
  });
});

test('bearerCredential reads only well-formed Bearer credentials', () => {
  const read = (value: string) => bearerCredential(new Request('http://x/', { headers: { authorization: value } }));
  assert.equal(read('Bearer abc.def-ghi_~+/='), 'abc.def-ghi_~+/=');
  assert.equal(read('bearer abc'), 'abc');
  assert.equal(read('Basic dXNlcjpwYXNz'), undefined);
  assert.equal(read('Bearer two words'), undefined);
  assert.equal(read('Bearer '), undefined);
});

test('couldBeAKey: a key whole, in part, mistyped or without its prefix; not a UUID, a key id, an address or a digest', () => {
  const key = `mcpk_${'Zq3vT8kPwX1mN0bR7yLcJ4hG2sD9fA6eU5iO_-tYxWe'}`;
  const body = key.slice(5);
  for (const word of [
    key,
    key.toUpperCase(),
    body,
    body.slice(0, 22),
    body.slice(21),
    `${body.slice(0, 20)}.${body.slice(21)}`,
    `"${key}",`,
    'mcpj_Zq3vT8kPwX1mN0bR7yLcJ4hG2sD9fA6eU5iO_-tYxWe', // the prefix mistyped
  ]) {
    assert.equal(couldBeAKey(word), true, word);
  }
  for (const word of [
    'f81d4fae-7dec-11d0-a765-00a0c91e6bf6',
    'F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6',
    'key_0123456789abcdef',
    'Firstname.Lastname@Example-Company2024.example',
    'Maximilian.Hohenzollern-Sigmaringen@example.com',
    'AdeleV@ContosoPharmaceuticals.onmicrosoft.com',
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    body.slice(0, 19),
  ]) {
    assert.equal(couldBeAKey(word), false, word);
  }
  // Without a digit, a run of 32 mixed-case key characters is hidden, one of 31 is not.
  const letters = 'ZqvTkPwXmNbRyLcJhGsDfAeUiOtYxWeQaBcD';
  assert.equal(couldBeAKey(letters.slice(0, 32)), true, '32 letters');
  assert.equal(couldBeAKey(letters.slice(0, 31)), false, '31 letters');
});

test('holdsAKey: a key as printed and pasted, with its prefix in any case; names and ids are not', () => {
  const body = 'Zq3vT8kPwX1mN0bR7yLcJ4hG2sD9fA6eU5iO_-tYxWe';
  for (const text of ['mcpk_abc', 'laptop MCPK-abc', 'x-mcpk_', body, `laptop ${body}`]) {
    assert.equal(holdsAKey(text), true, text);
  }
  for (const text of ['GitHubActionsProductionDeployKey', 'Christopher-Montgomery-Richardson-Dev', 'mcpkiller']) {
    assert.equal(holdsAKey(text), false, text);
  }
});

test('the principal travels in AuthInfo without the raw credential', () => {
  const info = toAuthInfo({ userId: 'u1', scopes: ['a'], method: 'api_key', clientId: 'key_1' });
  assert.equal(info.token, '[redacted]');
  assert.deepEqual(principalFromAuthInfo(info)?.userId, 'u1');
  assert.throws(() => requirePrincipal(undefined), /authenticated caller/);
});

describe('API keys on a real PostgreSQL server', () => {
  let testDb: TestDatabase;
  let db: Database;
  let store: ApiKeyStore;
  before(async () => {
    testDb = await createTestDatabase();
    db = await openDatabase({ url: testDb.url });
    await migrate(db.pool, API_KEYS_NAMESPACE, apiKeyMigrations);
    store = new ApiKeyStore(db.pool, { touchIntervalMs: 60_000 });
  });
  after(async () => {
    await db?.close();
    await testDb?.drop();
  });

  test('a created key is high-entropy, shown once, verifiable, and stored only as its SHA-256', async () => {
    const { record, secret } = await store.create({
      userId: 'alice',
      name: 'cli',
      scopes: ['expenses:read', 'expenses:read'],
    });
    assert.ok(looksLikeApiKey(secret));
    assert.equal(Buffer.from(secret.slice(5), 'base64url').length, 32);
    assert.deepEqual(record.scopes, ['expenses:read']);
    assert.deepEqual(await store.verify(secret), {
      id: record.id,
      userId: 'alice',
      scopes: ['expenses:read'],
      expiresInMs: null,
    });
    const row = (await db.pool.query('SELECT * FROM api_keys WHERE id = $1', [record.id])).rows[0];
    assert.ok(!JSON.stringify(row).includes(secret.slice(5, 20)));
    const second = await store.create({ userId: 'alice' });
    assert.notEqual(second.secret, secret);
  });

  test('bad input is refused and nothing is stored', async () => {
    const before = (await store.list()).length;
    await assert.rejects(store.create({ userId: '  ' }), /user id/);
    await assert.rejects(store.create({ userId: 'x'.repeat(256) }), /user id/);
    await assert.rejects(store.create({ userId: 'u', scopes: ['has space'] }), /Not a valid scope/);
    await assert.rejects(store.create({ userId: 'u', scopes: ['quote"'] }), /Not a valid scope/);
    await assert.rejects(store.create({ userId: 'u', name: 'n'.repeat(101) }), /name/);
    // The plain-text rule: nothing hidden, something visible.
    await assert.rejects(store.create({ userId: 'al\u200D\u200Dice' }), /user id must not contain/);
    await assert.rejects(store.create({ userId: '\u2800' }), /user id must contain at least one visible character/);
    await assert.rejects(store.create({ userId: 'u', name: 'laptop\uFE00\uFE01' }), /name must not contain/);
    assert.equal((await store.list()).length, before);
  });

  test('revocation applies to the next verify, and a second revoke says there was nothing to revoke', async () => {
    const { record, secret } = await store.create({ userId: 'bob' });
    assert.ok(await store.verify(secret));
    assert.equal(await store.revoke(record.id), true);
    assert.equal(await store.verify(secret), undefined);
    assert.equal(await store.revoke(record.id), false);
    assert.equal(await store.revoke('key_unknown'), false);
    const listed = await store.list({ userId: 'bob' });
    assert.equal(listed.length, 1);
    assert.ok(listed[0]?.revokedAt);
  });

  test('last use is written on first use, then at most once per interval', async () => {
    const { record, secret } = await store.create({ userId: 'dora' });
    assert.equal((await store.list({ userId: 'dora' }))[0]?.lastUsedAt, null);
    await store.verify(secret);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const first = (await db.pool.query('SELECT last_used_at FROM api_keys WHERE id = $1', [record.id])).rows[0]
      .last_used_at;
    assert.ok(first instanceof Date);
    await store.verify(secret);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const second = (await db.pool.query('SELECT last_used_at FROM api_keys WHERE id = $1', [record.id])).rows[0]
      .last_used_at;
    assert.equal(second.getTime(), first.getTime(), 'not rewritten within the interval');
  });

  test('strings not shaped like a key are rejected without a query', async () => {
    assert.equal(await store.verify("' OR 1=1 --"), undefined);
    assert.equal(await store.verify(''), undefined);
  });

  test('the provider behind requireAuth: 401 challenges and the principal on the context', async () => {
    const { record, secret } = await store.create({ userId: 'erin', scopes: ['s1'] });
    const app = new Hono<{ Variables: AuthVariables }>();
    app.use('/p', requireAuth(apiKeyProvider({ store, realm: 'expenses' })));
    app.get('/p', (c) => c.json(c.get('principal')));

    const ok = await app.request('/p', { headers: { authorization: `Bearer ${secret}` } });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { userId: 'erin', scopes: ['s1'], method: 'api_key', clientId: record.id });

    const viaHeader = await app.request('/p', { headers: { 'x-api-key': secret } });
    assert.equal(viaHeader.status, 200);
    const bothSame = await app.request('/p', { headers: { 'x-api-key': secret, authorization: `Bearer ${secret}` } });
    assert.equal(bothSame.status, 200, 'the same key both ways is one credential');
    // Two keys, two users: neither header is taken (RFC 6750 2: one method per request).
    const other = await store.create({ userId: 'mallory', scopes: ['s1', 's2'] });
    const both = await app.request('/p', { headers: { 'x-api-key': other.secret, authorization: `Bearer ${secret}` } });
    assert.equal(both.status, 400);
    assert.match(both.headers.get('www-authenticate') ?? '', /error="invalid_request"/);
    assert.match(((await both.json()) as { error_description: string }).error_description, /not both/);
    // A malformed Bearer header beside the key is a second credential too, not a header to ignore.
    for (const authorization of [`Bearer ${other.secret} junk`, `Bearer ${other.secret}, Bearer ${other.secret}`]) {
      const beside = await app.request('/p', { headers: { 'x-api-key': secret, authorization } });
      assert.equal(beside.status, 400, authorization);
      assert.match(((await beside.json()) as { error_description: string }).error_description, /not both/);
    }

    const none = await app.request('/p');
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="expenses"');
    assert.equal(none.headers.get('cache-control'), 'no-store');

    const basic = await app.request('/p', { headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    assert.equal(basic.status, 401);
    assert.equal(basic.headers.get('www-authenticate'), 'Bearer realm="expenses"', 'another scheme: no error code');
    const malformed = await app.request('/p', { headers: { authorization: 'Bearer two words' } });
    assert.equal(malformed.status, 400);
    assert.match(malformed.headers.get('www-authenticate') ?? '', /error="invalid_request"/);

    const wrong = await app.request('/p', { headers: { authorization: `Bearer ${secret.slice(0, -1)}x` } });
    assert.equal(wrong.status, 401);
    assert.match(wrong.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  test('reverifyAfterSlowBody: a key revoked while its body was on the way is refused; a prompt body is verified once', async () => {
    const { record, secret } = await store.create({ userId: 'gail', scopes: ['s1'] });
    const provider = apiKeyProvider({ store, realm: 'expenses' });
    let verifications = 0;
    // Settled by each verification: a slow body sends its last bytes only after the first one.
    let verified: () => void = () => {};
    const counted = {
      ...provider,
      async verify(credential: string) {
        verifications++;
        const outcome = await provider.verify(credential);
        verified();
        return outcome;
      },
    };
    const app = new Hono<{ Variables: AuthVariables }>();
    app.use('/p', requireAuth(counted));
    app.use('/p', reverifyAfterSlowBody(counted, { maxVerificationAgeMs: 50 }));
    app.post('/p', async (c) => c.json({ user: c.get('principal').userId, body: await c.req.text() }));
    const headers = { authorization: `Bearer ${secret}` };

    const prompt = await app.request('/p', { method: 'POST', headers, body: 'at once' });
    assert.deepEqual(await prompt.json(), { user: 'gail', body: 'at once' });
    assert.equal(verifications, 1, 'a body that arrives at once costs no second verification');

    /**
     * A body whose last bytes come 200 ms after the headers were verified (4 times the age
     * allowed), with `meanwhile` run in between.
     */
    const slowBody = (meanwhile: () => Promise<unknown> = async () => {}) => {
      const headersVerified = new Promise<void>((resolve) => {
        verified = resolve;
      });
      return new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(new TextEncoder().encode('slow '));
          await headersVerified;
          await meanwhile();
          await new Promise((resolve) => setTimeout(resolve, 200));
          controller.enqueue(new TextEncoder().encode('body'));
          controller.close();
        },
      });
    };
    verifications = 0;
    const slow = await app.request('/p', {
      method: 'POST',
      headers,
      body: slowBody(),
      duplex: 'half',
    } as RequestInit);
    assert.deepEqual(await slow.json(), { user: 'gail', body: 'slow body' });
    assert.equal(verifications, 2, 'verified again once the slow body was in');

    verifications = 0;
    const refused = await app.request('/p', {
      method: 'POST',
      headers,
      body: slowBody(() => store.revoke(record.id)),
      duplex: 'half',
    } as RequestInit);
    assert.equal(verifications, 2, 'accepted when the headers came, refused once the body was in');
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });

  test('a key store that cannot be reached gives 503 with Retry-After, not 401 or 500', async () => {
    // A real pool pointed at a port where nothing listens: the error pg really raises.
    const unreachable = new pg.Pool({ connectionString: 'postgres://nobody:none@127.0.0.1:1/none' });
    try {
      const app = new Hono<{ Variables: AuthVariables }>();
      app.use('/p', requireAuth(apiKeyProvider({ store: new ApiKeyStore(unreachable) })));
      app.get('/p', (c) => c.text('in'));
      const { secret } = await store.create({ userId: 'frank' });
      const response = await app.request('/p', { headers: { authorization: `Bearer ${secret}` } });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get('retry-after'), '5');
      assert.equal(((await response.json()) as { error: string }).error, 'temporarily_unavailable');
    } finally {
      await unreachable.end();
    }
  });

  test('noAuthProvider acts as its one user', async () => {
    const outcome = await noAuthProvider({ userId: 'local' }).authenticate(new Request('http://x/'));
    assert.deepEqual(outcome, { ok: true, principal: { userId: 'local', scopes: [], method: 'none' } });
    // The one principal serves every request: a tool cannot change it for the next.
    assert.ok(outcome.ok);
    assert.throws(() => (outcome.principal.scopes as string[]).push('expenses:admin'), TypeError);
    assert.throws(() => {
      (outcome.principal as { userId: string }).userId = 'mallory';
    }, TypeError);
  });
});
