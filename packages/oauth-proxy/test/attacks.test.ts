import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Database } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import type { JWK } from 'jose';
import { generateSigningKey } from '../src/index.ts';
import { isPrivateAddress, SafeFetchError, safeFetchJson } from '../src/ssrf.ts';
import { FakeUpstream } from './fake-upstream.ts';
import {
  authorizeUrl,
  Browser,
  callMcp,
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
  refreshRequest,
  register,
} from './harness.ts';

/** The proxy's weak points from issue 11, each asserting the refusal. Loopback traffic only. */
let testDb: TestDatabase;
let db: Database;
let idp: FakeUpstream;
let keys: { signingKey: JWK; encryptionKey: string };
let proxy: Instance;

before(async () => {
  testDb = await createTestDatabase();
  db = await openMigrated(testDb.url);
  idp = await FakeUpstream.start();
  keys = { signingKey: await generateSigningKey('ES256'), encryptionKey: newEncryptionKey() };
  proxy = instance(db, idp, keys);
});

after(async () => {
  await db?.close();
  await idp?.close();
  await testDb?.drop();
});

const registerRaw = (body: Record<string, unknown>) =>
  proxy.app.request(`${ISSUER}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

describe('oauth proxy: weak points', () => {
  test('a consent POST with Origin: null is refused; the consent page sends its origin (same-origin referrer policy)', async () => {
    const client = await register(proxy.app);
    const browser = new Browser();
    const page = await browser.get(
      proxy.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    assert.equal(page.headers.get('referrer-policy'), 'same-origin');
    const fields = consentFields(await page.text());
    const nullOrigin = await proxy.app.request(`${ISSUER}/consent`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'null', ...browser.header() },
      body: new URLSearchParams({ ...fields, decision: 'approve' }).toString(),
    });
    assert.equal(nullOrigin.status, 403);
    const sameOrigin = await proxy.app.request(`${ISSUER}/consent`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: ISSUER, ...browser.header() },
      body: new URLSearchParams({ ...fields, decision: 'approve' }).toString(),
    });
    assert.ok((await continuedTo(sameOrigin)).startsWith(idp.base), 'the genuine form still goes through');
  });

  test('an approval a moment after the consent page was made is refused (a click meant for another page), the request kept', async () => {
    const gated = instance(db, idp, keys, { consentMinimumViewMs: 300 });
    const client = await register(gated.app);
    const browser = new Browser();
    const page = await browser.get(
      gated.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    const html = await page.text();
    assert.doesNotMatch(html, /autofocus/, 'no button takes the next key press');
    const fields = consentFields(html);
    const tooSoon = await browser.post(gated.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.equal(tooSoon.status, 400);
    assert.equal(tooSoon.headers.get('location'), null, 'nothing goes upstream');
    assert.match(await tooSoon.text(), /Approved too soon/);
    await new Promise((resolve) => setTimeout(resolve, 350));
    const read = await browser.post(gated.app, `${ISSUER}/consent`, { ...fields, decision: 'approve' });
    assert.ok((await continuedTo(read)).startsWith(idp.base), 'the same request, approved once read');
    // A denial needs no reading time.
    const other = await browser.get(
      gated.app,
      authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge }),
    );
    const denied = await browser.post(gated.app, `${ISSUER}/consent`, {
      ...consentFields(await other.text()),
      decision: 'deny',
    });
    assert.equal(new URL(await continuedTo(denied)).searchParams.get('error'), 'access_denied');
  });

  test("markup in client_name is text on the consent page, under a policy that runs the page's own script and style only (by nonce)", async () => {
    const markup = `<img src=x onerror="alert(1)">'&</dd><script>alert(2)</script>`;
    const registered = await registerRaw({ client_name: markup, redirect_uris: [REDIRECT] });
    assert.equal(registered.status, 201, 'visible text, so a valid name');
    const { client_id } = (await registered.json()) as { client_id: string };
    const page = await new Browser().get(proxy.app, authorizeUrl({ client_id, code_challenge: pkce().challenge }));
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.ok(
      html.includes('&#60;img src=x onerror=&#34;alert(1)&#34;&#62;&#39;&#38;&#60;/dd&#62;&#60;script&#62;'),
      html,
    );
    for (const raw of ['<img', 'onerror="', '</dd><script']) assert.ok(!html.includes(raw), raw);
    const nonce = /<style nonce="([A-Za-z0-9_-]{16,})">/.exec(html)?.[1];
    assert.ok(nonce, 'the style element carries a nonce');
    // One script element, the page's own (its consent guard), under this response's nonce.
    assert.deepEqual(
      [...html.matchAll(/<script[^>]*>/g)].map((match) => match[0]),
      [`<script nonce="${nonce}">`],
    );
    const policy = page.headers.get('content-security-policy') ?? '';
    assert.match(policy, /^default-src 'none'; /);
    assert.ok(policy.includes(`script-src 'nonce-${nonce}';`), policy);
    assert.ok(policy.includes(`style-src 'nonce-${nonce}';`), policy);
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval|strict-dynamic/);
  });

  test('an https redirect URI anyone could register: errors before consent are a page here, never a redirect there', async () => {
    // RFC 9700 4.11.2: otherwise a link to this origin's /authorize is a link to any site.
    const phish = 'https://evil.example/phish';
    const client = await register(proxy.app, { redirect_uris: [phish] });
    const pendingBefore = await db.pool.query('SELECT count(*)::int AS n FROM oauth_proxy_consent_requests');
    for (const [params, error] of [
      [{ response_type: undefined }, 'invalid_request'],
      [{ response_type: 'token' }, 'unsupported_response_type'],
      [{ code_challenge: undefined }, 'invalid_request'],
      [{ resource: 'https://elsewhere.example/mcp' }, 'invalid_target'],
      // Nor words of the link's own: the unknown scope is not repeated on this origin's page.
      [{ scope: 'https://evil.example/recover-your-account' }, 'invalid_scope'],
    ] as const) {
      const response = await new Browser().get(
        proxy.app,
        authorizeUrl({ client_id: client.client_id, redirect_uri: phish, code_challenge: pkce().challenge, ...params }),
      );
      assert.equal(response.status, 400, error);
      assert.equal(response.headers.get('location'), null, error);
      const page = await response.text();
      assert.match(page, new RegExp(`refused \\(${error}\\)`), error);
      assert.doesNotMatch(page, /evil\.example/, `${error}: the page does not link there`);
    }
    const pendingAfter = await db.pool.query('SELECT count(*)::int AS n FROM oauth_proxy_consent_requests');
    assert.equal(pendingAfter.rows[0].n, pendingBefore.rows[0].n, 'nothing stored');
    // A loopback redirect URI still gets its errors, as RFC 6749 4.1.2.1 has it: a native
    // client waits there, and no one else's site is.
    const native = await register(proxy.app);
    const loopback = await new Browser().get(
      proxy.app,
      authorizeUrl({ client_id: native.client_id, code_challenge: pkce().challenge, response_type: 'token' }),
    );
    assert.equal(loopback.status, 302);
    const location = new URL(loopback.headers.get('location') as string);
    assert.equal(`${location.origin}${location.pathname}`, REDIRECT);
    assert.equal(location.searchParams.get('error'), 'unsupported_response_type');
    // And once the request is valid, the consent page names where the code would go.
    const valid = await new Browser().get(
      proxy.app,
      authorizeUrl({ client_id: client.client_id, redirect_uri: phish, code_challenge: pkce().challenge }),
    );
    assert.equal(valid.status, 200);
    assert.match(await valid.text(), /evil\.example\/phish/);
  });

  test('a parameter given twice at /authorize is refused before anything is used', async () => {
    const client = await register(proxy.app);
    for (const name of ['redirect_uri', 'code_challenge', 'scope', 'client_id', 'state']) {
      const url = new URL(
        authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge, scope: 'mcp:access' }),
      );
      url.searchParams.append(name, name === 'redirect_uri' ? 'https://evil.example.com/cb' : 'second');
      const response = await new Browser().get(proxy.app, url.toString());
      assert.equal(response.status, 400, name);
      assert.match(await response.text(), new RegExp(`Parameter ${name} is repeated`));
      assert.equal(response.headers.get('location'), null, 'no redirect anywhere');
    }
  });

  test('thousands of parameters (within the size limits) are refused as such at every endpoint, before anything else', async () => {
    const client = await register(proxy.app);
    // 3,000 names in 15 KB: a check per name over the whole list cost a tenth of a second each.
    const many = Array.from({ length: 3000 }, (_, i) => `${i.toString(16)}=`).join('&');
    const authorize = await new Browser().get(
      proxy.app,
      `${authorizeUrl({ client_id: client.client_id, code_challenge: pkce().challenge })}&${many}`,
    );
    assert.equal(authorize.status, 400);
    assert.match(await authorize.text(), /More than 100 parameters/);
    assert.equal(authorize.headers.get('location'), null);
    for (const endpoint of ['token', 'revoke', 'consent']) {
      const response = await proxy.app.request(`${ISSUER}/${endpoint}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `client_id=${client.client_id}&grant_type=refresh_token&token=x&${many}`,
      });
      assert.equal(response.status, 400, endpoint);
      assert.match(await response.text(), /More than 100 parameters/, endpoint);
    }
    // An ordinary request with a few empty parameters still goes through (they count as omitted).
    const ordinary = await proxy.app.request(`${ISSUER}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `client_id=${client.client_id}&grant_type=refresh_token&refresh_token=mcpr_unknown&scope=&state=`,
    });
    assert.equal(ordinary.status, 400);
    assert.equal(((await ordinary.json()) as { error: string }).error, 'invalid_grant');
  });

  test('client_name with control or bidi characters, invisible characters, lone surrogates or nothing visible is refused', async () => {
    for (const name of [
      'Good\u202Eexe.txt',
      'Zero\u200Bwidth',
      '\u2066Isolate\u2069',
      'BOM\uFEFF',
      'Lone \ud800',
      'Escape\u001b[2J',
      'Carriage\rreturn',
      'Nul\u0000byte',
      'Next\u0085line',
      'Hidden\uFE00\uFE01\uFE02',
      '\u2800',
    ]) {
      const response = await registerRaw({ client_name: name, redirect_uris: ['http://127.0.0.1:3000/cb'] });
      assert.equal(response.status, 400, JSON.stringify(name));
      const body = (await response.json()) as { error: string; error_description: string };
      assert.equal(body.error, 'invalid_client_metadata');
      assert.match(
        body.error_description,
        /^client_name must (not contain|contain at least one visible)/,
        JSON.stringify(name),
      );
    }
    const joined = await registerRaw({ client_name: 'Family 👨‍👩‍👧', redirect_uris: ['http://127.0.0.1:3000/cb'] });
    assert.equal(joined.status, 201, 'joiners in emoji stay allowed');
  });

  test('a redirect URI or URL client id that shows one host and leads to another is refused, nothing stored or fetched', async () => {
    const clientsBefore = await db.pool.query('SELECT count(*)::int AS n FROM oauth_proxy_clients');
    for (const uri of [
      'https://vsc\u043Ede.dev/redirect',
      'https://vscode.dev%2eevil.example/cb',
      'https://vscode.dev\n.evil.example/cb',
    ]) {
      const response = await registerRaw({ client_name: 'Visual Studio Code', redirect_uris: [uri] });
      assert.equal(response.status, 400, JSON.stringify(uri));
      assert.equal(((await response.json()) as { error: string }).error, 'invalid_redirect_uri');
    }
    const clientsAfter = await db.pool.query('SELECT count(*)::int AS n FROM oauth_proxy_clients');
    assert.deepEqual(clientsAfter.rows, clientsBefore.rows, 'no client stored');
    // A look-alike CIMD client id: refused before its document is fetched.
    const lookAlike = await new Browser().get(
      proxy.app,
      authorizeUrl({ client_id: 'https://vsc\u043Ede.dev/oauth/client.json', code_challenge: pkce().challenge }),
    );
    assert.equal(lookAlike.status, 400);
    assert.equal(lookAlike.headers.get('location'), null, 'no redirect anywhere');
    assert.match(await lookAlike.text(), /URL client id must be/);
  });

  test('members naming a URL the proxy would fetch, and pairwise subjects, are refused at registration', async () => {
    const refused: [Record<string, unknown>, RegExp][] = [
      [{ sector_identifier_uri: 'https://169.254.169.254/latest' }, /^sector_identifier_uri is not accepted/],
      [{ jwks_uri: 'http://127.0.0.1:9/jwks' }, /^jwks_uri is not accepted/],
      [{ request_uris: ['http://127.0.0.1:9/request'] }, /^request_uris is not accepted/],
      [{ backchannel_logout_uri: 'http://127.0.0.1:9/logout' }, /^backchannel_logout_uri is not accepted/],
      [
        { backchannel_client_notification_endpoint: 'http://127.0.0.1:9/ciba' },
        /^backchannel_client_notification_endpoint is not accepted/,
      ],
      [{ subject_type: 'pairwise' }, /^Only subject_type "public" is supported/],
    ];
    for (const [members, reason] of refused) {
      const response = await registerRaw({ redirect_uris: ['http://127.0.0.1:3000/cb'], ...members });
      assert.equal(response.status, 400, JSON.stringify(members));
      const body = (await response.json()) as Record<string, string>;
      assert.equal(body.error, 'invalid_client_metadata', JSON.stringify(members));
      assert.match(body.error_description ?? '', reason);
      assert.equal(body.client_id, undefined, 'no client');
    }
  });

  test('a registration nested 5,000 deep is 400, not 500', async () => {
    const response = await proxy.app.request(`${ISSUER}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"redirect_uris":${'['.repeat(5000)}"http://127.0.0.1/cb"${']'.repeat(5000)}}`,
    });
    assert.equal(response.status, 400);
  });

  test('6to4 and Teredo addresses are private (they embed an IPv4 address a relay would reach)', () => {
    for (const address of [
      '2002:7f00:1::',
      '2002:a9fe:a9fe::1',
      '2001:0:4136:e378:8000:63bf:3fff:fdd2',
      '64:ff9b:1::a',
    ]) {
      assert.equal(isPrivateAddress(address), true, address);
    }
    assert.equal(isPrivateAddress('2606:4700:4700::1111'), false, 'an ordinary public IPv6 address');
  });

  test("a metadata fetch's network error does not reach the caller (no port or DNS oracle)", async () => {
    // A loopback port that is closed: taken, then released.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    // A closed port, and a name no resolver knows (.invalid, RFC 6761): the same words for both.
    for (const url of [`http://127.0.0.1:${port}/doc.json`, 'https://no-such-host.invalid/doc.json']) {
      const refused = await safeFetchJson(url, {
        maxBytes: 5000,
        timeoutMs: 5000,
        allowInsecure: true,
      }).catch((error: unknown) => error);
      assert.ok(refused instanceof SafeFetchError, `${url}: ${String(refused)}`);
      assert.equal(refused.message, 'the host could not be reached', url);
    }
  });
});

