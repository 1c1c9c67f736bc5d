import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Database } from '@mcp-auth-stack/database';
import { Hono } from 'hono';
import {
  type AuthorizationPassThroughOptions,
  authorizationPassThrough,
  forgetPassThroughClients,
} from '../src/index.ts';
import { openPassThroughDatabase } from './passthrough-database.ts';

/**
 * The pass-through's `/authorize` stores a pending login (up to 8 KB of the client's state)
 * until the callback or its expiry, for anyone who names a client registered through the
 * facade: a per-address limit keeps one such client id from filling the database.
 * Real PostgreSQL (TEST_DATABASE_URL).
 */
const upstream = 'http://idp.test/realms/mcp';
const REDIRECT = 'http://127.0.0.1:33418/callback';
let database: Database;
let close: () => Promise<void> = async () => {};

before(async () => {
  ({ database, close } = await openPassThroughDatabase());
});

after(async () => {
  await close();
});

/** The pass-through on the test database, with the stand-in Keycloak at `upstream`. */
const passThroughWith = (options: Partial<AuthorizationPassThroughOptions> = {}) =>
  authorizationPassThrough({
    issuer: 'http://localhost:8000',
    upstreamIssuer: upstream,
    pool: database.pool,
    upstreamAuthorizationEndpoint: async () => `${upstream}/protocol/openid-connect/auth`,
    upstreamTokenEndpoint: async () => `${upstream}/protocol/openid-connect/token`,
    ...options,
  });

