import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { serve } from '@hono/node-server';
import { jwtBearerProvider } from '@mcp-auth-stack/auth';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, decodeJwtPayload, type TestDatabase } from '@mcp-auth-stack/testing';
import type { JWK } from 'jose';
import {
  generateSigningKey,
  isRegisteredRedirectUri,
  OAUTH_PROXY_NAMESPACE,
  oauthProxyMigrations,
  oidcUpstream,
} from '../src/index.ts';
import { ProxyStore, USED_REFRESH_TOKENS_KEPT } from '../src/store.ts';
import { FakeUpstream } from './fake-upstream.ts';
import {
  authorizeUrl,
  Browser,
  browserLogin,
  callMcp,
  codeRequest,
  consentFields,
  continuedTo,
  type Instance,
  ISSUER,
  instance,
  loginForTokens,
  loginUntilCallback,
  newEncryptionKey,
  openMigrated,
  pkce,
  REDIRECT,
  RESOURCE,
  refreshRequest,
  register,
  tokenRequest,
  upstreamLogin,
} from './harness.ts';

let testDb: TestDatabase;
let dbA: Database;
let dbB: Database;
let idp: FakeUpstream;
let keys: { signingKey: JWK; encryptionKey: string };
let a: Instance;
let b: Instance;

before(async () => {
  testDb = await createTestDatabase();
  dbA = await openMigrated(testDb.url);
  dbB = await openMigrated(testDb.url);
  idp = await FakeUpstream.start();
  keys = { signingKey: await generateSigningKey('ES256'), encryptionKey: newEncryptionKey() };
  a = instance(dbA, idp, keys);
  b = instance(dbB, idp, keys);
});

after(async () => {
  await dbA?.close();
  await dbB?.close();
  await idp?.close();
  await testDb?.drop();
});

const count = async (table: string, where = 'true', values: unknown[] = []) =>
  (await dbA.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`, values)).rows[0]?.n;

const untilCallback = () => loginUntilCallback(a);

/** A login to the upstream's callback, whose answer must send the client server_error and no code, storing none. */
async function assertCallbackIssuesNoCode(what: string): Promise<void> {
  const { browser, callback } = await untilCallback();
  const codes = await count('oauth_proxy_codes');
  const back = await browser.get(a.app, callback);
  const location = new URL(back.headers.get('location') as string);
  assert.equal(location.searchParams.get('error'), 'server_error', what);
  assert.equal(location.searchParams.get('code'), null, what);
  assert.equal(await count('oauth_proxy_codes'), codes, what);
}

/** A new client's (or `clientId`'s) login at instance a, to its tokens. */
const fullLogin = (extra: Parameters<typeof loginForTokens>[1] = {}) => loginForTokens(a, extra);

/** A login whose upstream tokens are stale at once: its first refresh goes upstream. */
async function loginDueUpstream(proxy: Instance = a) {
  idp.accessTokenTtl = 1;
  try {
    return await loginForTokens(proxy);
  } finally {
    idp.accessTokenTtl = 300;
  }
}

/**
 * Holds the upstream's answers to refreshes until `release`; `reached(n)` waits for the n-th
 * refresh since the hold to arrive there (or for `orElse` to become true).
 */
function holdUpstreamRefreshes() {
  const before = idp.tokenRequestCount('refresh_token');
  let release = () => {};
  idp.refreshesHeldUntil = new Promise((resolve) => {
    release = resolve;
  });
  return {
    async reached(n: number, orElse: () => boolean = () => false) {
      while (idp.tokenRequestCount('refresh_token') < before + n && !orElse()) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    release() {
      release();
      idp.refreshesHeldUntil = undefined;
    },
  };
}

/** Every row of every table of the proxy, each as JSON text. */
async function everyProxyRow(): Promise<string[]> {
  const tables = await dbA.pool.query<{ name: string }>(
    "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name LIKE 'oauth_proxy_%'",
  );
  assert.ok(tables.rows.length >= 6, tables.rows.map((t) => t.name).join(' '));
  const rows: string[] = [];
  for (const { name: table } of tables.rows) {
    const result = await dbA.pool.query<{ row: string }>(`SELECT row_to_json(t)::text AS row FROM ${table} t`);
    rows.push(...result.rows.map((r) => r.row));
  }
  return rows;
}

/** Seconds from now until the `expires_at` of the newest row of `table`. */
const secondsLeftOfNewest = async (table: string, clientId: string) =>
  (
    await dbA.pool.query<{ left: number }>(
      `SELECT extract(epoch FROM max(expires_at) - now())::float AS left FROM ${table} WHERE client_id = $1`,
      [clientId],
    )
  ).rows[0]?.left as number;

describe('lifetimes: short by default', () => {
  test('a consent request and an upstream login live 10 minutes, a code 1 minute, an access token 5', async () => {
    const client = await register(a.app);
    const browser = new Browser();
    await browser.get(a.app, authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }));
    const consent = await secondsLeftOfNewest('oauth_proxy_consent_requests', client.client_id);
    assert.ok(consent > 590 && consent <= 600, `consent request: ${consent} s`);
    const { clientId: signingIn } = await untilCallback();
    const login = await secondsLeftOfNewest('oauth_proxy_transactions', signingIn);
    assert.ok(login > 590 && login <= 600, `upstream login: ${login} s`);
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    const codeLeft = await secondsLeftOfNewest('oauth_proxy_codes', client.client_id);
    assert.ok(codeLeft > 50 && codeLeft <= 60, `code: ${codeLeft} s`);
    const tokens = await codeRequest(a.app, code, client.client_id, verifier);
    assert.equal(tokens.status, 200);
    assert.equal(tokens.body.expires_in, 300);
    const claims = decodeJwtPayload(tokens.body.access_token as string) as { iat: number; exp: number };
    assert.equal(claims.exp - claims.iat, 300);
    const refresh = await secondsLeftOfNewest('oauth_proxy_refresh_tokens', client.client_id);
    assert.ok(refresh > 30 * 86_400 - 10 && refresh <= 30 * 86_400, `refresh token: ${refresh} s`);
  });
});

describe('metadata', () => {
  test('RFC 8414 metadata names the proxy itself as issuer, with S256, RFC 9207 and CIMD', async () => {
    const response = await a.app.request(`${ISSUER}/.well-known/oauth-authorization-server`);
    assert.equal(response.status, 200);
    const metadata = (await response.json()) as Record<string, unknown>;
    assert.equal(metadata.issuer, ISSUER);
    assert.equal(metadata.authorization_endpoint, `${ISSUER}/authorize`);
    assert.equal(metadata.token_endpoint, `${ISSUER}/token`);
    assert.equal(metadata.registration_endpoint, `${ISSUER}/register`);
    assert.equal(metadata.revocation_endpoint, `${ISSUER}/revoke`);
    assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
    assert.equal(metadata.authorization_response_iss_parameter_supported, true);
    assert.equal(metadata.client_id_metadata_document_supported, true);
  });

  test('the Protected Resource Metadata names the proxy as authorization server', async () => {
    const response = await a.app.request(`${ISSUER}/.well-known/oauth-protected-resource/mcp`);
    const document = (await response.json()) as Record<string, unknown>;
    assert.equal(document.resource, RESOURCE);
    assert.deepEqual(document.authorization_servers, [ISSUER]);
  });

  test('401 challenges point at the metadata', async () => {
    const response = await a.app.request(`${ISSUER}/mcp`, { method: 'POST' });
    assert.equal(response.status, 401);
    assert.match(
      response.headers.get('www-authenticate') ?? '',
      /resource_metadata="http:\/\/localhost:8000\/\.well-known\/oauth-protected-resource\/mcp"/,
    );
  });
});

describe('registration', () => {
  test('refuses non-loopback http redirect URIs and oversized bodies', async () => {
    const bad = await a.app.request(`${ISSUER}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://evil.example.com/cb'] }),
    });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: string }).error, 'invalid_redirect_uri');
    const big = await a.app.request(`${ISSUER}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT], client_name: 'x'.repeat(20_000) }),
    });
    assert.equal(big.status, 413);
  });

  test('grants without a redirect (device, CIBA, client credentials) are refused, nothing stored', async () => {
    const clientsBefore = await count('oauth_proxy_clients');
    for (const grant of [
      'urn:ietf:params:oauth:grant-type:device_code',
      'urn:openid:params:grant-type:ciba',
      'client_credentials',
    ]) {
      const response = await a.app.request(`${ISSUER}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ redirect_uris: [REDIRECT], grant_types: ['authorization_code', grant] }),
      });
      assert.equal(response.status, 400, grant);
      assert.deepEqual(await response.json(), {
        error: 'invalid_client_metadata',
        error_description: 'grant_types may only contain authorization_code and refresh_token.',
      });
    }
    assert.equal(await count('oauth_proxy_clients'), clientsBefore);
  });

  test('registrations are limited per client address: 429 with Retry-After, nothing stored', async () => {
    const limited = instance(dbA, idp, keys, { registrationsPerMinute: 2 });
    await register(limited.app);
    await register(limited.app);
    const clientsBefore = await count('oauth_proxy_clients');
    const third = await limited.app.request(`${ISSUER}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT] }),
    });
    assert.equal(third.status, 429);
    const retryAfter = Number(third.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: the rest of the minute (${retryAfter})`);
    assert.equal(await count('oauth_proxy_clients'), clientsBefore);
  });

  test('sign-ins are limited per client address: 429 with Retry-After, no pending login stored', async () => {
    const limited = instance(dbA, idp, keys, { authorizationsPerMinute: 2 });
    const client = await register(limited.app);
    const signIn = () =>
      limited.app.request(authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }));
    assert.equal((await signIn()).status, 200);
    assert.equal((await signIn()).status, 200);
    const pendingBefore = await count('oauth_proxy_consent_requests');
    const third = await signIn();
    assert.equal(third.status, 429);
    assert.match(await third.text(), /Too many sign-ins/);
    const retryAfter = Number(third.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: the rest of the minute (${retryAfter})`);
    assert.equal(await count('oauth_proxy_consent_requests'), pendingBefore);
  });

  test('a token request without grant_type is invalid_request; an unknown one unsupported_grant_type', async () => {
    const client = await register(a.app);
    const missing = await tokenRequest(a.app, { client_id: client.client_id, code: 'x' });
    assert.deepEqual([missing.status, missing.body.error], [400, 'invalid_request']);
    const unknown = await tokenRequest(a.app, { client_id: client.client_id, grant_type: 'password' });
    assert.deepEqual([unknown.status, unknown.body.error], [400, 'unsupported_grant_type']);
  });

  test('a confidential client gets a secret that the token endpoint requires', async () => {
    const client = await register(a.app, { token_endpoint_auth_method: 'client_secret_post' });
    assert.ok(client.client_secret);
    const response = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      code: 'nope',
      client_id: client.client_id,
      client_secret: 'wrong',
    });
    assert.equal(response.status, 401);
    assert.equal(response.body.error, 'invalid_client');
    const withoutSecret = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      code: 'nope',
      client_id: client.client_id,
    });
    assert.deepEqual([withoutSecret.status, withoutSecret.body.error], [401, 'invalid_client'], 'no secret at all');
    const right = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      code: 'nope',
      client_id: client.client_id,
      client_secret: client.client_secret,
    });
    assert.deepEqual([right.status, right.body.error], [400, 'invalid_grant'], 'authenticated; only the code is bad');
  });
  test('a public client that sends a secret is refused (RFC 6749 3.2.1); an empty Basic password is none', async () => {
    const client = await register(a.app);
    assert.equal(client.client_secret, undefined);
    const inForm = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      code: 'nope',
      client_id: client.client_id,
      client_secret: 'bogus',
    });
    assert.deepEqual([inForm.status, inForm.body.error], [401, 'invalid_client']);
    const basic = (credentials: string) =>
      a.app.request(`${ISSUER}/token`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(credentials).toString('base64')}`,
        },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: 'nope' }).toString(),
      });
    const withPassword = await basic(`${client.client_id}:bogus`);
    assert.equal(withPassword.status, 401);
    assert.equal(((await withPassword.json()) as { error: string }).error, 'invalid_client');
    const emptyPassword = await basic(`${client.client_id}:`);
    assert.equal(
      ((await emptyPassword.json()) as { error: string }).error,
      'invalid_grant',
      'authenticated; only the code is bad',
    );
    const alone = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      code: 'nope',
      client_id: client.client_id,
    });
    assert.deepEqual([alone.status, alone.body.error], [400, 'invalid_grant']);
  });
  test('Basic credentials with a bad escape are invalid_client (401), not a server error', async () => {
    const client = await register(a.app, { token_endpoint_auth_method: 'client_secret_basic' });
    for (const credentials of [`%zz:${client.client_secret}`, `${client.client_id}:%E0%A4%A`]) {
      const response = await a.app.request(`${ISSUER}/token`, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(credentials).toString('base64')}`,
        },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: 'nope' }).toString(),
      });
      assert.equal(response.status, 401, credentials);
      assert.equal(((await response.json()) as { error: string }).error, 'invalid_client');
    }
  });
  test('Basic and a client_secret in the form at once: invalid_request (RFC 6749 2.3), whatever the form secret', async () => {
    const client = await register(a.app, { token_endpoint_auth_method: 'client_secret_basic' });
    const basic = `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`;
    for (const formSecret of [client.client_secret as string, 'wrong']) {
      const response = await a.app.request(`${ISSUER}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic },
        body: new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: 'x',
          client_secret: formSecret,
        }).toString(),
      });
      assert.equal(response.status, 400, formSecret);
      assert.equal(((await response.json()) as { error: string }).error, 'invalid_request');
    }
  });
});

