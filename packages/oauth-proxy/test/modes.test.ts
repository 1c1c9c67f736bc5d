import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Database } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import type { JWK } from 'jose';
import { entraUpstream, generateSigningKey, oidcUpstream } from '../src/index.ts';
import { FakeUpstream } from './fake-upstream.ts';
import {
  authorizeUrl,
  Browser,
  browserLogin,
  codeRequest,
  consentFields,
  instance,
  newEncryptionKey,
  openMigrated,
  pkce,
  REDIRECT,
  refreshRequest,
  register,
} from './harness.ts';

let testDb: TestDatabase;
let db: Database;
let idp: FakeUpstream;
let keys: { signingKey: JWK; encryptionKey: string };
let documents: Server;
let documentBase = '';
/** Fetches per path, to see what the proxy really fetched. */
const documentHits = new Map<string, number>();

before(async () => {
  testDb = await createTestDatabase();
  db = await openMigrated(testDb.url);
  idp = await FakeUpstream.start();
  keys = { signingKey: await generateSigningKey('EdDSA'), encryptionKey: newEncryptionKey() };
  documents = createServer((request, response) => {
    const clientId = `${documentBase}${request.url}`;
    documentHits.set(request.url ?? '', (documentHits.get(request.url ?? '') ?? 0) + 1);
    if (request.url === '/big.json') {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ client_id: clientId, redirect_uris: [REDIRECT], pad: 'x'.repeat(6000) }));
      return;
    }
    if (request.url === '/confidential.json' || request.url === '/with-secret.json') {
      response.writeHead(200, { 'content-type': 'application/json' });
      const claimed =
        request.url === '/confidential.json'
          ? { token_endpoint_auth_method: 'client_secret_basic' }
          : { client_secret: 'chosen-by-the-document' };
      response.end(JSON.stringify({ client_id: clientId, redirect_uris: [REDIRECT], ...claimed }));
      return;
    }
    if (request.url === '/hidden-name.json') {
      // A right-to-left override: "Document Client\\u202Etxt.exe" shows as "Document Clientexe.txt".
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({ client_id: clientId, client_name: 'Document Client\u202Etxt.exe', redirect_uris: [REDIRECT] }),
      );
      return;
    }
    if (request.url === '/liar.json') {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ client_id: 'https://someone-else.example.com/c.json', redirect_uris: [REDIRECT] }));
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ client_id: clientId, client_name: 'Document Client', redirect_uris: [REDIRECT] }));
  });
  await new Promise<void>((resolve) => documents.listen(0, '127.0.0.1', resolve));
  documentBase = `http://127.0.0.1:${(documents.address() as AddressInfo).port}`;
});

after(async () => {
  documents?.closeAllConnections();
  await new Promise<void>((resolve) => documents?.close(() => resolve()));
  await db?.close();
  await idp?.close();
  await testDb?.drop();
});