const pending = async () =>
  (await database.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM passthrough_authorizations')).rows[0]?.n;

test('logins started per address are limited: 429 with Retry-After, nothing stored; other addresses go on', async () => {
  const passThrough = passThroughWith({
    loginsPerMinute: 3,
    trustForwardedFor: true,
  });
  await passThrough.recordClient('facade-client', [REDIRECT]);
  const app = new Hono();
  passThrough.mount(app);
  const authorize = (address: string) =>
    app.request(
      `/authorize?${new URLSearchParams({
        client_id: 'facade-client',
        redirect_uri: REDIRECT,
        response_type: 'code',
        state: 'x'.repeat(4000),
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
        code_challenge_method: 'S256',
      })}`,
      { headers: { 'x-forwarded-for': address } },
    );

  for (let i = 0; i < 3; i++) {
    const started = await authorize('203.0.113.7');
    assert.equal(started.status, 302);
    assert.ok(started.headers.get('location')?.startsWith(`${upstream}/protocol/openid-connect/auth?`));
  }
  assert.equal(await pending(), 3);
  const refused = await authorize('203.0.113.7');
  assert.equal(refused.status, 429);
  const retryAfter = Number(refused.headers.get('retry-after'));
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: the rest of the minute (${retryAfter})`);
  assert.match(await refused.text(), /Too many sign-ins from this address/);
  assert.equal(await pending(), 3, 'nothing stored for the refused one');
  assert.equal((await authorize('198.51.100.20')).status, 302, 'another address is not limited by the first');
  assert.equal(await pending(), 4);
});

test('HEAD on /authorize or the callback (a link checker, an unfurler) stores nothing and uses no login up', async () => {
  const { passThrough, forwarded, app, exchange } = withRecordingUpstream();
  await passThrough.recordClient('head-client', [REDIRECT]);
  const authorizeUrl = `/authorize?${new URLSearchParams({
    client_id: 'head-client',
    redirect_uri: REDIRECT,
    response_type: 'code',
    state: 'client-state',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
  })}`;
  const before = await pending();
  assert.equal((await app.request(authorizeUrl, { method: 'HEAD' })).status, 200);
  assert.equal(await pending(), before, 'no pending login stored');
  const started = await app.request(authorizeUrl);
  assert.equal(started.status, 302);
  const state = new URL(started.headers.get('location') ?? '').searchParams.get('state') ?? '';
  const callbackUrl = `/auth/callback?${new URLSearchParams({ state, code: 'kc-code-head', iss: upstream })}`;
  assert.equal((await app.request(callbackUrl, { method: 'HEAD' })).status, 200);
  const back = await app.request(callbackUrl);
  assert.equal(back.status, 302, 'the login is still there for the browser');
  assert.equal((await exchange({ code: 'kc-code-head', client_id: 'head-client' })).status, 200);
  assert.equal(forwarded.length, 1);
});

test('a redirect_uri the client did not register: an error page, no redirect, nothing stored', async () => {
  const passThrough = passThroughWith();
  await passThrough.recordClient('facade-redirect-client', [REDIRECT]);
  const app = new Hono();
  passThrough.mount(app);
  const before = await pending();
  for (const redirectUri of [
    'https://attacker.example/callback',
    'http://127.0.0.1:33418/callback/../elsewhere',
    'http://127.0.0.1:33418/callbackx',
  ]) {
    const response = await app.request(
      `/authorize?${new URLSearchParams({
        client_id: 'facade-redirect-client',
        redirect_uri: redirectUri,
        response_type: 'code',
        state: 's',
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
        code_challenge_method: 'S256',
      })}`,
    );
    assert.equal(response.status, 400, redirectUri);
    assert.equal(response.headers.get('location'), null, redirectUri);
    assert.match(await response.text(), /redirect_uri is missing or not registered for this client/);
  }
  assert.equal(await pending(), before, 'no pending login stored');
});

/** A refresh of `facade-client` at the pass-through's /token. */
function refresh(app: Hono, signal?: AbortSignal) {
  return app.request('/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: 'r',
      client_id: 'facade-client',
    }).toString(),
    ...(signal ? { signal } : {}),
  });
}

test('a token answer from Keycloak over 256 KB: 502 server_error, not passed on to the client', async () => {
  const passThrough = passThroughWith({
    fetch: async () =>
      Response.json({ access_token: 'a', token_type: 'Bearer', expires_in: 300, pad: 'x'.repeat(300 * 1024) }),
  });
  const app = new Hono();
  passThrough.mount(app);
  const response = await refresh(app);
  assert.equal(response.status, 502);
  assert.deepEqual(await response.json(), {
    error: 'server_error',
    error_description: "The identity provider's answer is larger than this server accepts.",
  });
});

test('a token request whose caller has gone is ended at Keycloak too, not held for its 10 s', async () => {
  let upstreamSignal: AbortSignal | undefined;
  let asked = () => {};
  const upstreamAsked = new Promise<void>((resolve) => {
    asked = resolve;
  });
  const passThrough = passThroughWith({
    // A Keycloak that does not answer: the request ends only when its signal does.
    fetch: (_url, init) =>
      new Promise<Response>((_resolve, reject) => {
        upstreamSignal = init?.signal ?? undefined;
        upstreamSignal?.addEventListener('abort', () => reject(upstreamSignal?.reason));
        asked();
      }),
  });
  const app = new Hono();
  passThrough.mount(app);
  const caller = new AbortController();
  const answered = refresh(app, caller.signal);
  await upstreamAsked;
  caller.abort(new Error('the caller went away'));
  assert.equal((await answered).status, 503);
  assert.equal(upstreamSignal?.aborted, true);
  assert.equal(
    (upstreamSignal?.reason as Error | undefined)?.message,
    'the caller went away',
    'ended by the caller, not the timeout',
  );
});

test('clients the janitor removed are forgotten: their record, pending logins and codes; other clients stay', async () => {
  const passThrough = passThroughWith();
  const rows = async (table: string, clientId: string) =>
    (
      await database.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE client_id = $1`, [
        clientId,
      ])
    ).rows[0]?.n;
  for (const clientId of ['removed-client', 'kept-client']) {
    await passThrough.recordClient(clientId, [REDIRECT]);
    await database.pool.query(
      `INSERT INTO passthrough_authorizations (state_sha256, client_id, redirect_uri, redirect_uri_sent, expires_at)
       VALUES (sha256(random()::text::bytea), $1, $2, true, now() + interval '10 minutes')`,
      [clientId, REDIRECT],
    );
    await database.pool.query(
      `INSERT INTO passthrough_codes (code_sha256, client_id, redirect_uri, expires_at)
       VALUES (sha256(random()::text::bytea), $1, $2, now() + interval '5 minutes')`,
      [clientId, REDIRECT],
    );
  }
  await forgetPassThroughClients(database.pool, ['removed-client', 'never-recorded']);
  for (const table of ['passthrough_clients', 'passthrough_authorizations', 'passthrough_codes']) {
    assert.equal(await rows(table, 'removed-client'), 0, table);
    assert.equal(await rows(table, 'kept-client'), 1, table);
  }
});

