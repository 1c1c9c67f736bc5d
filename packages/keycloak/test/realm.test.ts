import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import {
  audienceOf,
  authorizeUrl,
  type CallbackServer,
  createPkce,
  decodeJwtPayload,
  freePort,
  scopesOf,
  startCallbackServer,
} from '@mcp-auth-stack/testing';
import { launchChromium, signIn } from '@mcp-auth-stack/testing/browser';
import { postToken, verifyRs256 } from '@mcp-auth-stack/testing/keycloak';
import { keycloakAdminToken } from '@mcp-auth-stack/testing/mcp-oauth';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { DEMO_USERS, REALM_CLIENTS, type RunningKeycloak, startKeycloak } from '../src/index.ts';

// A resource URL and agent secret unlike the realm file's defaults: the tests then also prove
// that the `${VAR:default}` placeholders are filled from the environment.
const MCP_RESOURCE_URL = `http://localhost:${40_000 + Math.floor(Math.random() * 20_000)}/mcp`;
const AGENT_SECRET = `agent-${randomBytes(12).toString('hex')}`;

const [alice, bob, carol] = DEMO_USERS as [(typeof DEMO_USERS)[0], (typeof DEMO_USERS)[0], (typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let browser: Browser;

before(
  async () => {
    const startedAt = Date.now();
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      realmEnv: { MCP_SERVER_RESOURCE_URL: MCP_RESOURCE_URL, KEYCLOAK_AGENT_CLIENT_SECRET: AGENT_SECRET },
      onProgress: ({ phase, message, elapsedMs }) => {
        if (phase !== 'waiting') console.log(`keycloak ${Math.round(elapsedMs / 1000)} s ${phase}: ${message}`);
      },
    });
    console.log(`keycloak started in ${Math.round((Date.now() - startedAt) / 1000)} s`);
    browser = await launchChromium();
  },
  { timeout: 600_000 },
);

after(async () => {
  await browser?.close();
  await keycloak?.stop();
});

/** A fresh browser profile per test: no Keycloak session cookie carries over. */
async function withPage<T>(run: (page: Page) => Promise<T>): Promise<T> {
  const context: BrowserContext = await browser.newContext();
  // Keycloak answers in well under a second; a selector that is missing for 15 s is a failure.
  context.setDefaultTimeout(15_000);
  try {
    return await run(await context.newPage());
  } finally {
    await context.close();
  }
}

async function withCallback<T>(run: (callback: CallbackServer) => Promise<T>): Promise<T> {
  const callback = await startCallbackServer();
  try {
    return await run(callback);
  } finally {
    await callback.close();
  }
}