describe('CIMD in development mode (http, loopback allowed)', () => {
  test('a metadata document client logs in with its URL as client id (EdDSA-signed tokens)', async () => {
    const dev = instance(db, idp, keys, { development: true });
    const clientId = `${documentBase}/client.json`;
    const { verifier, challenge } = pkce();
    const browser = new Browser();
    const page = await browser.get(dev.app, authorizeUrl({ client_id: clientId, code_challenge: challenge }));
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /Document Client/);
    assert.match(html, /metadata document/);
    const { code } = await browserLogin({ authorize: dev }, browser, clientId, challenge);
    void consentFields;
    const tokens = await codeRequest(dev.app, code, clientId, verifier);
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    const outcome = await dev.proxy.authenticate(
      new Request('http://localhost:8000/mcp', { headers: { authorization: `Bearer ${tokens.body.access_token}` } }),
    );
    assert.ok(outcome.ok);
    assert.equal(outcome.principal.clientId, clientId);
  });

  test('documents over 5 KB, or naming another client id, are refused', async () => {
    const dev = instance(db, idp, keys, { development: true });
    for (const path of ['/big.json', '/liar.json']) {
      const response = await dev.app.request(
        authorizeUrl({ client_id: `${documentBase}${path}`, code_challenge: pkce().challenge }),
      );
      assert.equal(response.status, 400, path);
    }
  });

  test('a document that claims a confidential client or carries a secret is refused (no secret to check)', async () => {
    const dev = instance(db, idp, keys, { development: true });
    for (const [path, reason] of [
      ['/confidential.json', /must use token_endpoint_auth_method none/],
      ['/with-secret.json', /must not contain client_secret/],
    ] as const) {
      const response = await dev.app.request(
        authorizeUrl({ client_id: `${documentBase}${path}`, code_challenge: pkce().challenge }),
      );
      assert.equal(response.status, 400, path);
      assert.equal(response.headers.get('location'), null, path);
      assert.match(await response.text(), reason, path);
    }
  });

  test('a document whose client_name hides characters is refused, as a registration would be', async () => {
    const dev = instance(db, idp, keys, { development: true });
    const response = await dev.app.request(
      authorizeUrl({ client_id: `${documentBase}/hidden-name.json`, code_challenge: pkce().challenge }),
    );
    assert.equal(response.status, 400);
    assert.equal(response.headers.get('location'), null);
    assert.match(await response.text(), /client_name must not contain/);
  });

  test('a refused document is not fetched again on the next authorization request', async () => {
    const dev = instance(db, idp, keys, { development: true });
    const authorize = () =>
      dev.app.request(authorizeUrl({ client_id: `${documentBase}/liar.json`, code_challenge: pkce().challenge }));
    const before = documentHits.get('/liar.json') ?? 0;
    assert.equal((await authorize()).status, 400);
    assert.equal((await authorize()).status, 400);
    assert.equal((documentHits.get('/liar.json') ?? 0) - before, 1, 'one fetch for two requests');
  });

  test('an address may make the server fetch only so many documents a minute', async () => {
    const dev = instance(db, idp, keys, { development: true, metadataDocumentFetchesPerMinute: 2 });
    const statuses: number[] = [];
    for (const path of ['/limit-a.json', '/limit-b.json', '/limit-c.json']) {
      const response = await dev.app.request(
        authorizeUrl({ client_id: `${documentBase}${path}`, code_challenge: pkce().challenge }),
      );
      statuses.push(response.status);
      if (path === '/limit-c.json') assert.match(await response.text(), /Too many client metadata lookups/);
    }
    assert.deepEqual(statuses, [200, 200, 400]);
    assert.equal(documentHits.get('/limit-c.json'), undefined, 'the third document was never fetched');
    // A document already fetched is served from the cache, limit or not.
    const again = await dev.app.request(
      authorizeUrl({ client_id: `${documentBase}/limit-a.json`, code_challenge: pkce().challenge }),
    );
    assert.equal(again.status, 200);
  });

  test('without the development flag the same loopback document is refused', async () => {
    const prod = instance(db, idp, keys);
    const response = await prod.app.request(
      authorizeUrl({ client_id: `${documentBase}/client.json`, code_challenge: pkce().challenge }),
    );
    assert.equal(response.status, 400);
  });
});