/** The pass-through with a stand-in Keycloak token endpoint that records each request and answers tokens. */
function withRecordingUpstream() {
  const forwarded: URLSearchParams[] = [];
  let down = false;
  const passThrough = passThroughWith({
    fetch: async (_url, init) => {
      if (down) throw new TypeError('fetch failed', { cause: new Error('ECONNRESET') });
      forwarded.push(new URLSearchParams(String(init?.body)));
      return Response.json({ access_token: 'a', token_type: 'Bearer', expires_in: 300 });
    },
  });
  const app = new Hono();
  passThrough.mount(app);
  /** A login of `clientId` up to the callback; the URL Keycloak would send the browser back to. */
  const startLogin = async (clientId: string) => {
    const started = await app.request(
      `/authorize?${new URLSearchParams({
        client_id: clientId,
        redirect_uri: REDIRECT,
        response_type: 'code',
        state: 'client-state',
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
        code_challenge_method: 'S256',
      })}`,
    );
    assert.equal(started.status, 302);
    const state = new URL(started.headers.get('location') ?? '').searchParams.get('state') ?? '';
    return (params: Record<string, string>) =>
      app.request(`/auth/callback?${new URLSearchParams({ state, ...params })}`);
  };
  const exchange = (form: Record<string, string>) =>
    app.request('/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', redirect_uri: REDIRECT, ...form }).toString(),
    });
  const upstreamDown = (value: boolean) => {
    down = value;
  };
  return { passThrough, forwarded, startLogin, exchange, app, upstreamDown };
}

test('a code presented by another registered client is refused here, and never reaches Keycloak', async () => {
  const { passThrough, forwarded, startLogin, exchange } = withRecordingUpstream();
  await passThrough.recordClient('code-owner', [REDIRECT]);
  await passThrough.recordClient('code-thief', [REDIRECT]);
  const back = await (await startLogin('code-owner'))({ code: 'kc-code-1', iss: upstream });
  assert.equal(new URL(back.headers.get('location') ?? '').searchParams.get('code'), 'kc-code-1');
  const stolen = await exchange({ code: 'kc-code-1', client_id: 'code-thief' });
  assert.equal(stolen.status, 400);
  assert.equal(((await stolen.json()) as { error: string }).error, 'invalid_grant');
  assert.equal(forwarded.length, 0, 'nothing forwarded to Keycloak');
  // Nor does the refusal use the code up: anyone who saw it could otherwise end the owner's login.
  const wrongRedirect = await exchange({ code: 'kc-code-1', client_id: 'code-owner', redirect_uri: `${REDIRECT}x` });
  assert.equal(wrongRedirect.status, 400);
  const owner = await exchange({ code: 'kc-code-1', client_id: 'code-owner' });
  assert.equal(owner.status, 200, await owner.clone().text());
  assert.equal(forwarded.length, 1);
  const again = await exchange({ code: 'kc-code-1', client_id: 'code-owner' });
  assert.equal(again.status, 400, 'used once');
  assert.equal(forwarded.length, 1);
});

test('an authorization request without redirect_uri: the token request may name the registered one (RFC 6749 4.1.3)', async () => {
  const { passThrough, forwarded, app } = withRecordingUpstream();
  await passThrough.recordClient('one-uri', [REDIRECT]);
  const started = await app.request(
    `/authorize?${new URLSearchParams({
      client_id: 'one-uri',
      response_type: 'code',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    })}`,
  );
  assert.equal(started.status, 302, await started.clone().text());
  const state = new URL(started.headers.get('location') ?? '').searchParams.get('state') ?? '';
  await app.request(`/auth/callback?${new URLSearchParams({ state, code: 'kc-code-2', iss: upstream })}`);
  const post = (form: Record<string, string>) =>
    app.request('/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', client_id: 'one-uri', ...form }).toString(),
    });
  assert.equal((await post({ code: 'kc-code-2', redirect_uri: 'http://127.0.0.1:33418/other' })).status, 400);
  const answered = await post({ code: 'kc-code-2', redirect_uri: REDIRECT });
  assert.equal(answered.status, 200, await answered.clone().text());
  assert.equal(forwarded.length, 1);
});