describe('the grant store unreachable', () => {
  test('a valid token meets a database outage: 503 with Retry-After (as key mode), not a 500', async () => {
    // Its own database, closed mid-test; the other tests keep theirs.
    const ownDb = await createTestDatabase();
    const ownConnection = await openMigrated(ownDb.url);
    try {
      const own = instance(ownConnection, idp, keys);
      const { tokens } = await loginForTokens(own);
      const token = tokens.access_token;
      assert.equal((await callMcp(own.app, token)).status, 200, 'served before the outage');
      await ownConnection.close();
      const during = await callMcp(own.app, token);
      assert.equal(during.status, 503, await during.clone().text());
      assert.ok(Number(during.headers.get('retry-after')) > 0, 'Retry-After');
      assert.doesNotMatch(await during.text(), /ECONNREFUSED|Pool|pg|postgres/i, 'no database detail to the client');
    } finally {
      await ownConnection.close().catch(() => {});
      await ownDb.drop();
    }
  });
});

describe('an upstream whose token answer is too large (a megabyte, chunked)', () => {
  test('at sign-in: the client gets server_error, no code, and nothing is issued', async () => {
    const { browser, callback } = await loginUntilCallback(proxy);
    idp.oversizedAnswers = true;
    try {
      const done = await browser.get(proxy.app, callback);
      assert.equal(done.status, 302, await done.clone().text());
      const redirect = new URL(done.headers.get('location') as string);
      assert.equal(redirect.searchParams.get('error'), 'server_error');
      assert.equal(redirect.searchParams.get('code'), null);
    } finally {
      idp.oversizedAnswers = false;
    }
  });

  test('at refresh: 503 temporarily_unavailable, and the grant is not revoked for it', async () => {
    idp.accessTokenTtl = 1; // every refresh renews upstream
    try {
      const { clientId, tokens } = await loginForTokens(proxy);
      idp.oversizedAnswers = true;
      const refused = await refreshRequest(proxy.app, tokens.refresh_token, clientId);
      assert.equal(refused.status, 503, JSON.stringify(refused.body));
      assert.equal(refused.body.error, 'temporarily_unavailable');
      // As when the upstream is unreachable: whether the upstream session lives on is its call.
      assert.equal((await callMcp(proxy.app, tokens.access_token)).status, 200, 'the grant is still active');
    } finally {
      idp.oversizedAnswers = false;
      idp.accessTokenTtl = 300;
    }
  });
});