describe('a provider of its own: the default scopes follow its discovery document', () => {
  /** The scope the proxy asks upstream for at a first login, the IdP listing `listed`. */
  async function scopeAskedUpstream(listed: readonly string[] | undefined, scopes?: string[]): Promise<string | null> {
    idp.scopesSupported = listed ? [...listed] : undefined;
    try {
      const upstream = oidcUpstream({
        discoveryUrl: idp.discoveryUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        scopes,
      });
      const proxy = instance(db, idp, keys, { upstream });
      const registered = await proxy.app.request('http://localhost:8000/register', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'VS Code', redirect_uris: [REDIRECT] }),
      });
      const client = (await registered.json()) as { client_id: string };
      await browserLogin({ authorize: proxy }, new Browser(), client.client_id, pkce().challenge);
      return idp.authorizeRequests.at(-1)?.get('scope') ?? null;
    } finally {
      idp.scopesSupported = undefined;
    }
  }

  for (const [listed, asked] of [
    [undefined, 'openid profile offline_access'],
    [['openid', 'profile', 'email', 'offline_access'], 'openid profile offline_access'],
    // As Google lists them: it refuses offline_access with invalid_scope.
    [['openid', 'email', 'profile'], 'openid profile'],
  ] as const) {
    test(`scopes_supported ${listed ? listed.join(' ') : 'absent'}: the login asks for ${asked}`, async () => {
      assert.equal(await scopeAskedUpstream(listed), asked);
    });
  }
  test('the upstream refresh asks for the same scopes as the login: no offline_access where it is not listed', async () => {
    idp.scopesSupported = ['openid', 'email', 'profile'];
    idp.accessTokenTtl = 1;
    try {
      const upstream = oidcUpstream({
        discoveryUrl: idp.discoveryUrl,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
      });
      const proxy = instance(db, idp, keys, { upstream });
      const { client, tokens } = await registerAndLogin(proxy, 'mcp:access');
      const refreshed = await refreshRequest(proxy.app, tokens.body.refresh_token as string, client.client_id);
      assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
      const upstreamRefresh = idp.tokenRequests.filter((form) => form.get('grant_type') === 'refresh_token').at(-1);
      assert.equal(upstreamRefresh?.get('scope'), 'openid profile');
    } finally {
      idp.scopesSupported = undefined;
      idp.accessTokenTtl = 300;
    }
  });
  test('scopes given by the caller are asked as given, whatever the document lists', async () => {
    assert.equal(
      await scopeAskedUpstream(['openid', 'profile'], ['openid', 'offline_access']),
      'openid offline_access',
    );
  });
});

describe('the Entra preset against the fake IdP playing Entra', () => {
  test('oid becomes the user id; the upstream request carries the api:// scope', async () => {
    const tenant = '72f988bf-86f1-41af-91ab-2d7cd011db47';
    const upstream = entraUpstream({
      tenantId: tenant,
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      authority: idp.base,
    });
    idp.idTokenIssuer = `${idp.base}/${tenant}/v2.0`;
    try {
      const entra = instance(db, idp, keys, { upstream });
      const registered = await entra.app.request('http://localhost:8000/register', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'VS Code', redirect_uris: [REDIRECT] }),
      });
      const client = (await registered.json()) as { client_id: string };
      const { verifier, challenge } = pkce();
      const { code } = await browserLogin({ authorize: entra }, new Browser(), client.client_id, challenge);
      const upstreamRequest = idp.authorizeRequests.at(-1);
      assert.equal(upstreamRequest?.get('scope'), `api://${idp.clientId}/mcp-access openid profile offline_access`);
      const tokens = await codeRequest(entra.app, code, client.client_id, verifier);
      const outcome = await entra.proxy.authenticate(
        new Request('http://localhost:8000/mcp', { headers: { authorization: `Bearer ${tokens.body.access_token}` } }),
      );
      assert.ok(outcome.ok);
      assert.equal(outcome.principal.userId, 'alice-oid');
    } finally {
      idp.idTokenIssuer = undefined;
    }
  });

  test('an ID token from another issuer ends the login with server_error', async () => {
    const upstream = entraUpstream({
      tenantId: '72f988bf-86f1-41af-91ab-2d7cd011db47',
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      authority: idp.base,
    });
    const entra = instance(db, idp, keys, { upstream });
    const client = await register(entra.app);
    await assert.rejects(
      browserLogin({ authorize: entra }, new Browser(), client.client_id, pkce().challenge),
      /server_error/,
    );
  });
});