test('Keycloak not reached for a code: the code is given back, and the retry reaches Keycloak', async () => {
  const { passThrough, forwarded, startLogin, exchange, upstreamDown } = withRecordingUpstream();
  await passThrough.recordClient('retrier', [REDIRECT]);
  await (await startLogin('retrier'))({ code: 'kc-code-3', iss: upstream });
  upstreamDown(true);
  assert.equal((await exchange({ code: 'kc-code-3', client_id: 'retrier' })).status, 503);
  upstreamDown(false);
  const retried = await exchange({ code: 'kc-code-3', client_id: 'retrier' });
  assert.equal(retried.status, 200, await retried.clone().text());
  assert.equal(forwarded.length, 1);
});

test("an answer naming another issuer than Keycloak's (a mix-up) gives the client no code", async () => {
  const { passThrough, forwarded, startLogin, exchange } = withRecordingUpstream();
  await passThrough.recordClient('mixed-up', [REDIRECT]);
  const back = await (await startLogin('mixed-up'))({ code: 'kc-code-2', iss: 'https://attacker.example/realms/mcp' });
  assert.equal(back.status, 302);
  const location = new URL(back.headers.get('location') ?? '');
  assert.equal(location.searchParams.get('error'), 'server_error');
  assert.equal(location.searchParams.get('code'), null);
  assert.equal(location.searchParams.get('state'), 'client-state');
  assert.equal((await exchange({ code: 'kc-code-2', client_id: 'mixed-up' })).status, 400, 'nor is the code kept');
  assert.equal(forwarded.length, 0);
});

test('an answer after the login expired is refused: no redirect, no code kept', async () => {
  const { passThrough, forwarded, startLogin, exchange } = withRecordingUpstream();
  await passThrough.recordClient('slow-client', [REDIRECT]);
  const callback = await startLogin('slow-client');
  await database.pool.query(
    "UPDATE passthrough_authorizations SET expires_at = now() - interval '1 second' WHERE client_id = 'slow-client'",
  );
  const late = await callback({ code: 'kc-code-3', iss: upstream });
  assert.equal(late.status, 400);
  assert.equal(late.headers.get('location'), null);
  assert.equal((await exchange({ code: 'kc-code-3', client_id: 'slow-client' })).status, 400);
  assert.equal(forwarded.length, 0);
});

test('an answer asked for in another response_mode than query goes back to the client as an error, nothing stored', async () => {
  const passThrough = passThroughWith();
  await passThrough.recordClient('mode-client', [REDIRECT]);
  const app = new Hono();
  passThrough.mount(app);
  const authorize = (responseMode: string) =>
    app.request(
      `/authorize?${new URLSearchParams({
        client_id: 'mode-client',
        redirect_uri: REDIRECT,
        response_type: 'code',
        response_mode: responseMode,
        state: 'client-state',
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
        code_challenge_method: 'S256',
      })}`,
    );
  const before = await pending();
  // The callback reads its query: a form_post would come as a POST, a fragment never reaches it.
  for (const mode of ['form_post', 'fragment', 'query.jwt', 'jwt']) {
    const refused = await authorize(mode);
    assert.equal(refused.status, 302, mode);
    const location = new URL(refused.headers.get('location') ?? '');
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT, mode);
    assert.equal(location.searchParams.get('error'), 'invalid_request', mode);
    assert.equal(location.searchParams.get('state'), 'client-state', mode);
  }
  assert.equal(await pending(), before, 'no pending login stored');
  const query = await authorize('query');
  assert.ok(query.headers.get('location')?.startsWith(`${upstream}/protocol/openid-connect/auth?`));
});

test('a DPoP proof is not forwarded to Keycloak (it names this token endpoint, which Keycloak would refuse)', async () => {
  const headers: Headers[] = [];
  const passThrough = passThroughWith({
    fetch: async (_url, init) => {
      headers.push(new Headers(init?.headers));
      return Response.json({ access_token: 'a', token_type: 'Bearer', expires_in: 300 });
    },
  });
  const app = new Hono();
  passThrough.mount(app);
  const response = await app.request('/token', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: 'eyJhbGciOiJFUzI1NiJ9.proof.sig' },
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: 'r',
      client_id: 'facade-client',
    }).toString(),
  });
  assert.equal(response.status, 200);
  assert.equal(headers.length, 1);
  assert.equal(headers[0]?.get('dpop'), null);
});