describe('the full flow', () => {
  test('register → consent → upstream login → code → token → authenticated → refresh rotates', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    const browser = new Browser();
    const page = await browser.get(
      a.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: challenge, scope: 'mcp:access expenses:read' }),
    );
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    // The form posts here, and nowhere else: its answer is a page of this origin (continuedTo).
    assert.match(page.headers.get('content-security-policy') ?? '', /form-action 'self';/);
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    const html = await page.text();
    assert.match(html, /Test Client/);
    assert.ok(html.includes(REDIRECT), 'names the redirect URI');
    assert.match(html, /expenses:read/);
    assert.match(html, /Read your expenses/);
    const fields = consentFields(html);
    const approved = await browser.post(a.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    const upstreamUrl = new URL(await continuedTo(approved));
    assert.ok(upstreamUrl.href.startsWith(idp.issuer));
    assert.equal(upstreamUrl.searchParams.get('client_id'), idp.clientId, 'the fixed upstream client');
    assert.equal(upstreamUrl.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(upstreamUrl.searchParams.get('redirect_uri'), `${ISSUER}/auth/callback`);
    assert.notEqual(upstreamUrl.searchParams.get('state'), 'client-state-1', 'its own state upstream');

    const callback = await upstreamLogin(upstreamUrl.href);
    const done = await browser.get(a.app, callback);
    assert.equal(done.status, 302);
    const redirect = new URL(done.headers.get('location') as string);
    assert.equal(redirect.searchParams.get('state'), 'client-state-1');
    assert.equal(redirect.searchParams.get('iss'), ISSUER, 'RFC 9207 iss');
    const code = redirect.searchParams.get('code') as string;

    const tokens = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      client_id: client.client_id,
      redirect_uri: REDIRECT,
      resource: RESOURCE,
    });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(tokens.body.token_type, 'Bearer');
    assert.equal(tokens.body.scope, 'mcp:access expenses:read');
    const accessToken = tokens.body.access_token as string;
    assert.ok(!idp.issued.includes(accessToken), 'not the upstream token');

    const outcome = await a.proxy.authenticate(
      new Request(RESOURCE, { headers: { authorization: `Bearer ${accessToken}` } }),
    );
    assert.ok(outcome.ok);
    assert.equal(outcome.principal.userId, 'alice-sub');
    assert.deepEqual([...outcome.principal.scopes], ['mcp:access', 'expenses:read']);
    assert.equal(outcome.principal.clientId, client.client_id);
    assert.equal(outcome.principal.name, 'Alice');
    assert.equal((await callMcp(a.app, accessToken)).status, 200);

    const refreshed = await refreshRequest(a.app, tokens.body.refresh_token as string, client.client_id);
    assert.equal(refreshed.status, 200);
    assert.notEqual(refreshed.body.refresh_token, tokens.body.refresh_token, 'rotated');
    assert.equal((await callMcp(a.app, refreshed.body.access_token as string)).status, 200);
  });

  test("the package's jwtBearerProvider verifies the proxy's tokens through its JWKS", async () => {
    const { tokens } = await fullLogin();
    const server = await new Promise<Server>((resolve) => {
      const s = serve({ fetch: a.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server));
    });
    try {
      const { port } = server.address() as AddressInfo;
      const verifier = jwtBearerProvider({
        issuer: ISSUER,
        jwksUri: `http://127.0.0.1:${port}/.well-known/jwks.json`,
        resource: RESOURCE,
        tokenType: 'at+jwt',
      });
      const outcome = await verifier.verifyToken(tokens.access_token);
      assert.ok(outcome.ok, JSON.stringify(outcome));
      assert.equal(outcome.principal.userId, 'alice-sub');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('upstream tokens are encrypted at rest: no plaintext in the table', async () => {
    await fullLogin();
    const { rows } = await dbA.pool.query<{ row: string; sealed: Buffer }>(
      'SELECT row_to_json(g)::text AS row, upstream_tokens AS sealed FROM oauth_proxy_grants g',
    );
    assert.ok(rows.length > 0);
    assert.ok(idp.issued.length > 0);
    for (const { row, sealed } of rows) {
      for (const secret of idp.issued) {
        assert.ok(!row.includes(secret), 'plaintext token in the row');
        assert.ok(!sealed.includes(Buffer.from(secret)), 'plaintext token in the ciphertext column');
        assert.ok(!row.includes(secret.slice(6, 30)), 'no fragment either');
      }
    }
  });

  test('client secrets, codes and refresh tokens are stored only as hashes: none in clear in any table', async () => {
    const client = await register(a.app, { token_endpoint_auth_method: 'client_secret_post' });
    assert.ok(client.client_secret?.startsWith('mcps_'), 'a confidential client got a secret');
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    // The code is looked at while it is stored (before the exchange uses it up).
    const storedBefore = await everyProxyRow();
    const tokens = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      redirect_uri: REDIRECT,
      code,
      client_id: client.client_id,
      client_secret: client.client_secret as string,
      code_verifier: verifier,
    });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    const refreshToken = tokens.body.refresh_token as string;
    assert.ok(refreshToken);
    const storedAfter = await everyProxyRow();
    for (const [what, secret, stored] of [
      ['client secret', client.client_secret as string, storedAfter],
      ['code', code, storedBefore],
      ['refresh token', refreshToken, storedAfter],
    ] as const) {
      assert.ok(stored.length > 0);
      // Text columns as they are; bytea ones as row_to_json prints them, `\x` and hex.
      const hex = Buffer.from(secret).toString('hex');
      assert.ok(!stored.some((row) => row.includes(secret) || row.includes(hex)), `${what} in clear`);
      assert.ok(!stored.some((row) => row.includes(secret.slice(-20))), `${what}: no fragment either`);
      const hash = createHash('sha256').update(secret).digest('hex');
      assert.ok(
        stored.some((row) => row.includes(`\\\\x${hash}`)),
        `${what}: its SHA-256 is what is stored`,
      );
    }
  });

  test('refresh renews the upstream tokens transparently when they are about to expire', async () => {
    idp.accessTokenTtl = 1;
    try {
      const { clientId, tokens } = await fullLogin();
      const before = idp.tokenRequestCount('refresh_token');
      const refreshed = await refreshRequest(a.app, tokens.refresh_token, clientId);
      assert.equal(refreshed.status, 200);
      const afterCount = idp.tokenRequestCount('refresh_token');
      assert.equal(afterCount, before + 1, 'one upstream refresh');
    } finally {
      idp.accessTokenTtl = 300;
    }
  });

  test('an upstream answer naming another issuer (RFC 9207), or none from a provider announcing it, gives the client no code', async () => {
    // A provider like Keycloak: it announces `iss` on its answers and sends its own.
    const announcing = await FakeUpstream.start();
    try {
      announcing.announcesIss = true;
      announcing.sendsIss = announcing.issuer;
      const proxy = instance(dbA, announcing, keys);
      const { tokens } = await loginForTokens(proxy);
      assert.ok(tokens.access_token, 'its own issuer: signed in');
      const codes = await count('oauth_proxy_codes');
      for (const [what, sent] of [
        ['another issuer (a mix-up)', 'https://attacker.example/realms/upstream'],
        ['no iss', undefined],
      ] as const) {
        announcing.sendsIss = sent;
        const { browser, callback } = await loginUntilCallback(proxy);
        const back = await browser.get(proxy.app, callback);
        const location = new URL(back.headers.get('location') as string);
        assert.equal(location.searchParams.get('error'), 'server_error', what);
        assert.equal(location.searchParams.get('code'), null, what);
        assert.equal(location.searchParams.get('state'), 'client-state-1', what);
      }
      assert.equal(await count('oauth_proxy_codes'), codes, 'no code stored');
      assert.equal(
        announcing.tokenRequestCount('authorization_code'),
        1,
        "only the first sign-in's upstream code was exchanged",
      );
    } finally {
      await announcing.close();
    }
  });

  test('a burst of refreshes of one grant waits in line, not in the pool, while the upstream is slow', async () => {
    const { clientId, tokens } = await loginDueUpstream();
    const before = idp.tokenRequestCount('refresh_token');
    const held = holdUpstreamRefreshes();
    try {
      const burst = Array.from({ length: 4 }, () => refreshRequest(a.app, tokens.refresh_token, clientId));
      await held.reached(1);
      // Time for the others to reach the database, as they did before they waited in line.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const pool = dbA.pool;
      assert.equal(pool.totalCount - pool.idleCount, 0, 'no connection held while the upstream answers');
      held.release();
      const answers = await Promise.all(burst);
      // The first in line (whichever of the four reached the upstream first: not always the
      // first sent) rotates the token; the next one presents it again: a copy, so the grant ends.
      assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 400, 400, 400]);
      assert.equal(idp.tokenRequestCount('refresh_token'), before + 1, 'one upstream refresh');
    } finally {
      held.release();
    }
  });

  test('a revocation while a refresh waits for the upstream is answered at once, and the refresh issues nothing', async () => {
    const { clientId, tokens } = await loginDueUpstream();
    const held = holdUpstreamRefreshes();
    try {
      const refreshing = refreshRequest(a.app, tokens.refresh_token, clientId);
      await held.reached(1);
      // Answered while the refresh still waits (it used to wait behind the grant's row lock
      // until the statement timeout, a 500 that revoked nothing).
      const revoked = await a.app.request(`${ISSUER}/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: tokens.access_token, client_id: clientId }).toString(),
      });
      assert.equal(revoked.status, 200);
      held.release();
      const refreshed = await refreshing;
      assert.equal(refreshed.status, 400, JSON.stringify(refreshed.body));
      assert.equal(refreshed.body.error, 'invalid_grant');
      assert.equal(await count('oauth_proxy_grants', 'client_id = $1 AND revoked_at IS NULL', [clientId]), 0);
    } finally {
      held.release();
    }
  });

  test('a copy of a refresh token sent to another replica while the first waits for the upstream ends the grant', async () => {
    const { clientId, tokens } = await loginDueUpstream();
    const held = holdUpstreamRefreshes();
    try {
      const first = refreshRequest(a.app, tokens.refresh_token, clientId);
      await held.reached(1);
      let copySettled = false;
      const copy = refreshRequest(b.app, tokens.refresh_token, clientId).finally(() => {
        copySettled = true;
      });
      // The copy goes upstream too (nothing is locked meanwhile), or is answered first.
      await held.reached(2, () => copySettled);
      held.release();
      const answers = await Promise.all([first, copy]);
      // One may have been issued before the other came back as a copy; the upstream, which
      // rotates its refresh token too, may also have refused the second: never a 500.
      const refused = answers.filter((answer) => answer.status === 400 && answer.body.error === 'invalid_grant');
      assert.ok(refused.length >= 1, JSON.stringify(answers));
      assert.equal(await count('oauth_proxy_grants', 'client_id = $1 AND revoked_at IS NULL', [clientId]), 0);
      for (const answer of answers.filter((answer) => !refused.includes(answer))) {
        assert.equal(answer.status, 200, JSON.stringify(answers));
        const issued = answer.body as { access_token: string; refresh_token: string };
        assert.equal((await callMcp(a.app, issued.access_token)).status, 401, 'what was issued is revoked too');
        assert.equal((await refreshRequest(a.app, issued.refresh_token, clientId)).status, 400);
      }
    } finally {
      held.release();
    }
  });

  test("a spent refresh token replayed while the grant's current one is refreshed: the grant ends, no deadlock", async () => {
    const { clientId, tokens } = await fullLogin();
    const rotated = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(rotated.status, 200);
    const current = (rotated.body as { refresh_token: string }).refresh_token;
    const store = new ProxyStore(dbA.pool, { refreshTtlSeconds: 3600, cleanupIntervalMs: 0, emit: () => {} });
    const replay = await dbA.pool.connect();
    const refresh = await dbA.pool.connect();
    try {
      await replay.query('BEGIN');
      await refresh.query('BEGIN');
      // The replay locks first and finds its token spent; the refresh of the current token waits.
      const spent = await store.lockRefreshToken(replay, tokens.refresh_token);
      assert.equal(spent?.used, true);
      const waiting = store.lockRefreshToken(refresh, current).then(
        (row) => row,
        (error: { code?: string }) => error,
      );
      const lockWaits = async () =>
        (
          await dbA.pool.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
          )
        ).rows[0]?.n ?? 0;
      while ((await lockWaits()) === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      // Revoking updates every token of the grant, the current one included.
      await store.revokeGrant(replay, spent?.grant_id as string, 'refresh token reused');
      await replay.query('COMMIT');
      const row = await waiting;
      assert.ok(
        !(row instanceof Error) && row !== undefined && 'revoked' in row,
        `no deadlock: ${JSON.stringify(row)}`,
      );
      assert.equal(row.revoked, true, 'the refresh sees the grant revoked');
      await refresh.query('COMMIT');
    } finally {
      await replay.query('ROLLBACK').catch(() => {});
      await refresh.query('ROLLBACK').catch(() => {});
      replay.release();
      refresh.release();
    }
  });

  test('revocation of a refresh token ends the grant', async () => {
    const { clientId, tokens } = await fullLogin();
    const response = await a.app.request(`${ISSUER}/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.refresh_token, client_id: clientId }).toString(),
    });
    assert.equal(response.status, 200);
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 401);
  });
});