describe('a multi-tenant Entra authority (organizations)', () => {
  test("users of an allowed tenant sign in; another tenant's get access_denied and nothing is stored; an issuer not of the token's tenant ends in server_error", async () => {
    const allowed = '72f988bf-86f1-41af-91ab-2d7cd011db47';
    const foreign = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
    const upstream = entraUpstream({
      tenantId: 'organizations',
      clientId: idp.clientId,
      clientSecret: idp.clientSecret,
      authority: idp.base,
      allowedTenantIds: [allowed],
    });
    const entra = instance(db, idp, keys, { upstream });
    const client = await register(entra.app);
    const signInAs = (tenant: string, issuerTenant = tenant) => {
      idp.extraIdTokenClaims = { tid: tenant };
      idp.idTokenIssuer = `${idp.base}/${issuerTenant}/v2.0`;
      return browserLogin({ authorize: entra }, new Browser(), client.client_id, pkce().challenge);
    };
    const grants = async () => Number((await db.pool.query('SELECT count(*) FROM oauth_proxy_grants')).rows[0].count);
    try {
      const { code } = await signInAs(allowed);
      assert.ok(code);
      const before = await grants();
      // Any tenant's administrator can assign the app's roles in their own tenant: their users stay out.
      await assert.rejects(signInAs(foreign), /error=access_denied/);
      assert.equal(await grants(), before, 'no grant for a user of another tenant');
      await assert.rejects(signInAs(allowed, foreign), /error=server_error/);
      assert.equal(await grants(), before);
    } finally {
      idp.extraIdTokenClaims = {};
      idp.idTokenIssuer = undefined;
    }
  });
});

/** Registers a client at `proxy`, logs in through the fake upstream asking for `scope`, redeems the code. */
async function registerAndLogin(proxy: ReturnType<typeof instance>, scope: string) {
  const registered = await proxy.app.request('http://localhost:8000/register', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ redirect_uris: [REDIRECT] }),
  });
  const client = (await registered.json()) as { client_id: string };
  const { verifier, challenge } = pkce();
  const { code } = await browserLogin({ authorize: proxy }, new Browser(), client.client_id, challenge, { scope });
  const tokens = await codeRequest(proxy.app, code, client.client_id, verifier);
  return { client, tokens };
}

describe('permittedScopes', () => {
  test('narrows the consented scopes by upstream claims; nothing permitted → access_denied', async () => {
    const narrowing = instance(db, idp, keys, {
      permittedScopes: ({ requested, claims }) =>
        requested.filter((scope) => scope !== 'expenses:write' || claims.name === 'Admin'),
    });
    const { client, tokens } = await registerAndLogin(narrowing, 'mcp:access expenses:write');
    assert.equal(tokens.body.scope, 'mcp:access');

    const none = instance(db, idp, keys, { permittedScopes: () => [] });
    await assert.rejects(
      browserLogin({ authorize: none }, new Browser(), client.client_id, pkce().challenge),
      /error=access_denied/,
    );
  });
});

