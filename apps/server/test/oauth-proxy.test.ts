import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEMO_USERS, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import {
  type CallbackServer,
  decodeJwtPayload,
  freePort,
  launchChromium,
  startCallbackServer,
} from '@mcp-auth-stack/keycloak/testing';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Browser, BrowserContext } from 'playwright-core';
import { postMcp, startTestStack, type TestStack } from './helpers.ts';
import {
  BrowserOAuthProvider,
  connectWithOAuth,
  keycloakUserId,
  type LoginUser,
  startCimdDocument,
} from './oauth-helpers.ts';

/**
 * The server in `oauth_proxy` mode: it is the authorization server of the MCP client (DCR,
 * its own consent page, PKCE, its own tokens), and the user signs in at a real Keycloak 26.7.3
 * through the realm's fixed confidential client `mcp-oauth-proxy`. Real PostgreSQL, Chromium,
 * and the official SDK client.
 */
const [alice, bob, carol] = DEMO_USERS as [(typeof DEMO_USERS)[0], (typeof DEMO_USERS)[0], (typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let browser: Browser;
let serverPort: number;
let baseUrl: string;
let dataDir: string;
let stack: TestStack;
const callbacks: CallbackServer[] = [];

before(
  async () => {
    serverPort = await freePort();
    baseUrl = `http://localhost:${serverPort}`;
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      realmEnv: {
        MCP_SERVER_RESOURCE_URL: `${baseUrl}/mcp`,
        MCP_OAUTH_PROXY_CALLBACK_URL: `${baseUrl}/auth/callback`,
      },
    });
    browser = await launchChromium();
    dataDir = await mkdtemp(join(tmpdir(), 'oauth-proxy-data-'));
    // No keys configured: on a loopback base URL the server generates them into DATA_DIR.
    stack = await startTestStack({
      PORT: String(serverPort),
      MCP_SERVER_BASE_URL: baseUrl,
      MCP_AUTH_PROVIDER: 'oauth_proxy',
      KEYCLOAK_REALM_URL: keycloak.realmUrl,
      DATA_DIR: dataDir,
    });
  },
  { timeout: 600_000 },
);