describe('on the embedded database (one session for the whole process)', () => {
  let folder: string;
  let embedded: Database;
  let e: Instance;
  before(async () => {
    folder = await mkdtemp(join(tmpdir(), 'oauth-proxy-embedded-'));
    embedded = await openDatabase({ dataDir: join(folder, 'data') });
    await migrate(embedded.pool, OAUTH_PROXY_NAMESPACE, oauthProxyMigrations);
    e = instance(embedded, idp, keys);
  });
  after(async () => {
    await embedded?.close();
    await rm(folder, { recursive: true, force: true });
  });

  test("a refresh waiting for the upstream does not hold up another user's requests", async () => {
    const bob = await loginForTokens(e);
    const alice = await loginDueUpstream(e);
    const held = holdUpstreamRefreshes();
    try {
      const refreshing = refreshRequest(e.app, alice.tokens.refresh_token, alice.clientId);
      await held.reached(1);
      // It used to wait for the end of Alice's refresh transaction, and be refused after 5 s.
      const call = await callMcp(e.app, bob.tokens.access_token);
      assert.equal(call.status, 200, await call.clone().text());
      held.release();
      assert.equal((await refreshing).status, 200);
    } finally {
      held.release();
    }
  });
});

test('with its database out of reach, each endpoint answers 503 to retry on, never a 500', async () => {
  const lost = await openMigrated(testDb.url);
  const p = instance(lost, idp, keys);
  const client = await register(p.app);
  await lost.close();
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  const answers = {
    token: await p.app.request(`${ISSUER}/token`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'mcpr_x', client_id: client.client_id }),
    }),
    revoke: await p.app.request(`${ISSUER}/revoke`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ token: 'mcpr_x', client_id: client.client_id }),
    }),
    register: await p.app.request(`${ISSUER}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }),
    }),
  };
  for (const [endpoint, answer] of Object.entries(answers)) {
    assert.equal(answer.status, 503, endpoint);
    assert.equal(answer.headers.get('retry-after'), '5', endpoint);
    assert.equal(((await answer.json()) as { error: string }).error, 'temporarily_unavailable', endpoint);
  }
  const { challenge } = pkce();
  const page = await p.app.request(authorizeUrl({ client_id: client.client_id, code_challenge: challenge }));
  assert.equal(page.status, 503);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.match(await page.text(), /Try again shortly/);
});

describe('abuse: each refused, nothing issued', () => {
  test('a redirect URI that is not registered: an error page, no redirect, nothing stored', async () => {
    const client = await register(a.app);
    const requestsBefore = await count('oauth_proxy_consent_requests');
    const response = await a.app.request(
      authorizeUrl({
        client_id: client.client_id,
        code_challenge: pkce().challenge,
        redirect_uri: 'https://evil.example.com/cb',
      }),
    );
    assert.equal(response.status, 400);
    assert.equal(response.headers.get('location'), null);
    assert.match(await response.text(), /redirect URI is not one this application registered/);
    assert.equal(await count('oauth_proxy_consent_requests'), requestsBefore);
  });

  test('a loopback redirect URI may use any port (RFC 8252 7.3); nothing else about it may differ', async () => {
    const registered = ['http://127.0.0.1:33418/callback', 'https://app.example.com/cb', 'http://localhost:7/callback'];
    for (const ok of [
      'http://127.0.0.1:50123/callback',
      'http://127.0.0.1/callback',
      'http://127.0.0.1:33418/callback',
    ]) {
      assert.equal(isRegisteredRedirectUri(registered, ok), true, ok);
    }
    for (const refused of [
      'http://127.0.0.1:50123/other',
      'http://127.0.0.1:50123/callback?x=1',
      'http://localhost:50123/callback',
      'http://localhost:1/callback',
      'http://127.0.0.1.evil.example.com:50123/callback',
      'https://127.0.0.1:50123/callback',
      'https://app.example.com:8443/cb',
      'http://user@127.0.0.1:50123/callback',
    ]) {
      assert.equal(isRegisteredRedirectUri(registered, refused), false, refused);
    }
    // Through /authorize: the consent page comes up for another port of the registered URI.
    const client = await register(a.app);
    const other = await new Browser().get(
      a.app,
      authorizeUrl({
        client_id: client.client_id,
        code_challenge: pkce().challenge,
        redirect_uri: 'http://127.0.0.1:50123/callback',
      }),
    );
    assert.equal(other.status, 200);
    assert.match(await other.text(), /127\.0\.0\.1:50123\/callback/);
    // Spellings a URL parser reads as the registered URI: refused, not shown on a consent page.
    for (const spelling of [
      'http://127.1:9/callback',
      'http://0x7f.0.0.1:9/callback',
      'http://127.0.0.1:9/x/../callback',
      'http://127.0.0.1:9/callback?',
    ]) {
      const response = await new Browser().get(
        a.app,
        authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge, redirect_uri: spelling }),
      );
      assert.equal(response.status, 400, spelling);
      assert.equal(response.headers.get('location'), null, spelling);
      assert.match(await response.text(), /not one this application registered/, spelling);
    }
  });

  test('a NUL or a control character in client_id, state or redirect_uri: the right refusal, never a 500, nothing stored', async () => {
    const client = await register(a.app);
    const challenge = pkce().challenge;
    const pending = async () =>
      ((await count('oauth_proxy_consent_requests')) ?? 0) + ((await count('oauth_proxy_transactions')) ?? 0);
    const before = await pending();
    // An unknown client, whatever its id holds: the page, not a database error.
    for (const clientId of ['abc\0', `${client.client_id}\0`, 'a\u0007b']) {
      const response = await a.app.request(authorizeUrl({ client_id: clientId, code_challenge: challenge }));
      assert.equal(response.status, 400, JSON.stringify(clientId));
      assert.match(await response.text(), /not registered here/);
    }
    // A redirect URI that only matches once the URL parser has dropped its newline or NUL.
    for (const redirectUri of ['http://127.0.0.1:5555/call\nback', 'http://127.0.0.1:5555/callback\0']) {
      const response = await a.app.request(
        authorizeUrl({ client_id: client.client_id, code_challenge: challenge, redirect_uri: redirectUri }),
      );
      assert.equal(response.status, 400, JSON.stringify(redirectUri));
      assert.equal(response.headers.get('location'), null);
    }
    // A state that is not printable ASCII: invalid_request at the redirect URI, without it.
    for (const state of ['a\0b', 'caf\u00e9', 'x'.repeat(1025)]) {
      const response = await a.app.request(
        authorizeUrl({ client_id: client.client_id, code_challenge: challenge, state }),
      );
      assert.equal(response.status, 302, JSON.stringify(state).slice(0, 20));
      const location = new URL(response.headers.get('location') as string);
      assert.equal(location.searchParams.get('error'), 'invalid_request');
      assert.equal(location.searchParams.get('state'), null);
    }
    // At /token and /revoke: invalid_client (401), as for any unknown client.
    for (const form of [{ client_id: 'a\0' }, { client_id: `${client.client_id}\0` }]) {
      const token = await tokenRequest(a.app, {
        grant_type: 'authorization_code',
        code: 'x',
        code_verifier: 'y',
        ...form,
      });
      assert.deepEqual([token.status, token.body.error], [401, 'invalid_client']);
    }
    const basic = await a.app.request(`${ISSUER}/token`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from('a%00:b').toString('base64')}`,
      },
      body: 'grant_type=refresh_token&refresh_token=x',
    });
    assert.equal(basic.status, 401);
    const revoke = await a.app.request(`${ISSUER}/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'token=x&client_id=a%00',
    });
    assert.equal(revoke.status, 401);
    assert.equal(await pending(), before, 'no pending login stored');
  });

  test('a parameter sent without a value counts as omitted (RFC 6749 3.1); a missing response_type is invalid_request', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    // resource= and redirect_uri= (the client's only one is used) and state= at /authorize: the consent page.
    const page = await new Browser().get(
      a.app,
      authorizeUrl({
        client_id: client.client_id,
        code_challenge: challenge,
        resource: '',
        redirect_uri: '',
        state: '',
      }),
    );
    assert.equal(page.status, 200);
    const noType = await a.app.request(
      authorizeUrl({ client_id: client.client_id, code_challenge: challenge, response_type: undefined }),
    );
    assert.equal(new URL(noType.headers.get('location') as string).searchParams.get('error'), 'invalid_request');
    const emptyType = await a.app.request(
      authorizeUrl({ client_id: client.client_id, code_challenge: challenge, response_type: '' }),
    );
    assert.equal(new URL(emptyType.headers.get('location') as string).searchParams.get('error'), 'invalid_request');
    const token = await a.app.request(
      authorizeUrl({ client_id: client.client_id, code_challenge: challenge, response_type: 'token' }),
    );
    assert.equal(
      new URL(token.headers.get('location') as string).searchParams.get('error'),
      'unsupported_response_type',
    );
    // At /token: redirect_uri= is omitted (and this code's request named one), resource= and scope= are omitted.
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    const base = { grant_type: 'authorization_code', code, code_verifier: verifier, client_id: client.client_id };
    const emptyRedirect = await tokenRequest(a.app, { ...base, redirect_uri: '' });
    assert.deepEqual(
      [emptyRedirect.body.error, emptyRedirect.body.error_description],
      ['invalid_request', 'redirect_uri is required: the authorization request named one.'],
    );
    const tokens = await tokenRequest(a.app, { ...base, redirect_uri: REDIRECT, resource: '', scope: '' });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  });

  test('PKCE missing at /authorize → invalid_request at the redirect URI', async () => {
    const client = await register(a.app);
    const response = await a.app.request(authorizeUrl({ client_id: client.client_id, code_challenge: undefined }));
    assert.equal(response.status, 302);
    const location = new URL(response.headers.get('location') as string);
    assert.equal(location.searchParams.get('error'), 'invalid_request');
    assert.equal(location.searchParams.get('state'), 'client-state-1');
    assert.equal(location.searchParams.get('iss'), ISSUER);
    const plain = await a.app.request(
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge, code_challenge_method: 'plain' }),
    );
    assert.equal(new URL(plain.headers.get('location') as string).searchParams.get('error'), 'invalid_request');
    // No method is `plain` by RFC 7636's default: refused too, not taken for S256.
    const noMethod = await a.app.request(
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge, code_challenge_method: undefined }),
    );
    assert.equal(new URL(noMethod.headers.get('location') as string).searchParams.get('error'), 'invalid_request');
  });

  test('HEAD /authorize (a link checker, an unfurler) stores nothing and starts no sign-in', async () => {
    const client = await register(a.app);
    const before = await count('oauth_proxy_consent_requests');
    const url = authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge });
    const head = await a.app.request(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('cache-control'), 'no-store');
    assert.equal(await count('oauth_proxy_consent_requests'), before, 'no consent request stored');
    // GET still stores one: the count above can move.
    assert.equal((await a.app.request(url)).status, 200);
    assert.equal(await count('oauth_proxy_consent_requests'), (before ?? 0) + 1);
    // Nor does HEAD on the callback use the sign-in up: the browser's GET still completes it.
    const { browser, callback } = await untilCallback();
    assert.equal((await a.app.request(callback, { method: 'HEAD' })).status, 200);
    const done = await browser.get(a.app, callback);
    assert.equal(done.status, 302, await done.clone().text());
    assert.ok(new URL(done.headers.get('location') as string).searchParams.get('code'));
  });

  test('a resource other than the MCP server → invalid_target', async () => {
    const client = await register(a.app);
    const response = await a.app.request(
      authorizeUrl({
        client_id: client.client_id,
        code_challenge: pkce().challenge,
        resource: 'https://other.example.com/mcp',
      }),
    );
    assert.equal(new URL(response.headers.get('location') as string).searchParams.get('error'), 'invalid_target');
  });

  test('a resource other than the MCP server at /token → invalid_target, and the code still unused', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    const base = {
      grant_type: 'authorization_code',
      code,
      client_id: client.client_id,
      redirect_uri: REDIRECT,
      code_verifier: verifier,
    };
    const other = await tokenRequest(a.app, { ...base, resource: 'https://other.example.com/mcp' });
    assert.deepEqual([other.status, other.body.error], [400, 'invalid_target']);
    assert.equal(other.body.access_token, undefined);
    const right = await tokenRequest(a.app, { ...base, resource: RESOURCE });
    assert.equal(right.status, 200, JSON.stringify(right.body));
    const refreshed = await refreshRequest(a.app, right.body.refresh_token as string, client.client_id, {
      resource: 'https://other.example.com/mcp',
    });
    assert.deepEqual([refreshed.status, refreshed.body.error], [400, 'invalid_target'], 'at refresh too');
  });

  test("resource given twice (RFC 8707 2): both this server's → tokens; one another → invalid_target", async () => {
    const client = await register(a.app);
    const exchange = async (resources: string[]) => {
      const { verifier, challenge } = pkce();
      const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
      const form = new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        client_id: client.client_id,
        redirect_uri: REDIRECT,
        code_verifier: verifier,
      });
      for (const resource of resources) form.append('resource', resource);
      const response = await a.app.request(`${ISSUER}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const twice = await exchange([RESOURCE, RESOURCE]);
    assert.equal(twice.status, 200, JSON.stringify(twice.body));
    const mixed = await exchange([RESOURCE, 'https://other.example.com/mcp']);
    assert.deepEqual([mixed.status, mixed.body.error], [400, 'invalid_target']);
    // At /authorize too: repeated, it is not a malformed request; another one is invalid_target.
    const authorize = (resources: string[]) => {
      const url = new URL(authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }));
      for (const resource of resources) url.searchParams.append('resource', resource);
      return a.app.request(url.toString());
    };
    assert.equal((await authorize([RESOURCE, RESOURCE])).status, 200);
    const other = await authorize([RESOURCE, 'https://other.example.com/mcp']);
    assert.equal(new URL(other.headers.get('location') as string).searchParams.get('error'), 'invalid_target');
  });

  test('a redirect_uri named at /authorize must be named again at /token (RFC 6749 4.1.3), and be the same', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    const base = { grant_type: 'authorization_code', code, client_id: client.client_id, code_verifier: verifier };
    const omitted = await tokenRequest(a.app, base);
    assert.deepEqual([omitted.status, omitted.body.error], [400, 'invalid_request']);
    const other = await tokenRequest(a.app, { ...base, redirect_uri: 'http://127.0.0.1:33418/elsewhere' });
    assert.deepEqual([other.status, other.body.error], [400, 'invalid_grant']);
    const codeRow = "code_sha256 = sha256(convert_to($1, 'UTF8'))";
    assert.equal(await count('oauth_proxy_codes', codeRow, [code]), 1, 'the code is there');
    assert.equal(await count('oauth_proxy_codes', `${codeRow} AND used_at IS NULL`, [code]), 1, 'and still unused');
    const same = await tokenRequest(a.app, { ...base, redirect_uri: REDIRECT });
    assert.equal(same.status, 200, JSON.stringify(same.body));
  });

  test('PKCE verifier missing or wrong at /token → refused, and the code still unused', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    const missing = await tokenRequest(a.app, {
      grant_type: 'authorization_code',
      redirect_uri: REDIRECT,
      code,
      client_id: client.client_id,
    });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error, 'invalid_request');
    const wrong = await codeRequest(a.app, code, client.client_id, pkce().verifier);
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error, 'invalid_grant');
    assert.equal(wrong.body.access_token, undefined);
    assert.equal(await count('oauth_proxy_refresh_tokens', 'client_id = $1', [client.client_id]), 0);
    const right = await codeRequest(a.app, code, client.client_id, verifier);
    assert.equal(right.status, 200);
  });

  test('an expired code is refused and issues nothing', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin({ authorize: a }, new Browser(), client.client_id, challenge);
    await dbA.pool.query(
      "UPDATE oauth_proxy_codes SET expires_at = now() - interval '1 second' WHERE code_sha256 = sha256(convert_to($1, 'UTF8'))",
      [code],
    );
    const response = await codeRequest(a.app, code, client.client_id, verifier);
    assert.deepEqual([response.status, response.body.error], [400, 'invalid_grant']);
    assert.equal(response.body.access_token, undefined);
    assert.equal(await count('oauth_proxy_refresh_tokens', 'client_id = $1', [client.client_id]), 0);
  });

  test('a code used twice: refused, and the tokens from its first use are revoked', async () => {
    const { clientId, code, verifier, tokens } = await fullLogin();
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 200);
    const again = await codeRequest(a.app, code, clientId, verifier);
    assert.equal(again.status, 400);
    assert.equal(again.body.error, 'invalid_grant');
    assert.equal(again.body.access_token, undefined);
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 401, 'first access token revoked');
    const refresh = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(refresh.body.error, 'invalid_grant', 'first refresh token revoked');
  });

  test('a used code sent again without its verifier, or by another client: refused, and the grant lives on', async () => {
    const { clientId, code, verifier, tokens } = await fullLogin();
    const stranger = await register(a.app);
    const attempts = [
      await codeRequest(a.app, code, clientId, pkce().verifier),
      await codeRequest(a.app, code, stranger.client_id, verifier),
      await tokenRequest(a.app, {
        grant_type: 'authorization_code',
        code,
        client_id: clientId,
        redirect_uri: REDIRECT,
      }),
    ];
    assert.deepEqual(
      attempts.map((attempt) => [attempt.status, attempt.body.error, attempt.body.access_token]),
      [
        [400, 'invalid_grant', undefined],
        [400, 'invalid_grant', undefined],
        [400, 'invalid_request', undefined],
      ],
    );
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 200, 'the access token still works');
    const refreshed = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  });

  test('a code of another client is refused', async () => {
    const { code, verifier } = await (async () => {
      const client = await register(a.app);
      const p = pkce();
      const login = await browserLogin({ authorize: a }, new Browser(), client.client_id, p.challenge);
      return { code: login.code, verifier: p.verifier };
    })();
    const other = await register(a.app);
    const response = await codeRequest(a.app, code, other.client_id, verifier);
    assert.equal(response.body.error, 'invalid_grant');
  });

  test('upstream state replayed: the second callback is refused and issues no code', async () => {
    const { browser, callback } = await untilCallback();
    const first = await browser.get(a.app, callback);
    assert.equal(first.status, 302);
    const codes = await count('oauth_proxy_codes');
    const replay = await browser.get(a.app, callback);
    assert.equal(replay.status, 400);
    assert.equal(replay.headers.get('location'), null);
    assert.equal(await count('oauth_proxy_codes'), codes);
  });

  test('an upstream ID token without the nonce of the login, or with another one: no code', async () => {
    for (const nonce of [null, 'a-nonce-from-another-login']) {
      idp.nonceOverride = nonce;
      try {
        await assertCallbackIssuesNoCode(`nonce ${nonce}`);
      } finally {
        idp.nonceOverride = undefined;
      }
    }
  });

  test('an upstream answer to an OpenID Connect login without an ID token: no code, though userinfo names the user', async () => {
    idp.omitsLoginIdToken = true;
    try {
      await assertCallbackIssuesNoCode('no ID token');
    } finally {
      idp.omitsLoginIdToken = false;
    }
  });

  test("a callback completed in another browser (login CSRF) is refused, and the login stays its own browser's", async () => {
    const { browser, callback } = await untilCallback();
    const codes = await count('oauth_proxy_codes');
    const victim = await new Browser().get(a.app, callback);
    assert.equal(victim.status, 403);
    assert.equal(await count('oauth_proxy_codes'), codes);
    // Whoever saw the callback URL cannot use the login up: the browser that started it finishes it.
    const own = await browser.get(a.app, callback);
    assert.equal(own.status, 302, await own.clone().text());
    assert.ok(new URL(own.headers.get('location') as string).searchParams.get('code'));
    assert.equal((await browser.get(a.app, callback)).status, 400, 'then single use, as before');
    // A victim who has been here before has a browser id of their own: not the one of the login.
    const returning = new Browser();
    await returning.get(
      a.app,
      authorizeUrl({ client_id: (await register(a.app)).client_id, code_challenge: pkce().challenge }),
    );
    assert.ok(returning.cookies.has('mcp_oauth_browser'));
    const { callback: another } = await untilCallback();
    const refused = await returning.get(a.app, another);
    assert.equal(refused.status, 403);
    assert.equal(refused.headers.get('location'), null);
    assert.equal(await count('oauth_proxy_codes'), (codes ?? 0) + 1);
  });

  test('an upstream callback after the login expired is refused and issues no code', async () => {
    const { browser, callback } = await untilCallback();
    await dbA.pool.query(
      "UPDATE oauth_proxy_transactions SET expires_at = now() - interval '1 second' WHERE state_sha256 = sha256(convert_to($1, 'UTF8'))",
      [new URL(callback).searchParams.get('state')],
    );
    const codes = await count('oauth_proxy_codes');
    const late = await browser.get(a.app, callback);
    assert.equal(late.status, 400);
    assert.equal(late.headers.get('location'), null);
    assert.equal(await count('oauth_proxy_codes'), codes);
  });

  test('consent posted without or with a wrong CSRF token, or without the browser cookie: 403, nothing started', async () => {
    const client = await register(a.app);
    const browser = new Browser();
    const page = await browser.get(
      a.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    const fields = consentFields(await page.text());
    const transactions = await count('oauth_proxy_transactions');
    const without = await browser.post(a.app, `${ISSUER}/consent`, { request: fields.request, decision: 'approve' });
    assert.equal(without.status, 403);
    const wrong = await browser.post(a.app, `${ISSUER}/consent`, {
      request: fields.request,
      csrf: 'x'.repeat(43),
      decision: 'approve',
    });
    assert.equal(wrong.status, 403);
    const otherBrowser = await new Browser().post(a.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.equal(otherBrowser.status, 403);
    // Another browser with a browser id of its own (it loaded a consent page too): still not this page's.
    const stranger = new Browser();
    await stranger.get(a.app, authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }));
    assert.ok(stranger.cookies.has('mcp_oauth_browser'));
    const strangerPost = await stranger.post(a.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.equal(strangerPost.status, 403);
    const crossSite = await a.app.request(`${ISSUER}/consent`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        origin: 'https://evil.example.com',
        ...browser.header(),
      },
      body: new URLSearchParams({ ...fields, decision: 'approve' }).toString(),
    });
    assert.equal(crossSite.status, 403);
    assert.equal(await count('oauth_proxy_transactions'), transactions);
    // The genuine form still works afterwards, once.
    const genuine = await browser.post(a.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.ok((await continuedTo(genuine)).startsWith(idp.issuer));
    const twice = await browser.post(a.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.equal(twice.status, 400);
  });

  test('a client registered without the refresh_token grant gets no refresh token and may not refresh', async () => {
    const registered = await register(a.app, { grant_types: ['authorization_code'] });
    const { clientId, tokens } = await fullLogin({ clientId: registered.client_id });
    assert.equal(tokens.refresh_token, undefined, 'no refresh token in the response');
    assert.equal(await count('oauth_proxy_refresh_tokens', 'client_id = $1', [clientId]), 0, 'none stored');
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 200, 'the access token works');
    // The grant ends with its access token (5 minutes and the 5 s clock tolerance), not a refresh lifetime later.
    const grantSeconds = await secondsLeftOfNewest('oauth_proxy_grants', clientId);
    assert.ok(grantSeconds > 290 && grantSeconds <= 305, String(grantSeconds));
    // A refresh token of another client is not a way in either: the grant type itself is refused.
    const other = await fullLogin();
    const refresh = await refreshRequest(a.app, other.tokens.refresh_token, clientId);
    assert.deepEqual([refresh.status, refresh.body.error], [400, 'unauthorized_client']);
    assert.equal(refresh.body.access_token, undefined);
    assert.equal((await refreshRequest(a.app, other.tokens.refresh_token, other.clientId)).status, 200, 'not spent');
  });

  test('a refresh token used twice revokes the whole grant', async () => {
    const { clientId, tokens } = await fullLogin();
    const first = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(first.status, 200);
    const reuse = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(reuse.status, 400);
    assert.equal(reuse.body.error, 'invalid_grant');
    assert.equal(reuse.body.access_token, undefined);
    const rotated = await refreshRequest(a.app, first.body.refresh_token as string, clientId);
    assert.equal(rotated.body.error, 'invalid_grant', 'the rotated token dies with the grant');
    assert.equal((await callMcp(a.app, first.body.access_token as string)).status, 401);
  });

  test('a grant keeps its newest rotated-out refresh tokens only: the table does not grow with refreshes', async () => {
    const { clientId, tokens } = await fullLogin();
    const issued = [tokens.refresh_token];
    for (let i = 0; i < USED_REFRESH_TOKENS_KEPT + 3; i++) {
      const next = await refreshRequest(a.app, issued.at(-1) as string, clientId);
      assert.equal(next.status, 200, JSON.stringify(next.body));
      issued.push(next.body.refresh_token as string);
    }
    // The live one and the newest rotated-out ones.
    assert.equal(await count('oauth_proxy_refresh_tokens', 'client_id = $1', [clientId]), USED_REFRESH_TOKENS_KEPT + 1);
    const oldest = await refreshRequest(a.app, issued[0] as string, clientId);
    assert.deepEqual([oldest.status, oldest.body.error], [400, 'invalid_grant']);
    assert.match(String(oldest.body.error_description), /unknown/);
    // The newest rotated-out one is still known: its return ends the grant.
    const copy = await refreshRequest(a.app, issued.at(-2) as string, clientId);
    assert.match(String(copy.body.error_description), /already used; the grant is revoked/);
    const live = await refreshRequest(a.app, issued.at(-1) as string, clientId);
    assert.deepEqual([live.status, live.body.error], [400, 'invalid_grant'], 'the live one died with the grant');
  });

  test("a refresh token presented by another client is refused and stays its own client's", async () => {
    const { clientId, tokens } = await fullLogin();
    const other = await register(a.app);
    const stolen = await refreshRequest(a.app, tokens.refresh_token, other.client_id);
    assert.deepEqual([stolen.status, stolen.body.error], [400, 'invalid_grant']);
    assert.equal(stolen.body.access_token, undefined);
    const own = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(own.status, 200, JSON.stringify(own.body));
  });

  test('an expired refresh token is refused', async () => {
    const { clientId, tokens } = await fullLogin();
    await dbA.pool.query(
      "UPDATE oauth_proxy_refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_sha256 = sha256(convert_to($1, 'UTF8'))",
      [tokens.refresh_token],
    );
    const response = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.deepEqual([response.status, response.body.error], [400, 'invalid_grant']);
    assert.equal(response.body.access_token, undefined);
  });

  test('a refresh cannot add a scope the grant does not have; it may narrow', async () => {
    const { clientId, tokens } = await fullLogin({ scope: 'mcp:access expenses:read' });
    const refresh = (scope: string) => refreshRequest(a.app, tokens.refresh_token, clientId, { scope });
    const wider = await refresh('mcp:access expenses:read expenses:write');
    assert.deepEqual([wider.status, wider.body.error], [400, 'invalid_scope']);
    assert.equal(wider.body.access_token, undefined);
    const narrowed = await refresh('mcp:access');
    assert.equal(narrowed.status, 200, JSON.stringify(narrowed.body));
    assert.equal(narrowed.body.scope, 'mcp:access');
    assert.equal(decodeJwtPayload(narrowed.body.access_token as string).scope, 'mcp:access');
  });

  test("revoking another client's refresh token revokes nothing", async () => {
    const { clientId, tokens } = await fullLogin();
    const other = await register(a.app);
    const response = await a.app.request(`${ISSUER}/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.refresh_token, client_id: other.client_id }).toString(),
    });
    assert.equal(response.status, 200, 'RFC 7009: the same answer as for an unknown token');
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 200, 'the grant is alive');
    const refreshed = await refreshRequest(a.app, tokens.refresh_token, clientId);
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  });

  test('an upstream ID token issued to another client: no code', async () => {
    idp.idTokenAudience = 'some-other-client';
    try {
      await assertCallbackIssuesNoCode('an ID token for another client');
    } finally {
      idp.idTokenAudience = undefined;
    }
  });

  test('an upstream ID token that expired ten minutes ago: no code', async () => {
    idp.idTokenExpiresAt = Math.floor(Date.now() / 1000) - 600;
    try {
      await assertCallbackIssuesNoCode('an expired ID token');
    } finally {
      idp.idTokenExpiresAt = undefined;
    }
  });

  test('an access token of this issuer for another resource is not valid here', async () => {
    const { tokens } = await fullLogin();
    // Same issuer and signing key, another MCP resource: the audience alone tells them apart.
    const neighbour = instance(dbA, idp, keys, { resource: `${ISSUER}/other-mcp` });
    const outcome = await neighbour.proxy.authenticate(
      new Request(`${ISSUER}/other-mcp`, { headers: { authorization: `Bearer ${tokens.access_token}` } }),
    );
    assert.equal(outcome.ok, false);
    assert.equal((await callMcp(a.app, tokens.access_token)).status, 200, 'still valid for its own resource');
  });

  test('a CIMD client id at a private or loopback address is refused', async () => {
    for (const clientId of [
      'https://127.0.0.1/client.json',
      'https://localhost/client.json',
      'https://10.1.2.3/c.json',
      'http://example.com/c.json',
    ]) {
      const response = await a.app.request(authorizeUrl({ client_id: clientId, code_challenge: pkce().challenge }));
      assert.equal(response.status, 400, clientId);
      assert.equal(response.headers.get('location'), null);
      const token = await codeRequest(a.app, 'x', clientId, pkce().verifier);
      assert.equal(token.body.error, 'invalid_client', clientId);
    }
  });
});

describe('consent', () => {
  test('denied → access_denied with state and iss, nothing stored', async () => {
    const before = await Promise.all(
      ['oauth_proxy_grants', 'oauth_proxy_transactions', 'oauth_proxy_codes'].map((t) => count(t)),
    );
    const client = await register(a.app);
    const browser = new Browser();
    const page = await browser.get(
      a.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    const denied = await browser.post(a.app, `${ISSUER}/consent`, {
      ...consentFields(await page.text()),
      decision: 'deny',
    });
    const location = new URL(await continuedTo(denied));
    assert.equal(location.searchParams.get('error'), 'access_denied');
    assert.equal(location.searchParams.get('state'), 'client-state-1');
    assert.equal(location.searchParams.get('iss'), ISSUER);
    const afterCounts = await Promise.all(
      ['oauth_proxy_grants', 'oauth_proxy_transactions', 'oauth_proxy_codes'].map((t) => count(t)),
    );
    assert.deepEqual(afterCounts, before);
    assert.equal(await count('oauth_proxy_consent_requests', 'client_id = $1', [client.client_id]), 0);
    assert.equal(browser.cookies.has('mcp_oauth_consent'), false);
  });

  test('remembered consent skips the page for the same client only', async () => {
    const browser = new Browser();
    const first = await fullLogin({ remember: true, browser });
    assert.ok(browser.cookies.has('mcp_oauth_consent'));
    const again = await browser.get(
      a.app,
      authorizeUrl({ client_id: first.clientId, code_challenge: pkce().challenge }),
    );
    assert.equal(again.status, 302, 'straight upstream');
    assert.ok((again.headers.get('location') as string).startsWith(idp.issuer));
    const wider = await browser.get(
      a.app,
      authorizeUrl({ client_id: first.clientId, code_challenge: pkce().challenge, scope: 'mcp:access expenses:write' }),
    );
    assert.equal(wider.status, 200, 'more scopes: asked again');
    const other = await register(a.app);
    const otherPage = await browser.get(
      a.app,
      authorizeUrl({ client_id: other.client_id, code_challenge: pkce().challenge }),
    );
    assert.equal(otherPage.status, 200, 'another client: the consent page');
    // A remembered login still completes with tokens.
    const second = await fullLogin({ browser, clientId: first.clientId });
    assert.ok(second.tokens.access_token);
  });

  test('remembered consent is for the redirect URI the page showed: another registered one asks again', async () => {
    // The page shows the one redirect URI of the request; the client registered a second one.
    const elsewhere = 'https://elsewhere.example/cb';
    const client = await register(a.app, { redirect_uris: [REDIRECT, elsewhere] });
    const browser = new Browser();
    await loginForTokens(a, { remember: true, browser, clientId: client.client_id });
    const askFor = async (redirectUri: string) =>
      await browser.get(
        a.app,
        authorizeUrl({ client_id: client.client_id, redirect_uri: redirectUri, code_challenge: pkce().challenge }),
      );
    const otherUri = await askFor(elsewhere);
    assert.equal(otherUri.status, 200, 'the redirect URI the user did not see: the consent page');
    assert.match(await otherUri.text(), /elsewhere\.example/);
    // The same loopback redirect on another port (RFC 8252: the app's new listener) is the same one.
    const otherPort = await askFor('http://127.0.0.1:40411/callback');
    assert.equal(otherPort.status, 302, 'the loopback redirect on another port: straight upstream');
  });

  test('twenty remembered approvals with long redirect URIs: the cookie stays under the browser limit, newest kept', async () => {
    const browser = new Browser();
    const clients: string[] = [];
    for (let index = 0; index < 20; index++) {
      // A web client's callback, about the length of the ones in use (claude.ai's is 43 characters).
      const redirect = `https://client-${index}.example/api/mcp/auth_callback/${'x'.repeat(60)}`;
      const client = await register(a.app, { redirect_uris: [redirect] });
      clients.push(client.client_id);
      const page = await browser.get(
        a.app,
        authorizeUrl({ client_id: client.client_id, redirect_uri: redirect, code_challenge: pkce().challenge }),
      );
      assert.equal(page.status, 200, `approval ${index}: the consent page`);
      const approved = await browser.post(a.app, `${ISSUER}/consent`, {
        ...consentFields(await page.text()),
        decision: 'approve',
        remember: '1',
      });
      await continuedTo(approved);
      const cookie = browser.cookies.get('mcp_oauth_consent') ?? '';
      assert.ok(`mcp_oauth_consent=${cookie}`.length <= 4096, `approval ${index}: ${cookie.length} bytes`);
    }
    const lastRedirect = `https://client-19.example/api/mcp/auth_callback/${'x'.repeat(60)}`;
    const newest = await browser.get(
      a.app,
      authorizeUrl({ client_id: clients[19], redirect_uri: lastRedirect, code_challenge: pkce().challenge }),
    );
    assert.equal(newest.status, 302, 'the newest approval is remembered');
    const oldest = await browser.get(
      a.app,
      authorizeUrl({
        client_id: clients[0],
        redirect_uri: `https://client-0.example/api/mcp/auth_callback/${'x'.repeat(60)}`,
        code_challenge: pkce().challenge,
      }),
    );
    assert.equal(oldest.status, 200, 'the oldest made room: asked again');
  });

  test('a tampered consent cookie is ignored', async () => {
    const client = await register(a.app);
    const browser = new Browser();
    browser.cookies.set(
      'mcp_oauth_consent',
      `${Buffer.from(
        JSON.stringify({ v: 2, e: [{ c: client.client_id, r: REDIRECT, s: ['mcp:access'], x: 9e9 }] }),
      ).toString('base64url')}.forged`,
    );
    const page = await browser.get(
      a.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    assert.equal(page.status, 200);
  });
});