describe('permittedScopes on upstream refresh', () => {
  test('decided again whenever the upstream is refreshed: what the upstream no longer permits is dropped', async () => {
    let admin = true;
    const narrowing = instance(db, idp, keys, {
      permittedScopes: ({ requested }) => requested.filter((scope) => scope !== 'expenses:write' || admin),
    });
    idp.accessTokenTtl = 1; // every refresh of ours goes upstream
    try {
      const { client, tokens: first } = await registerAndLogin(narrowing, 'mcp:access expenses:write');
      assert.equal(first.body.scope, 'mcp:access expenses:write');

      admin = false; // the role is taken away upstream
      // Asking for nothing but the scope that is gone: refused, not an empty token.
      const onlyLost = await refreshRequest(narrowing.app, first.body.refresh_token as string, client.client_id, {
        scope: 'expenses:write',
      });
      assert.deepEqual([onlyLost.status, onlyLost.body.error], [400, 'invalid_scope']);
      const narrowed = await refreshRequest(narrowing.app, first.body.refresh_token as string, client.client_id);
      assert.equal(narrowed.status, 200, JSON.stringify(narrowed.body));
      assert.equal(narrowed.body.scope, 'mcp:access');
      const grants = await db.pool.query<{ scopes: string[] }>(
        'SELECT g.scopes FROM oauth_proxy_grants g JOIN oauth_proxy_refresh_tokens r ON r.grant_id = g.id WHERE r.token_sha256 = sha256(convert_to($1, $2))',
        [narrowed.body.refresh_token, 'UTF8'],
      );
      assert.deepEqual(grants.rows[0]?.scopes, ['mcp:access'], 'the grant itself is narrowed');
    } finally {
      idp.accessTokenTtl = 300;
    }
  });
});

describe('an upstream refresh whose answer cannot be decided on', () => {
  test('503 and nothing issued; the rotated upstream refresh token is kept, and the retry decides again', async () => {
    let failing = false;
    let admin = true;
    const deciding = instance(db, idp, keys, {
      permittedScopes: ({ requested }) => {
        // What a malformed ID token or a failing hook does to the decision.
        if (failing) throw new Error('the decision failed');
        return requested.filter((scope) => scope !== 'expenses:write' || admin);
      },
    });
    idp.accessTokenTtl = 1; // the login's upstream tokens are due at the first refresh
    try {
      const { client, tokens } = await registerAndLogin(deciding, 'mcp:access expenses:write');
      const refreshToken = tokens.body.refresh_token as string;
      // The refresh's upstream tokens last: only a grant marked for it goes upstream again.
      idp.accessTokenTtl = 300;
      failing = true;
      const refused = await refreshRequest(deciding.app, refreshToken, client.client_id);
      assert.deepEqual([refused.status, refused.body.error], [503, 'temporarily_unavailable']);
      assert.equal(refused.body.access_token, undefined);
      failing = false;
      admin = false; // taken away meanwhile
      const before = idp.tokenRequestCount('refresh_token');
      // The upstream rotated its refresh token and refuses the old one: only the stored new one works.
      const retried = await refreshRequest(deciding.app, refreshToken, client.client_id);
      assert.equal(retried.status, 200, JSON.stringify(retried.body));
      assert.equal(idp.tokenRequestCount('refresh_token'), before + 1, 'the retry went upstream again');
      assert.equal(retried.body.scope, 'mcp:access', 'and decided: not every scope of the grant');
    } finally {
      idp.accessTokenTtl = 300;
    }
  });
});

describe('an upstream refresh refused for a reason that is not the sign-in', () => {
  test("429 or the proxy's own credential refused: 503, the grant kept; invalid_grant ends it", async () => {
    const plain = instance(db, idp, keys);
    idp.accessTokenTtl = 1; // every refresh of ours goes upstream
    try {
      const { client, tokens } = await registerAndLogin(plain, 'mcp:access');
      let refreshToken = tokens.body.refresh_token as string;
      for (const refusal of [
        { status: 429, error: 'temporarily_unavailable' },
        // What Entra answers once the app's client secret has expired.
        { status: 401, error: 'invalid_client' },
      ]) {
        idp.nextRefreshRefusal = refusal;
        const refused = await refreshRequest(plain.app, refreshToken, client.client_id);
        assert.deepEqual(
          [refused.status, refused.body.error],
          [503, 'temporarily_unavailable'],
          JSON.stringify(refusal),
        );
      }
      // Fixed upstream: the same refresh token goes on.
      const again = await refreshRequest(plain.app, refreshToken, client.client_id);
      assert.equal(again.status, 200, JSON.stringify(again.body));
      refreshToken = again.body.refresh_token as string;
      idp.nextRefreshRefusal = { status: 400, error: 'invalid_grant' };
      const ended = await refreshRequest(plain.app, refreshToken, client.client_id);
      assert.deepEqual([ended.status, ended.body.error], [400, 'invalid_grant']);
    } finally {
      idp.accessTokenTtl = 300;
      idp.nextRefreshRefusal = undefined;
    }
  });
});