async function registerClient(
  body: Record<string, unknown>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${keycloak.realmUrl}/clients-registrations/openid-connect`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Authorization code + PKCE through the real login page, then the code exchanged at the token endpoint. */
async function loginAndExchange(options: {
  clientId: string;
  user: { username: string; password: string };
  scope: string;
  resource?: string;
  consentClientName?: string;
  /** The loopback listener the client registered; a new one when omitted. */
  callback?: CallbackServer;
}): Promise<{ callback: URLSearchParams; token: Record<string, unknown>; claims: Record<string, unknown> }> {
  const run = (callback: CallbackServer) =>
    withPage(async (page) => {
      const pkce = createPkce();
      const state = randomBytes(8).toString('hex');
      const url = authorizeUrl(keycloak.realmUrl, {
        clientId: options.clientId,
        redirectUri: callback.redirectUri,
        scope: options.scope,
        pkce,
        state,
        ...(options.resource ? { resource: options.resource } : {}),
      });
      await signIn(
        page,
        url,
        options.user,
        options.consentClientName ? { expectClientName: options.consentClientName } : undefined,
      );
      const params = await callback.next();
      assert.equal(params.get('state'), state);
      assert.equal(params.get('iss'), keycloak.realmUrl, 'RFC 9207 iss in the authorization response');
      const code = params.get('code');
      assert.ok(code, `no code in the callback: ${params}`);
      const exchanged = await postToken(keycloak.realmUrl, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: callback.redirectUri,
        client_id: options.clientId,
        code_verifier: pkce.verifier,
        ...(options.resource ? { resource: options.resource } : {}),
      });
      assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
      const accessToken = exchanged.body.access_token;
      assert.equal(typeof accessToken, 'string');
      return { callback: params, token: exchanged.body, claims: decodeJwtPayload(accessToken as string) };
    });
  return options.callback ? run(options.callback) : withCallback(run);
}

test('the realm serves OIDC discovery and RFC 8414 metadata with PKCE, DCR and CIMD advertised', async () => {
  const urls = [
    `${keycloak.realmUrl}/.well-known/openid-configuration`,
    `${keycloak.realmUrl}/.well-known/oauth-authorization-server`,
    `${keycloak.url}/.well-known/oauth-authorization-server/realms/mcp`,
  ];
  for (const url of urls) {
    const response = await fetch(url);
    assert.equal(response.status, 200, url);
    const metadata = (await response.json()) as Record<string, unknown>;
    assert.equal(metadata.issuer, keycloak.realmUrl, url);
    assert.equal(metadata.registration_endpoint, `${keycloak.realmUrl}/clients-registrations/openid-connect`, url);
    assert.ok((metadata.code_challenge_methods_supported as string[]).includes('S256'), url);
    assert.ok((metadata.token_endpoint_auth_methods_supported as string[]).includes('none'), url);
    assert.equal(metadata.client_id_metadata_document_supported, true, url);
    for (const scope of ['mcp:access', 'expenses:read', 'expenses:write', 'expenses:admin']) {
      assert.ok((metadata.scopes_supported as string[]).includes(scope), `${scope} in ${url}`);
    }
  }
});

test('anonymous DCR registers a loopback public client that can sign in (with consent) and gets the MCP audience', async () => {
  await withCallback(async (callback) => {
    const registered = await registerClient({
      client_name: 'DCR test client',
      redirect_uris: [callback.redirectUri],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    assert.equal(registered.body.token_endpoint_auth_method, 'none');
    assert.equal(registered.body.client_secret, undefined, 'a public client has no secret');
    const clientId = registered.body.client_id as string;

    const { claims } = await loginAndExchange({
      clientId,
      user: alice,
      scope: 'openid expenses:read',
      resource: MCP_RESOURCE_URL,
      consentClientName: 'DCR test client',
      callback,
    });
    assert.equal(claims.azp, clientId);
    assert.deepEqual(audienceOf(claims), [MCP_RESOURCE_URL]);
    assert.ok(scopesOf(claims).includes('mcp:access'), `realm default scope applied: ${claims.scope}`);
    assert.ok(scopesOf(claims).includes('expenses:read'));
  });
});

test('DCR with a `scope` member drops the realm defaults (https://github.com/keycloak/keycloak/issues/50807), but asking for mcp:access still yields the audience', async () => {
  const registered = await registerClient({
    client_name: 'DCR client with scope',
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'none',
    scope: 'mcp:access expenses:read',
  });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  // The requested scopes become optional scopes; only `basic` (sub) stays a default scope.
  assert.deepEqual(String(registered.body.scope).split(' ').sort(), ['expenses:read', 'mcp:access']);

  const { claims } = await loginAndExchange({
    clientId: registered.body.client_id as string,
    user: alice,
    scope: 'mcp:access expenses:read',
    consentClientName: 'DCR client with scope',
  });
  assert.ok(audienceOf(claims).includes(MCP_RESOURCE_URL), `aud ${JSON.stringify(claims.aud)}`);
  assert.ok(typeof claims.sub === 'string' && claims.sub.length > 0, 'sub survives through the basic scope');
  assert.deepEqual(scopesOf(claims).sort(), ['expenses:read', 'mcp:access']);
});

test('a DCR client whose only default scope is `basic` still shows the consent page before the first code', async () => {
  // With a `scope` member the realm defaults are dropped (above); a sign-in asking for `openid`
  // alone then covers `basic` only. Keycloak skips consent when no scope of the request is shown
  // on the consent screen, so with `basic` hidden a stranger's client got alice's code, and her
  // sub in the ID token, without her seeing its name.
  const registered = await registerClient({
    client_name: 'Client with basic only',
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'none',
    scope: 'expenses:read',
  });
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  const { token } = await loginAndExchange({
    clientId: registered.body.client_id as string,
    user: alice,
    scope: 'openid',
    consentClientName: 'Client with basic only',
  });
  assert.equal(typeof token.id_token, 'string', 'the code was given after the consent page');
});

test('DCR with a redirect URI on an untrusted host is refused', async () => {
  const registered = await registerClient({
    client_name: 'evil',
    redirect_uris: ['https://evil.example.com/callback'],
    token_endpoint_auth_method: 'none',
  });
  // The client policy anonymous-registration-safe-clients (registration-policies.test.ts has each rule).
  assert.equal(registered.status, 403);
  assert.equal(registered.body.error, 'insufficient_scope');
  assert.equal(registered.body.error_description, 'invalid_redirect_uri');
});

test('alice signs in to the pre-registered VS Code client with PKCE: aud is the MCP resource, scopes as requested, no admin scope', async () => {
  const { claims, token } = await loginAndExchange({
    clientId: REALM_CLIENTS.editor,
    user: alice,
    scope: 'openid expenses:read expenses:write expenses:admin',
    resource: MCP_RESOURCE_URL,
  });
  assert.ok(await verifyRs256(keycloak.realmUrl, token.access_token as string), 'signed by the realm key');
  assert.equal(claims.iss, keycloak.realmUrl);
  assert.deepEqual(audienceOf(claims), [MCP_RESOURCE_URL], 'resource indicator narrows aud to the MCP server');
  assert.equal(claims.azp, REALM_CLIENTS.editor);
  assert.equal(claims.preferred_username, 'alice');
  assert.equal(claims.email, 'alice@example.com');
  // Her Keycloak id (pinned in the realm file), not anything she can edit about herself.
  assert.equal(claims.sub, alice.id, 'sub is the user id');
  const scopes = scopesOf(claims);
  for (const scope of ['mcp:access', 'expenses:read', 'expenses:write']) assert.ok(scopes.includes(scope), scope);
  assert.ok(!scopes.includes('expenses:admin'), 'alice is not in expenses-admin, so the scope is withheld');
  assert.ok((claims.exp as number) - (claims.iat as number) <= 300, 'access tokens live at most 5 minutes');
  assert.equal(typeof token.refresh_token, 'string', 'refresh tokens are on');
  // A refresh token someone took lives as long as the session's idle timeout (30 minutes).
  const refreshExpiresIn = token.refresh_expires_in as number;
  assert.ok(refreshExpiresIn > 0 && refreshExpiresIn <= 1800, `refresh_expires_in ${refreshExpiresIn}`);
  // Public clients' refresh tokens are rotated (OAuth 2.1 4.3.1): one used is spent, so a copy
  // someone took stops working at the client's next refresh.
  const refresh = (refreshToken: string) =>
    postToken(keycloak.realmUrl, {
      grant_type: 'refresh_token',
      client_id: REALM_CLIENTS.editor,
      refresh_token: refreshToken,
      resource: MCP_RESOURCE_URL,
    });
  const rotated = await refresh(token.refresh_token as string);
  assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
  assert.notEqual(rotated.body.refresh_token, token.refresh_token, 'a new refresh token');
  const replayed = await refresh(token.refresh_token as string);
  assert.equal(replayed.status, 400, 'the spent refresh token is refused');
  assert.equal(replayed.body.error, 'invalid_grant');
});

test('the pre-registered VS Code client sends codes only to loopback and its two exact web redirects', async () => {
  // It asks no consent: a signed-in user's browser follows any authorization request for it at
  // once, so every URL it admits receives a code the requester (who chose the PKCE challenge)
  // can redeem. Another page on vscode.dev, or any other host, must be refused before a redirect.
  const status = async (redirectUri: string) => {
    const url = authorizeUrl(keycloak.realmUrl, {
      clientId: REALM_CLIENTS.editor,
      redirectUri,
      scope: 'openid',
      pkce: createPkce(),
    });
    const response = await fetch(url, { redirect: 'manual' });
    return `${response.status}${response.headers.get('location') ? ` to ${response.headers.get('location')}` : ''}`;
  };
  for (const allowed of [
    'https://vscode.dev/redirect',
    'https://insiders.vscode.dev/redirect',
    'http://127.0.0.1:33418/callback',
  ]) {
    assert.equal(await status(allowed), '200', `${allowed}: the login page`);
  }
  for (const refused of [
    'https://vscode.dev/other',
    'https://vscode.dev/redirect/more',
    'https://insiders.vscode.dev/other',
    'http://vscode.dev/redirect',
    'https://vscode.dev.evil.example.com/redirect',
    'https://evil.example.com/redirect',
  ]) {
    assert.equal(await status(refused), '400', `${refused}: refused without a redirect`);
  }
});

test('carol (expenses-admin group) is granted expenses:admin', async () => {
  const { claims } = await loginAndExchange({
    clientId: REALM_CLIENTS.editor,
    user: carol,
    scope: 'expenses:read expenses:admin',
    resource: MCP_RESOURCE_URL,
  });
  assert.equal(claims.preferred_username, 'carol');
  assert.ok(scopesOf(claims).includes('expenses:admin'), `scope ${claims.scope}`);
});

test('an authorization request without PKCE (or with plain) is refused for pre-registered and DCR public clients (CIMD: below)', async () => {
  const registered = await registerClient({
    client_name: 'DCR no-PKCE probe',
    redirect_uris: ['http://127.0.0.1:9/callback'],
    token_endpoint_auth_method: 'none',
  });
  assert.equal(registered.status, 201);
  const cases = [
    { clientId: REALM_CLIENTS.editor, redirectUri: 'http://127.0.0.1:9/callback', method: undefined },
    { clientId: registered.body.client_id as string, redirectUri: 'http://127.0.0.1:9/callback', method: undefined },
    { clientId: registered.body.client_id as string, redirectUri: 'http://127.0.0.1:9/callback', method: 'plain' },
  ];
  for (const { clientId, redirectUri, method } of cases) {
    const url = new URL(authorizeUrl(keycloak.realmUrl, { clientId, redirectUri, scope: 'openid', state: 's1' }));
    if (method) {
      url.searchParams.set('code_challenge', 'a'.repeat(43));
      url.searchParams.set('code_challenge_method', method);
    }
    const response = await fetch(url, { redirect: 'manual' });
    assert.equal(response.status, 302, `${clientId} ${method ?? 'no PKCE'}`);
    const location = new URL(response.headers.get('location') ?? '');
    assert.equal(`${location.origin}${location.pathname}`, redirectUri);
    assert.equal(location.searchParams.get('error'), 'invalid_request', `${clientId} ${method ?? 'no PKCE'}`);
    assert.match(location.searchParams.get('error_description') ?? '', /code_challenge|code challenge/);
    assert.equal(location.searchParams.get('code'), null);
  }
});

test('no pre-registered client takes a password (ROPC) or sends tokens through the address bar (implicit)', async () => {
  // Whoever collected alice's password (a look-alike of VS Code, a phishing page) would otherwise
  // trade it for her token without Keycloak's login page, its consent and its brute-force waits
  // (OAuth 2.1 drops both grants). The public client needs no secret at all for that.
  const secrets: Record<string, string | undefined> = {
    [REALM_CLIENTS.editor]: undefined,
    [REALM_CLIENTS.oauthProxy.clientId]: REALM_CLIENTS.oauthProxy.demoSecret,
    [REALM_CLIENTS.agent.clientId]: AGENT_SECRET,
    [REALM_CLIENTS.janitor.clientId]: REALM_CLIENTS.janitor.demoSecret,
    [REALM_CLIENTS.resourceServer]: 'mcp-server-demo-secret-not-for-production',
  };
  for (const [clientId, secret] of Object.entries(secrets)) {
    const answer = await postToken(keycloak.realmUrl, {
      grant_type: 'password',
      client_id: clientId,
      ...(secret ? { client_secret: secret } : {}),
      username: alice.username,
      password: alice.password,
      scope: 'openid expenses:read expenses:write',
    });
    assert.equal(answer.body.access_token, undefined, `${clientId} issued a token for a password`);
    assert.ok([400, 401].includes(answer.status), `${clientId}: HTTP ${answer.status}`);
    assert.equal(answer.body.error, 'unauthorized_client', `${clientId}: ${JSON.stringify(answer.body)}`);
  }
  for (const responseType of ['token', 'id_token token', 'code token']) {
    const url = new URL(
      authorizeUrl(keycloak.realmUrl, {
        clientId: REALM_CLIENTS.editor,
        redirectUri: 'http://127.0.0.1:9/callback',
        scope: 'openid',
        pkce: createPkce(),
        state: 's3',
      }),
    );
    url.searchParams.set('response_type', responseType);
    url.searchParams.set('nonce', 'n1');
    const response = await fetch(url, { redirect: 'manual' });
    assert.equal(response.status, 302, `${responseType}: the login page was offered`);
    const location = new URL(response.headers.get('location') ?? '');
    const answer = new URLSearchParams(location.hash.slice(1) || location.search);
    assert.equal(answer.get('error'), 'unauthorized_client', `${responseType}: ${location}`);
    assert.equal(answer.get('access_token'), null);
  }
});

test('the agent client gets a token by client credentials; resource narrows aud, an unknown resource is refused', async () => {
  const plain = await postToken(keycloak.realmUrl, {
    grant_type: 'client_credentials',
    client_id: REALM_CLIENTS.agent.clientId,
    client_secret: AGENT_SECRET,
    scope: 'expenses:read',
  });
  assert.equal(plain.status, 200, JSON.stringify(plain.body));
  const claims = decodeJwtPayload(plain.body.access_token as string);
  assert.equal(claims.azp, REALM_CLIENTS.agent.clientId);
  assert.equal(claims.preferred_username, `service-account-${REALM_CLIENTS.agent.clientId}`);
  assert.ok(audienceOf(claims).includes(MCP_RESOURCE_URL), `aud ${JSON.stringify(claims.aud)}`);
  assert.ok(scopesOf(claims).includes('expenses:read'));

  // With resource-indicators on, this request fails with HTTP 500 on clients that issue no
  // refresh token (Keycloak 26.7.3 bug); the realm turns refresh tokens on for this client.
  const withResource = await postToken(keycloak.realmUrl, {
    grant_type: 'client_credentials',
    client_id: REALM_CLIENTS.agent.clientId,
    client_secret: AGENT_SECRET,
    resource: MCP_RESOURCE_URL,
  });
  assert.equal(withResource.status, 200, JSON.stringify(withResource.body));
  assert.deepEqual(audienceOf(decodeJwtPayload(withResource.body.access_token as string)), [MCP_RESOURCE_URL]);

  const unknownResource = await postToken(keycloak.realmUrl, {
    grant_type: 'client_credentials',
    client_id: REALM_CLIENTS.agent.clientId,
    client_secret: AGENT_SECRET,
    resource: 'https://elsewhere.example.com/mcp',
  });
  assert.equal(unknownResource.status, 400);
  assert.equal(unknownResource.body.error, 'invalid_target');

  const wrongSecret = await postToken(keycloak.realmUrl, {
    grant_type: 'client_credentials',
    client_id: REALM_CLIENTS.agent.clientId,
    client_secret: REALM_CLIENTS.agent.demoSecret,
  });
  assert.equal(wrongSecret.status, 401, 'the demo default secret is replaced by KEYCLOAK_AGENT_CLIENT_SECRET');
});

test('CIMD: a client whose id is the URL of a metadata document on localhost completes a login', async () => {
  await withCallback(async (callback) => {
    const documents = await serveMetadataDocuments(() => ({
      client_name: 'CIMD test client',
      redirect_uris: [callback.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
    }));
    try {
      const clientId = `${documents.base}/client.json`;
      const { claims } = await loginAndExchange({
        clientId,
        user: bob,
        scope: 'expenses:read',
        resource: MCP_RESOURCE_URL,
        consentClientName: 'CIMD test client',
        callback,
      });
      assert.ok(documents.fetchedBy.includes('GET /client.json'), `Keycloak fetched it: ${documents.fetchedBy}`);
      assert.equal(claims.azp, clientId);
      assert.equal(claims.preferred_username, 'bob');
      assert.deepEqual(audienceOf(claims), [MCP_RESOURCE_URL]);
      assert.ok(scopesOf(claims).includes('expenses:read'));

      // The realm-wide PKCE policy holds for metadata-document clients too.
      const noPkce = new URL(
        authorizeUrl(keycloak.realmUrl, { clientId, redirectUri: callback.redirectUri, scope: 'openid', state: 's2' }),
      );
      const refused = await fetch(noPkce, { redirect: 'manual' });
      assert.equal(refused.status, 302);
      const location = new URL(refused.headers.get('location') ?? '');
      assert.equal(`${location.origin}${location.pathname}`, callback.redirectUri);
      assert.equal(location.searchParams.get('error'), 'invalid_request');
      assert.match(location.searchParams.get('error_description') ?? '', /code_challenge|code challenge/);
      assert.equal(location.searchParams.get('code'), null);
    } finally {
      await documents.close();
    }
  });
});

test("CIMD: an attacker's redirect gets a 400 and no redirect, in a link for a client, in a document on loopback, or as a document's post-logout URI", async () => {
  const ownRedirect = 'http://127.0.0.1:33418/callback';
  const attackerRedirect = 'https://attacker.example/callback';
  // Two documents on loopback: a client listing its own redirect, and one listing the attacker's
  // (what any program on the user's machine could serve).
  const documents = await serveMetadataDocuments((path) => ({
    client_name: 'CIMD redirect test',
    redirect_uris: [path === '/elsewhere.json' ? attackerRedirect : ownRedirect],
    // Its own redirect, and the attacker's page after logout: Keycloak's logout follows a
    // client's post-logout URI given only its id (decision 72).
    ...(path === '/logout.json' ? { post_logout_redirect_uris: ['https://attacker.example/bye'] } : {}),
  }));
  try {
    const authorize = (document: string, redirectUri: string) =>
      fetch(
        authorizeUrl(keycloak.realmUrl, {
          clientId: `${documents.base}/${document}`,
          redirectUri,
          scope: 'openid',
          state: 'cimd-redirect',
          pkce: createPkce(),
        }),
        { redirect: 'manual' },
      );
    const assertRefused = async (response: Response, reason: RegExp) => {
      assert.equal(response.status, 400, `no redirect: ${response.status} ${response.headers.get('location')}`);
      assert.equal(response.headers.get('location'), null);
      assert.match(await response.text(), reason);
    };

    const own = await authorize('client.json', ownRedirect);
    assert.equal(own.status, 200, 'the client and its own redirect are accepted: the login page');
    assert.match(await own.text(), /kc-form-login/);
    assert.ok(documents.fetchedBy.includes('GET /client.json'), `Keycloak fetched it: ${documents.fetchedBy}`);
    // A link for that client with the attacker's redirect, to catch the victim's code: the
    // redirect is not in the client's document.
    await assertRefused(await authorize('client.json', attackerRedirect), /Invalid parameter: redirect_uri/);
    // A document listing the attacker's redirect: its host is not one of the realm's CIMD domains.
    await assertRefused(await authorize('elsewhere.json', attackerRedirect), /Invalid Client ID: domain not allowed/);
    // A document whose post-logout URI is the attacker's: the realm's own executor
    // (mcp-client-uri-hosts) refuses to make the client, so no logout link sends anyone there.
    await assertRefused(
      await authorize('logout.json', ownRedirect),
      /The post-logout redirect URI names a host this realm does not send users to\./,
    );
    const logout = await fetch(
      `${keycloak.realmUrl}/protocol/openid-connect/logout?client_id=${encodeURIComponent(`${documents.base}/logout.json`)}&post_logout_redirect_uri=${encodeURIComponent('https://attacker.example/bye')}`,
      { redirect: 'manual' },
    );
    assert.equal(logout.status, 400, `no redirect: ${logout.headers.get('location')}`);
    assert.equal(logout.headers.get('location'), null);
  } finally {
    await documents.close();
  }
});

test('CIMD: a document naming a URL Keycloak would fetch (request_uris) is refused, and a link with that request_uri fetches nothing', async () => {
  const ownRedirect = 'http://127.0.0.1:33418/callback';
  // The document lists a request object on a host Keycloak reaches; a sign-in link naming it as
  // `request_uri` would make Keycloak GET it, for anyone who opens the link (no session needed).
  const documents = await serveMetadataDocuments((path) => ({
    client_name: 'CIMD request_uris test',
    redirect_uris: [ownRedirect],
    ...(path === '/requests.json' ? { request_uris: [`${documents.base}/request-object`] } : {}),
  }));
  try {
    const url = new URL(
      authorizeUrl(keycloak.realmUrl, {
        clientId: `${documents.base}/requests.json`,
        redirectUri: ownRedirect,
        scope: 'openid',
        state: 'cimd-request-uri',
        pkce: createPkce(),
      }),
    );
    url.searchParams.set('request_uri', `${documents.base}/request-object`);
    const response = await fetch(url, { redirect: 'manual' });
    // Before the realm refused the document, Keycloak made the client and fetched this URL.
    assert.ok(!documents.fetchedBy.includes('GET /request-object'), `nothing fetched from it: ${documents.fetchedBy}`);
    assert.equal(response.status, 400, `no redirect: ${response.status} ${response.headers.get('location')}`);
    assert.equal(response.headers.get('location'), null);
    assert.match(
      await response.text(),
      // The executor's reason, on Keycloak's error page (its apostrophe HTML-escaped).
      /request_uris is not accepted: this realm sends no requests to a client(&#39;|')s URLs\./,
    );
    assert.ok(documents.fetchedBy.includes('GET /requests.json'), `the document was read: ${documents.fetchedBy}`);
  } finally {
    await documents.close();
  }
});

/**
 * Client ID Metadata Documents served on loopback: the document at each path is
 * `documentFor(path)`, a public code-grant client whose `client_id` is its own URL.
 */
async function serveMetadataDocuments(documentFor: (path: string) => Record<string, unknown>) {
  const fetchedBy: string[] = [];
  const server: Server = createServer((request, response) => {
    fetchedBy.push(`${request.method} ${request.url}`);
    response.setHeader('content-type', 'application/json');
    response.end(
      JSON.stringify({
        client_id: `${base}${request.url}`,
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
        ...documentFor(request.url ?? ''),
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, fetchedBy, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

test('a wrong password shows an error on the login page and issues no code', async () => {
  await withCallback((callback) =>
    withPage(async (page) => {
      await page.goto(
        authorizeUrl(keycloak.realmUrl, {
          clientId: REALM_CLIENTS.editor,
          redirectUri: callback.redirectUri,
          scope: 'openid',
          pkce: createPkce(),
        }),
      );
      await page.locator('#kc-form-login').waitFor();
      await page.fill('#username', bob.username);
      await page.fill('#password', 'not-the-password');
      await page.click('#kc-login');
      const error = page.locator('#input-error-username, #input-error').first();
      await error.waitFor();
      assert.match((await error.textContent()) ?? '', /Invalid username or password/i);
      assert.ok(page.url().startsWith(keycloak.realmUrl), `still on Keycloak: ${page.url()}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(callback.received.length, 0, 'the redirect URI was never called');
    }),
  );
});