describe('upstream outage', () => {
  /** A port nothing listens on: connecting to it is refused, as to an identity provider that is down. */
  async function closedPort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    return port;
  }

  /**
   * An instance on the fake upstream whose discovery request fails as `outage` says while it is
   * set, with the events it emitted and the errors that reached the app's error handler.
   */
  function withOutage() {
    const control: { outage: (() => Promise<Response>) | undefined } = { outage: undefined };
    const events: { event: string; details: Record<string, unknown> }[] = [];
    const unhandled: unknown[] = [];
    const proxy = instance(dbA, idp, keys, {
      upstream: oidcUpstream({
        discoveryUrl: idp.discoveryUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        cacheSeconds: 0, // discovery on every sign-in, so the outage shows at once
        fetch: (url, init) => (control.outage ? control.outage() : fetch(url, init)),
      }),
      onEvent: (event, details) => events.push({ event, details }),
    });
    proxy.app.onError((error, c) => {
      unhandled.push(error);
      return c.text('Internal Server Error', 500);
    });
    return { proxy, control, events, unhandled };
  }

  async function assertUnavailablePage(response: Response): Promise<void> {
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '10');
    assert.equal(response.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.match(response.headers.get('content-security-policy') as string, /default-src 'none'/);
    assert.match(await response.text(), /Sign-in unavailable[\s\S]*127\.0\.0\.1:\d+ cannot be reached right now/);
  }

  test('a user info answer that is not JSON: the sign-in fails naming the missing claim, and nothing of the answer reaches the log', async () => {
    const events: { event: string; details: Record<string, unknown> }[] = [];
    // Not JSON from its first character: V8's message would quote the start ("alice.priv"...).
    const personal = 'alice.private@example.com, Alice Private';
    const proxy = instance(dbA, idp, keys, {
      upstream: oidcUpstream({
        discoveryUrl: idp.discoveryUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        // Not in the ID token: read from the user info endpoint.
        userIdClaim: 'email',
      }),
      fetch: (url, init) =>
        String(url).endsWith('/userinfo')
          ? Promise.resolve(new Response(personal, { headers: { 'content-type': 'application/json' } }))
          : fetch(url, init),
      onEvent: (event, details) => events.push({ event, details }),
    });
    const { browser, callback } = await loginUntilCallback(proxy);
    const done = await browser.get(proxy.app, callback);
    assert.notEqual(done.status, 500);
    const failed = events.filter((entry) => entry.event === 'upstream_failed');
    assert.equal(failed.length, 1, JSON.stringify(events));
    assert.match(String(failed[0]?.details.message), /did not name the user \(claim email\)/);
    assert.doesNotMatch(JSON.stringify(events), /alice\.priv/);
  });

  test('/authorize while the upstream is refused, times out or answers 5xx: a 503 page, one event, nothing stored', async () => {
    const down = `http://127.0.0.1:${await closedPort()}/realms/upstream/.well-known/openid-configuration`;
    const outages: [string, () => Promise<Response>, RegExp][] = [
      ['refused', () => fetch(down), /could not be fetched \(ECONNREFUSED\)/],
      [
        'timed out',
        () => Promise.reject(new DOMException('The operation was aborted due to timeout', 'TimeoutError')),
        /could not be fetched \(TimeoutError\)/,
      ],
      ['502', async () => new Response('Bad Gateway', { status: 502 }), /answered 502/],
    ];
    for (const [name, outage, message] of outages) {
      const { proxy, control, events, unhandled } = withOutage();
      const client = await register(proxy.app);
      events.length = 0; // the registration's
      control.outage = outage;
      const page = await new Browser().get(
        proxy.app,
        authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
      );
      await assertUnavailablePage(page);
      assert.equal(await count('oauth_proxy_consent_requests', 'client_id = $1', [client.client_id]), 0, name);
      assert.deepEqual(unhandled, [], `${name}: no unhandled error (500, logged with a stack)`);
      assert.equal(events.length, 1, name);
      assert.equal(events[0]?.event, 'upstream_unavailable');
      assert.equal(events[0]?.details.step, 'authorize');
      assert.match(events[0]?.details.message as string, message);
      assert.doesNotMatch(JSON.stringify(events), /\bat |proxy-secret/, 'no stack, no secret');
    }
  });

  test("sign-ins refused by an outage do not count against the address's limit", async () => {
    const control: { outage: boolean } = { outage: true };
    const limited = instance(dbA, idp, keys, {
      authorizationsPerMinute: 2,
      upstream: oidcUpstream({
        discoveryUrl: idp.discoveryUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        cacheSeconds: 0,
        fetch: (url, init) =>
          control.outage ? Promise.resolve(new Response('down', { status: 503 })) : fetch(url, init),
      }),
    });
    const client = await register(limited.app);
    const attempt = () =>
      new Browser().get(limited.app, authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }));
    for (let i = 0; i < 4; i++) assert.equal((await attempt()).status, 503, `attempt ${i + 1} during the outage`);
    control.outage = false;
    assert.equal((await attempt()).status, 200, 'the first sign-in after the outage gets its consent page');
    assert.equal((await attempt()).status, 200);
    assert.equal((await attempt()).status, 429, 'the limit still holds for sign-ins that store something');
  });

  test('an outage is remembered for a few seconds: sign-ins during it do not each ask the upstream', async () => {
    let fetches = 0;
    const cached = instance(dbA, idp, keys, {
      upstream: oidcUpstream({
        discoveryUrl: idp.discoveryUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        fetch: async () => {
          fetches++;
          return new Response('down', { status: 503 });
        },
      }),
    });
    const client = await register(cached.app);
    for (let i = 0; i < 5; i++) {
      const response = await new Browser().get(
        cached.app,
        authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
      );
      assert.equal(response.status, 503);
    }
    assert.equal(fetches, 1, 'one discovery attempt for five sign-ins within the outage window');
  });

  test('/authorize with remembered consent while the upstream is down: 503, no upstream transaction stored', async () => {
    const browser = new Browser();
    const { clientId } = await fullLogin({ remember: true, browser });
    const { proxy, control, unhandled } = withOutage();
    // The remembered consent is honoured by this instance: without the outage it goes upstream at once.
    const before = await browser.get(
      proxy.app,
      authorizeUrl({ client_id: clientId, code_challenge: pkce().challenge }),
    );
    assert.equal(before.status, 302);
    assert.ok((before.headers.get('location') as string).startsWith(idp.issuer));
    control.outage = () => Promise.reject(new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } }));
    const transactions = await count('oauth_proxy_transactions', 'client_id = $1', [clientId]);
    await assertUnavailablePage(
      await browser.get(proxy.app, authorizeUrl({ client_id: clientId, code_challenge: pkce().challenge })),
    );
    assert.equal(await count('oauth_proxy_transactions', 'client_id = $1', [clientId]), transactions);
    assert.deepEqual(unhandled, []);
  });

  test('consent approved while the upstream is down: 503, the request kept for a retry, which then goes upstream', async () => {
    const { proxy, control, events, unhandled } = withOutage();
    const client = await register(proxy.app);
    const browser = new Browser();
    const page = await browser.get(
      proxy.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    assert.equal(page.status, 200);
    const fields = consentFields(await page.text());
    events.length = 0; // the registration's
    control.outage = async () => new Response('Service Unavailable', { status: 503 });
    await assertUnavailablePage(await browser.post(proxy.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' }));
    assert.equal(await count('oauth_proxy_transactions', 'client_id = $1', [client.client_id]), 0);
    assert.equal(await count('oauth_proxy_consent_requests', 'client_id = $1', [client.client_id]), 1, 'not used up');
    assert.deepEqual(
      events.map(({ event, details }) => [event, details.step]),
      [['upstream_unavailable', 'consent']],
    );
    control.outage = undefined;
    const retried = await browser.post(proxy.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.ok((await continuedTo(retried)).startsWith(idp.issuer));
    assert.equal(await count('oauth_proxy_transactions', 'client_id = $1', [client.client_id]), 1);
    assert.deepEqual(unhandled, []);
  });

  test('an upstream that fails otherwise (a 404 discovery URL, a bug) is still a 500, not an outage', async () => {
    for (const failure of [
      async () => new Response('Not Found', { status: 404 }),
      async () => new Response('{"issuer": 1}', { status: 200 }),
    ]) {
      const { proxy, control, events, unhandled } = withOutage();
      const client = await register(proxy.app);
      events.length = 0; // the registration's
      control.outage = failure;
      const page = await proxy.app.request(
        authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
      );
      assert.equal(page.status, 500);
      assert.equal(unhandled.length, 1);
      assert.deepEqual(events, []);
      assert.equal(await count('oauth_proxy_consent_requests', 'client_id = $1', [client.client_id]), 0);
    }
  });
});

describe('replicas', () => {
  test('authorize on one instance, callback and token on the other, token accepted by both', async () => {
    const client = await register(a.app);
    const { verifier, challenge } = pkce();
    const { code } = await browserLogin(
      { authorize: a, consent: b, callback: b },
      new Browser(),
      client.client_id,
      challenge,
    );
    const tokens = await codeRequest(b.app, code, client.client_id, verifier);
    assert.equal(tokens.status, 200);
    assert.equal((await callMcp(a.app, tokens.body.access_token as string)).status, 200);
    assert.equal((await callMcp(b.app, tokens.body.access_token as string)).status, 200);
    const refreshed = await refreshRequest(a.app, tokens.body.refresh_token as string, client.client_id);
    assert.equal(refreshed.status, 200);
    const reuse = await refreshRequest(b.app, tokens.body.refresh_token as string, client.client_id);
    assert.equal(reuse.body.error, 'invalid_grant', 'reuse detected across replicas');
  });
});

describe('cleanup', () => {
  test('expired rows are removed', async () => {
    const client = await register(a.app);
    await new Browser().get(a.app, authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }));
    await dbA.pool.query("UPDATE oauth_proxy_consent_requests SET expires_at = now() - interval '1 second'");
    await dbA.pool.query("UPDATE oauth_proxy_transactions SET expires_at = now() - interval '1 second'");
    await dbA.pool.query(
      "UPDATE oauth_proxy_grants SET expires_at = now() - interval '1 second' WHERE revoked_at IS NOT NULL",
    );
    const counts = await a.proxy.cleanupExpired();
    assert.ok((counts.consent_requests ?? 0) >= 1);
    assert.equal(await count('oauth_proxy_consent_requests', 'expires_at < now()'), 0);
    assert.equal(await count('oauth_proxy_grants', 'expires_at < now()'), 0);
  });

  test('registrations alone run the cleanup too: a replica taking only a flood of them removes the unused ones', async () => {
    const events: string[] = [];
    const registering = instance(dbA, idp, keys, {
      cleanupIntervalSeconds: 0.001,
      onEvent: (event) => events.push(event),
    });
    const stale = await register(registering.app);
    await dbA.pool.query(
      "UPDATE oauth_proxy_clients SET created_at = now() - interval '2 hours' WHERE client_id = $1",
      [stale.client_id],
    );
    // The first registration may have run one already, before this one was stale: the next
    // registrations run it again, and it goes.
    for (
      let waited = 0;
      (await count('oauth_proxy_clients', 'client_id = $1', [stale.client_id])) !== 0;
      waited += 20
    ) {
      assert.ok(waited < 10_000, `the unused registration stayed; events: ${events.join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await register(registering.app);
    }
    assert.ok(events.includes('cleanup'));
  });

  test('a registration is stored once: its redirect URIs and name in their columns, not again in its document', async () => {
    const redirectUris = Array.from(
      { length: 10 },
      (_, index) => `https://client.example/${'p'.repeat(1000)}/${index}`,
    );
    const response = await a.app.request('/register', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'Stored once',
        redirect_uris: redirectUris,
        token_endpoint_auth_method: 'none',
      }),
    });
    assert.equal(response.status, 201);
    const { client_id: clientId, redirect_uris: answered } = (await response.json()) as Record<string, unknown>;
    assert.deepEqual(answered, redirectUris, "the answer is RFC 7591's whole document");
    const { rows } = await dbA.pool.query(
      'SELECT redirect_uris, client_name, metadata, pg_column_size(metadata) AS document_bytes FROM oauth_proxy_clients WHERE client_id = $1',
      [clientId],
    );
    assert.deepEqual(rows[0]?.redirect_uris, redirectUris);
    assert.equal(rows[0]?.client_name, 'Stored once');
    assert.equal(rows[0]?.metadata.redirect_uris, undefined);
    assert.ok(rows[0]?.document_bytes < 1_000, `document of ${rows[0]?.document_bytes} bytes`);
  });

  test('clients that never got a token go after an hour, idle ones after two refresh lifetimes; used ones stay', async () => {
    const justRegistered = await register(a.app);
    await dbA.pool.query(
      "UPDATE oauth_proxy_clients SET created_at = now() - interval '50 minutes' WHERE client_id = $1",
      [justRegistered.client_id],
    );
    const neverUsed = await register(a.app);
    await dbA.pool.query(
      "UPDATE oauth_proxy_clients SET created_at = now() - interval '61 minutes' WHERE client_id = $1",
      [neverUsed.client_id],
    );
    const { clientId: used } = await fullLogin();
    const { clientId: idle } = await fullLogin();
    const { clientId: recentWithoutGrant } = await fullLogin();
    await dbA.pool.query(
      "UPDATE oauth_proxy_clients SET created_at = now() - interval '200 days' WHERE client_id = ANY($1)",
      [[used, idle, recentWithoutGrant]],
    );
    // The grants of two of them are gone (expired and cleaned up); one of those was used long ago.
    await dbA.pool.query('DELETE FROM oauth_proxy_grants WHERE client_id = ANY($1)', [[idle, recentWithoutGrant]]);
    await dbA.pool.query(
      "UPDATE oauth_proxy_clients SET last_used_at = now() - interval '100 days' WHERE client_id = $1",
      [idle],
    );
    const counts = await a.proxy.cleanupExpired();
    assert.ok((counts.clients ?? 0) >= 2);
    const left = async (clientId: string) => count('oauth_proxy_clients', 'client_id = $1', [clientId]);
    assert.equal(await left(neverUsed.client_id), 0, 'never got a token within an hour');
    assert.equal(await left(justRegistered.client_id), 1, 'its user may still be signing in');
    assert.equal(await left(idle), 0, 'unused for 100 days, nothing left');
    assert.equal(await left(used), 1, 'has a grant');
    assert.equal(await left(recentWithoutGrant), 1, 'got tokens recently: its stored client id must keep working');
    // The removed client comes back with its saved id and no token to refresh: the page says how
    // to make it register again, since nothing else will.
    const back = await a.app.request(
      authorizeUrl({ client_id: neverUsed.client_id, code_challenge: pkce().challenge }),
    );
    assert.equal(back.status, 400);
    const page = await back.text();
    assert.match(page, /registration was removed after going unused/);
    assert.match(page, /Remove Dynamic Authentication Providers/);
  });
});