describe('an upstream refresh that asks for the user (Entra: Conditional Access, MFA, consent)', () => {
  test('interaction_required, consent_required, login_required: invalid_grant and the grant ended, so the client signs in again', async () => {
    const plain = instance(db, idp, keys);
    idp.accessTokenTtl = 1; // every refresh of ours goes upstream
    try {
      for (const error of ['interaction_required', 'consent_required', 'login_required']) {
        const { client, tokens } = await registerAndLogin(plain, 'mcp:access');
        idp.nextRefreshRefusal = { status: 400, error };
        const refused = await refreshRequest(plain.app, tokens.body.refresh_token as string, client.client_id);
        // 503 told the MCP SDK to wait and retry, which Entra answers the same way until the user signs in.
        assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant'], error);
        const revoked = await db.pool.query(
          'SELECT revoked_at FROM oauth_proxy_grants g JOIN oauth_proxy_clients c USING (client_id) WHERE c.client_id = $1',
          [client.client_id],
        );
        assert.ok(revoked.rows[0]?.revoked_at, `${error}: the grant is ended`);
      }
    } finally {
      idp.accessTokenTtl = 300;
      idp.nextRefreshRefusal = undefined;
    }
  });
});

describe('an upstream refresh checked as a sign-in is', () => {
  test("a tenant taken off the allowed list: its users' grants end at their next refresh, as a new sign-in would be refused", async () => {
    const t1 = '72f988bf-86f1-41af-91ab-2d7cd011db47';
    const t2 = '11111111-86f1-41af-91ab-2d7cd011db47';
    const entraFor = (allowedTenantIds: string[]) =>
      instance(db, idp, keys, {
        upstream: entraUpstream({
          tenantId: 'organizations',
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          authority: idp.base,
          allowedTenantIds,
        }),
      });
    idp.extraIdTokenClaims = { tid: t1 };
    idp.idTokenIssuer = `${idp.base}/${t1}/v2.0`;
    idp.accessTokenTtl = 1;
    try {
      const both = entraFor([t1, t2]);
      const { client, tokens } = await registerAndLogin(both, 'mcp:access');
      const kept = await refreshRequest(both.app, tokens.body.refresh_token as string, client.client_id);
      assert.equal(kept.status, 200, JSON.stringify(kept.body));
      // The operator offboards t1: the same database and keys, t2 only.
      const offboarded = entraFor([t2]);
      const refused = await refreshRequest(offboarded.app, kept.body.refresh_token as string, client.client_id);
      assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant']);
      assert.equal(refused.body.access_token, undefined);
      // An ID token of the allowed tenant naming another user than the grant's ends it too.
      const again = await registerAndLogin(both, 'mcp:access');
      idp.refreshUserOverride = { sub: 'mallory-sub', oid: 'mallory-oid', name: 'Mallory' };
      const other = await refreshRequest(both.app, again.tokens.body.refresh_token as string, again.client.client_id);
      assert.deepEqual([other.status, other.body.error], [400, 'invalid_grant']);
    } finally {
      idp.extraIdTokenClaims = {};
      idp.idTokenIssuer = undefined;
      idp.accessTokenTtl = 300;
      idp.refreshUserOverride = undefined;
    }
  });
});