test("Keycloak's account clients as the realm declares them: only basic, profile and email, and users' default roles", async () => {
  const token = await keycloakAdminToken(keycloak.url);
  const admin = async <T>(path: string) =>
    (await (
      await fetch(`${keycloak.url}/admin/realms/mcp${path}`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as T;
  type Client = {
    id: string;
    fullScopeAllowed: boolean;
    publicClient: boolean;
    rootUrl?: string;
    defaultClientScopes: string[];
    optionalClientScopes: string[];
  };
  for (const clientId of ['account', 'account-console']) {
    const [client] = await admin<Client[]>(`/clients?clientId=${clientId}`);
    assert.ok(client, clientId);
    // No mcp:access (nor expenses:*), default or optional: no token of theirs is one for the MCP server.
    assert.deepEqual(client.defaultClientScopes.sort(), ['basic', 'email', 'profile'], clientId);
    assert.deepEqual(client.optionalClientScopes, [], clientId);
    assert.equal(client.fullScopeAllowed, false, clientId);
    // Keycloak's own placeholder, filled in when it serves them (not the deployment's).
    assert.match(client.rootUrl ?? '', /^\$\{authBaseUrl\}$/, clientId);
  }
  const realm = await admin<{ defaultRole: { name: string } }>('');
  assert.equal(realm.defaultRole.name, 'default-roles-mcp');
  // Keycloak adds uma_authorization itself (authorization services), which no client here uses.
  const composites = await admin<{ name: string }[]>('/roles/default-roles-mcp/composites');
  assert.deepEqual(composites.map((role) => role.name).sort(), [
    'manage-account',
    'offline_access',
    'uma_authorization',
    'view-profile',
  ]);
  const [user] = await admin<{ id: string }[]>(`/users?username=${alice.username}&exact=true`);
  const roles = await admin<{ name: string }[]>(`/users/${user?.id}/role-mappings/realm`);
  assert.deepEqual(
    roles.map((role) => role.name),
    ['default-roles-mcp'],
  );
});