after(async () => {
  await stack?.close();
  for (const callback of callbacks) await callback.close();
  await browser?.close();
  await keycloak?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

interface ProxyLoginOptions {
  clientName?: string;
  /** What the user does on the proxy's consent page (default approve). */
  decision?: 'approve' | 'deny';
  /** Ticks "Remember my decision for this application". */
  remember?: boolean;
  /** A browser context kept across logins (its cookies: remembered consent, Keycloak's session). */
  context?: BrowserContext;
}

/**
 * The SDK client's OAuth side with the proxy in between: the browser first sees the proxy's
 * consent page (approve or deny), then, when approved, Keycloak's login page.
 */
class ProxyOAuthProvider extends BrowserOAuthProvider {
  readonly proxy: ProxyLoginOptions;
  /** Text of each of the proxy's consent pages shown. */
  readonly proxyConsentPages: string[] = [];
  /** How many times Keycloak's login form was filled in. */
  keycloakLogins = 0;

  constructor(callback: CallbackServer, user: LoginUser, options: ProxyLoginOptions) {
    super(browser, callback, user, options.clientName ? { clientName: options.clientName } : {});
    this.proxy = options;
  }

  override async redirectToAuthorization(url: URL): Promise<void> {
    this.authorizationUrls.push(url);
    const context = this.proxy.context ?? (await this.browser.newContext());
    context.setDefaultTimeout(15_000);
    const page = await context.newPage();
    try {
      await page.goto(url.toString());
      const atCallback = (target: URL) => target.href.startsWith(this.callback.redirectUri);
      const next = () =>
        Promise.race([
          page
            .locator('form[action$="/consent"]')
            .waitFor()
            .then(() => 'consent' as const),
          page
            .locator('#kc-form-login')
            .waitFor()
            .then(() => 'login' as const),
          page.waitForURL(atCallback).then(() => 'redirected' as const),
        ]);
      let step = await next();
      if (step === 'consent') {
        this.proxyConsentPages.push((await page.locator('main').textContent()) ?? '');
        if (this.proxy.remember) await page.check('input[name="remember"]');
        // Wait until the form's page is gone, or the race below would find the form again.
        await Promise.all([
          page.waitForURL((target) => !target.href.startsWith(`${baseUrl}/authorize`)),
          page.click(`button[name="decision"][value="${this.proxy.decision ?? 'approve'}"]`),
        ]);
        step = await next();
      }
      if (step === 'login') {
        this.keycloakLogins++;
        await page.fill('#username', this.user.username);
        await page.fill('#password', this.user.password);
        await page.click('#kc-login');
        await page.waitForURL(atCallback);
      }
    } finally {
      await page.close();
      if (!this.proxy.context) await context.close();
    }
  }
}

async function provider(user: LoginUser, options: ProxyLoginOptions = {}) {
  const callback = await startCallbackServer();
  callbacks.push(callback);
  return new ProxyOAuthProvider(callback, user, options);
}

const call = (client: Client, name: string, args: Record<string, unknown> = {}) =>
  client.callTool({ name, arguments: args }) as Promise<CallToolResult>;
const lunch = { date: '2025-12-17', amount: 12.5, category: 'food', description: 'Lunch', payment_method: 'visa' };

/** Runs the authorization code flow with the SDK's own `auth()`; returns the redirect's parameters. */
async function authorizeOnce(oauth: ProxyOAuthProvider): Promise<URLSearchParams> {
  const serverUrl = `${baseUrl}/mcp`;
  assert.equal(await auth(oauth, { serverUrl }), 'REDIRECT');
  const params = await oauth.callback.next();
  const code = params.get('code');
  if (code) assert.equal(await auth(oauth, { serverUrl, authorizationCode: code }), 'AUTHORIZED');
  return params;
}

const count = async (table: string) =>
  (await stack.sql.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n as number;

describe('oauth_proxy: the server as authorization server in front of Keycloak', () => {
  test('generated the local keys into DATA_DIR, readable by the owner only', async () => {
    const info = await stat(join(dataDir, 'oauth-proxy-keys.json'));
    assert.equal(info.mode & 0o777, 0o600);
    const metadata = (await (await fetch(`${baseUrl}/.well-known/oauth-authorization-server`)).json()) as Record<
      string,
      unknown
    >;
    assert.equal(metadata.issuer, baseUrl);
    assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
    const resource = (await (await fetch(`${baseUrl}/.well-known/oauth-protected-resource/mcp`)).json()) as Record<
      string,
      unknown
    >;
    assert.deepEqual(resource.authorization_servers, [baseUrl]);
    const ready = await fetch(`${baseUrl}/ready`);
    assert.equal(ready.status, 200, await ready.clone().text());
  });

  test('the SDK client registers at the proxy, the user approves its consent page and signs in at Keycloak; the expense belongs to the upstream sub', async () => {
    const oauth = await provider(alice, { clientName: 'Proxy e2e client' });
    const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
    try {
      const authorizeUrl = oauth.authorizationUrls[0] as URL;
      assert.equal(`${authorizeUrl.origin}${authorizeUrl.pathname}`, `${baseUrl}/authorize`);
      assert.equal(authorizeUrl.searchParams.get('code_challenge_method'), 'S256');
      assert.equal(authorizeUrl.searchParams.get('resource'), `${baseUrl}/mcp`);
      const clientId = oauth.clientInformation()?.client_id as string;
      assert.ok(clientId, 'registered dynamically at the proxy');
      assert.equal(oauth.proxyConsentPages.length, 1, 'the consent page was shown once');
      const consent = oauth.proxyConsentPages[0] as string;
      assert.match(consent, /Proxy e2e client/, 'names the client');
      assert.ok(consent.includes(clientId), 'shows the client id');
      assert.ok(consent.includes(oauth.callback.redirectUri), 'shows the redirect URI');
      for (const scope of ['mcp:access', 'expenses:read', 'expenses:write']) assert.ok(consent.includes(scope), scope);
      assert.equal(oauth.keycloakLogins, 1, 'signed in at Keycloak');

      const aliceId = await keycloakUserId(keycloak.url, alice.username);
      const token = decodeJwtPayload(oauth.tokens()?.access_token as string);
      assert.equal(token.iss, baseUrl, "the proxy's own token");
      assert.deepEqual([token.aud].flat(), [`${baseUrl}/mcp`]);
      assert.equal(token.sub, aliceId);
      assert.equal(token.client_id, clientId);

      const added = await call(client, 'add_user_expense', lunch);
      assert.equal(added.isError, undefined);
      const { expenses } = (await call(client, 'get_user_expenses')).structuredContent as {
        expenses: { description: string }[];
      };
      assert.deepEqual(
        expenses.map((e) => e.description),
        ['Lunch'],
      );
      const rows = (await stack.sql.query('SELECT user_id FROM expenses')).rows;
      assert.deepEqual(rows, [{ user_id: aliceId }], "stored under alice's Keycloak sub");
    } finally {
      await client.close();
    }
  });

  test('cross-user statistics: an administrator upstream gets expenses:admin through the proxy; alice asking for it does not', async () => {
    const serverUrl = `${baseUrl}/mcp`;
    const scope = 'mcp:access expenses:read expenses:admin';
    const login = async (user: LoginUser) => {
      const oauth = await provider(user, { clientName: `stats for ${user.username}` });
      assert.equal(await auth(oauth, { serverUrl, scope }), 'REDIRECT');
      const code = (await oauth.callback.next()).get('code');
      assert.ok(code, `${user.username} got a code`);
      assert.equal(await auth(oauth, { serverUrl, scope, authorizationCode: code }), 'AUTHORIZED');
      assert.match(oauth.proxyConsentPages[0] ?? '', /statistics across all users/, 'the consent page names it');
      return oauth.tokens()?.access_token as string;
    };
    const stats = (token: string) =>
      postMcp(
        serverUrl,
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_expense_stats', arguments: {} } },
        { authorization: `Bearer ${token}` },
      );

    // carol is in the realm's expenses-admin group: Keycloak grants the proxy's client the scope.
    const carolToken = await login(carol);
    assert.ok(String(decodeJwtPayload(carolToken).scope).split(' ').includes('expenses:admin'));
    const allowed = await stats(carolToken);
    assert.equal(allowed.status, 200);
    const { result } = (await allowed.json()) as { result: CallToolResult };
    assert.equal(result.isError, undefined);
    assert.ok((result.structuredContent as { count: number }).count >= 1, 'counts the expenses of others');

    // alice asked and consented, but the upstream did not grant it: her token goes without.
    const aliceToken = await login(alice);
    assert.ok(!String(decodeJwtPayload(aliceToken).scope).split(' ').includes('expenses:admin'));
    const refused = await stats(aliceToken);
    assert.equal(refused.status, 403);
    assert.match(refused.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/);
  });

  test('consent denied: the client gets access_denied, no login upstream, nothing stored', async () => {
    const before = { grants: await count('oauth_proxy_grants'), codes: await count('oauth_proxy_codes') };
    const oauth = await provider(bob, { clientName: 'Denied client', decision: 'deny' });
    const params = await authorizeOnce(oauth);
    assert.equal(params.get('error'), 'access_denied');
    assert.equal(params.get('code'), null);
    assert.equal(params.get('iss'), baseUrl);
    assert.equal(oauth.proxyConsentPages.length, 1);
    assert.equal(oauth.keycloakLogins, 0, 'never sent to Keycloak');
    assert.equal(oauth.tokens(), undefined);
    assert.deepEqual({ grants: await count('oauth_proxy_grants'), codes: await count('oauth_proxy_codes') }, before);
    assert.equal(await count('oauth_proxy_transactions'), 0, 'no upstream login started');
    const bobId = await keycloakUserId(keycloak.url, bob.username);
    assert.equal(
      (await stack.sql.query('SELECT count(*)::int AS n FROM expenses WHERE user_id = $1', [bobId])).rows[0].n,
      0,
    );
  });

  test('remembered consent skips the page for the same client only', async () => {
    const context = await browser.newContext();
    try {
      const first = await provider(carol, { clientName: 'Remembering client', remember: true, context });
      assert.equal((await authorizeOnce(first)).get('error'), null);
      assert.equal(first.proxyConsentPages.length, 1, 'asked the first time');
      assert.ok(first.tokens()?.access_token);

      // The same client again in the same browser: straight to Keycloak (whose session signs in).
      first.forgetTokens();
      const again = await authorizeOnce(first);
      assert.ok(again.get('code'), again.toString());
      assert.equal(first.proxyConsentPages.length, 1, 'not asked again');
      assert.ok(first.tokens()?.access_token);

      // Another client in the same browser is asked.
      const other = await provider(carol, { clientName: 'Other client', context });
      const otherParams = await authorizeOnce(other);
      assert.ok(otherParams.get('code'), otherParams.toString());
      assert.equal(other.proxyConsentPages.length, 1, 'a different client is asked');
      assert.match(other.proxyConsentPages[0] ?? '', /Other client/);
      assert.notEqual(other.clientInformation()?.client_id, first.clientInformation()?.client_id);
    } finally {
      await context.close();
    }
  });

  test('the same through a Client ID Metadata Document instead of registration', async () => {
    const cimd = await startCimdDocument('CIMD proxy client');
    try {
      const oauth = await provider(bob, { clientName: 'CIMD proxy client' });
      cimd.setRedirect(oauth.callback.redirectUri);
      // The SDK's clientMetadataUrl insists on https; the loopback document (accepted on a
      // loopback base URL) is handed to it as the client id it already has.
      oauth.saveClientInformation({ client_id: cimd.url });
      const registeredBefore = await count('oauth_proxy_clients');
      const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
      try {
        assert.ok(cimd.fetches() > 0, 'the proxy fetched the document');
        assert.match(oauth.proxyConsentPages[0] ?? '', /CIMD proxy client/);
        assert.equal(decodeJwtPayload(oauth.tokens()?.access_token as string).client_id, cimd.url);
        await call(client, 'add_user_expense', { ...lunch, description: 'CIMD lunch' });
        const rows = (await stack.sql.query("SELECT user_id FROM expenses WHERE description = 'CIMD lunch'")).rows;
        assert.deepEqual(rows, [{ user_id: await keycloakUserId(keycloak.url, 'bob') }]);
        assert.equal(await count('oauth_proxy_clients'), registeredBefore, 'no registration was stored');
      } finally {
        await client.close();
      }
    } finally {
      await cimd.close();
    }
  });

  test('two replicas on one database: a login started on one completes on the other, and tokens work on both', async () => {
    // Replica B: another port, the same public URL (as behind a load balancer) and database.
    const replicaPort = await freePort();
    const replica = await startTestStack(
      {
        PORT: String(replicaPort),
        MCP_SERVER_BASE_URL: baseUrl,
        MCP_AUTH_PROVIDER: 'oauth_proxy',
        KEYCLOAK_REALM_URL: keycloak.realmUrl,
        DATA_DIR: dataDir,
      },
      { sharedDatabase: stack.database },
    );
    const b = `http://localhost:${replicaPort}`;
    const callback = await startCallbackServer();
    callbacks.push(callback);
    try {
      // The client registers at B; the browser, at the public URL, authorizes at A (consent,
      // Keycloak, callback); the code is exchanged at B and the refresh token at A. Every step
      // finds what the previous one stored, whichever replica stored it.
      const registered = (await (
        await fetch(`${b}/register`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            client_name: 'Replica client',
            redirect_uris: [callback.redirectUri],
            token_endpoint_auth_method: 'none',
          }),
        })
      ).json()) as { client_id: string };
      const verifier = randomBytes(32).toString('base64url');
      const authorize = new URL(`${baseUrl}/authorize`);
      authorize.search = new URLSearchParams({
        response_type: 'code',
        client_id: registered.client_id,
        redirect_uri: callback.redirectUri,
        scope: 'mcp:access expenses:read expenses:write',
        state: 'replica-state',
        code_challenge: createHash('sha256').update(verifier).digest('base64url'),
        code_challenge_method: 'S256',
        resource: `${baseUrl}/mcp`,
      }).toString();
      const context = await browser.newContext();
      context.setDefaultTimeout(15_000);
      try {
        const page = await context.newPage();
        await page.goto(authorize.toString());
        await page.locator('form[action$="/consent"]').waitFor();
        await page.click('button[name="decision"][value="approve"]');
        await page.locator('#kc-form-login').waitFor();
        await page.fill('#username', alice.username);
        await page.fill('#password', alice.password);
        await page.click('#kc-login');
        await page.waitForURL((target) => target.href.startsWith(callback.redirectUri));
      } finally {
        await context.close();
      }
      const params = await callback.next();
      assert.equal(params.get('state'), 'replica-state');
      assert.equal(params.get('iss'), baseUrl);
      const token = await fetch(`${b}/token`, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: params.get('code') as string,
          redirect_uri: callback.redirectUri,
          client_id: registered.client_id,
          code_verifier: verifier,
          resource: `${baseUrl}/mcp`,
        }),
      });
      assert.equal(token.status, 200);
      const issued = (await token.json()) as { access_token: string; refresh_token: string };
      const refreshed = await fetch(`${baseUrl}/token`, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: issued.refresh_token,
          client_id: registered.client_id,
        }),
      });
      assert.equal(refreshed.status, 200, await refreshed.clone().text());
      const { access_token } = (await refreshed.json()) as { access_token: string };
      for (const server of [stack.url, replica.url]) {
        const response = await fetch(`${server}/mcp`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            authorization: `Bearer ${access_token}`,
          },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
        });
        assert.equal(response.status, 200, `${server}: ${await response.clone().text()}`);
      }
    } finally {
      await replica.close();
    }
  });
});