describe('an upstream refresh whose ID token is no longer current', () => {
  test('a fresh ID token that expired ten minutes ago ends the grant, as it would end a sign-in', async () => {
    idp.accessTokenTtl = 1;
    try {
      const proxy = instance(db, idp, keys);
      const { client, tokens } = await registerAndLogin(proxy, 'mcp:access');
      idp.idTokenExpiresAt = Math.floor(Date.now() / 1000) - 600;
      const refused = await refreshRequest(proxy.app, tokens.body.refresh_token as string, client.client_id);
      assert.deepEqual([refused.status, refused.body.error], [400, 'invalid_grant']);
      assert.equal(refused.body.access_token, undefined);
    } finally {
      idp.accessTokenTtl = 300;
      idp.idTokenExpiresAt = undefined;
    }
  });
});

describe('an upstream token answer without expires_in', () => {
  test('counts as lasting an hour; a grant without an upstream lifetime asks the upstream again at its next refresh', async () => {
    let admin = true;
    const narrowing = instance(db, idp, keys, {
      permittedScopes: ({ requested }) => requested.filter((scope) => scope !== 'expenses:write' || admin),
    });
    idp.accessTokenTtl = undefined;
    try {
      const { client, tokens } = await registerAndLogin(narrowing, 'mcp:access expenses:write');
      assert.equal(tokens.body.scope, 'mcp:access expenses:write');
      const grants = await db.pool.query<{ id: string; upstream_expires_at: Date | null }>(
        'SELECT g.id, g.upstream_expires_at FROM oauth_proxy_grants g JOIN oauth_proxy_refresh_tokens r ON r.grant_id = g.id WHERE r.token_sha256 = sha256(convert_to($1, $2))',
        [tokens.body.refresh_token, 'UTF8'],
      );
      const grant = grants.rows[0];
      assert.ok(grant?.upstream_expires_at, 'an upstream lifetime is stored');
      const hours = (grant.upstream_expires_at.getTime() - Date.now()) / 3_600_000;
      assert.ok(hours > 0.95 && hours <= 1, `the upstream tokens count as lasting an hour (${hours.toFixed(3)} h)`);

      // A grant stored without any upstream lifetime (before one was assumed) is not trusted forever.
      await db.pool.query('UPDATE oauth_proxy_grants SET upstream_expires_at = NULL WHERE id = $1', [grant.id]);
      admin = false;
      const before = idp.tokenRequestCount('refresh_token');
      const refreshed = await refreshRequest(narrowing.app, tokens.body.refresh_token as string, client.client_id);
      assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
      assert.equal(idp.tokenRequestCount('refresh_token'), before + 1, 'the upstream was asked again');
      assert.equal(refreshed.body.scope, 'mcp:access', 'what the upstream no longer permits is dropped');
    } finally {
      idp.accessTokenTtl = 300;
    }
  });
});

describe('cookies over https', () => {
  test('__Host- prefix, Secure, HttpOnly, SameSite=Lax, Path=/ and no Domain', async () => {
    const https = instance(db, idp, keys, {
      issuer: 'https://mcp.example.com',
      resource: 'https://mcp.example.com/mcp',
    });
    const registered = await https.app.request('https://mcp.example.com/register', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT] }),
    });
    const client = (await registered.json()) as { client_id: string };
    const url = authorizeUrl({
      client_id: client.client_id,
      code_challenge: pkce().challenge,
      resource: 'https://mcp.example.com/mcp',
    }).replace('http://localhost:8000', 'https://mcp.example.com');
    const page = await https.app.request(url);
    assert.equal(page.status, 200);
    const cookie = page.headers.getSetCookie()[0] ?? '';
    assert.match(cookie, /^__Host-mcp_oauth_browser=/);
    for (const attribute of ['Secure', 'HttpOnly', 'SameSite=Lax', 'Path=/'])
      assert.ok(cookie.includes(attribute), attribute);
    assert.ok(!/Domain=/i.test(cookie));
  });

  test('an http issuer off loopback needs the development flag', () => {
    assert.throws(
      () => instance(db, idp, keys, { issuer: 'http://mcp.example.com', resource: 'http://mcp.example.com/mcp' }),
      /development/,
    );
  });
});
