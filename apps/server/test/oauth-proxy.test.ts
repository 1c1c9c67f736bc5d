import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEMO_USERS, type RunningKeycloak } from '@mcp-auth-stack/keycloak';
import { type CallbackServer, freePort, startCallbackServer } from '@mcp-auth-stack/testing';
import { approveProxyConsent, launchChromium } from '@mcp-auth-stack/testing/browser';
import { AUTHORIZATION_SERVER_PASSES, checkAuthorizationServer, summary } from '@mcp-auth-stack/testing/conformance';
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';
import type { Browser } from 'playwright-core';
import { startTestStack, type TestStack } from './helpers.ts';

/**
 * The server in `oauth_proxy` mode: it is the authorization server of the MCP client (DCR,
 * its own consent page, PKCE, its own tokens), and the user signs in at a real Keycloak 26.7.3
 * through the realm's fixed confidential client `mcp-oauth-proxy`. Real PostgreSQL and
 * Chromium. Here: its keys, and two replicas on one database; the login flows of an MCP client
 * (consent approved, denied, remembered; CIMD; statistics; revocation) are the Playwright spec
 * e2e/oauth-proxy.spec.ts, run against `pnpm start`.
 */
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let browser: Browser;
let serverPort: number;
let baseUrl: string;
let dataDir: string;
let stack: TestStack;
const callbacks: CallbackServer[] = [];

before(
  async () => {
    ({ keycloak, serverPort, baseUrl } = await startKeycloakForServer());
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

/** Alice in a fresh browser: approves the proxy's consent, signs in at Keycloak, reaches the callback. */
async function approveAndSignIn(authorizationUrl: string, callbackPrefix: string): Promise<void> {
  const context = await browser.newContext();
  context.setDefaultTimeout(15_000);
  try {
    const page = await context.newPage();
    await page.goto(authorizationUrl);
    await page.locator('form[action$="/consent"]').waitFor();
    await approveProxyConsent(page);
    await page.locator('#kc-form-login').waitFor();
    await page.fill('#username', alice.username);
    await page.fill('#password', alice.password);
    await page.click('#kc-login');
    await page.waitForURL((target) => target.href.startsWith(callbackPrefix));
  } finally {
    await context.close();
  }
}

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
      await approveAndSignIn(authorize.toString(), callback.redirectUri);
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

  test('Chromium follows the consent on to an IPv6 loopback client ([::1]) and through a single sign-on that redirects straight back', async () => {
    // A form-action policy cannot name [::1], and Chromium checks every redirect after the form's
    // POST against it: denied and approved alike, the consent must lead there through a page.
    const callback = await startCallbackServer('::1');
    callbacks.push(callback);
    const registered = (await (
      await fetch(`${baseUrl}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'IPv6 client', redirect_uris: [callback.redirectUri] }),
      })
    ).json()) as { client_id: string };
    const authorizationUrl = (state: string) => {
      const authorize = new URL(`${baseUrl}/authorize`);
      authorize.search = new URLSearchParams({
        response_type: 'code',
        client_id: registered.client_id,
        redirect_uri: callback.redirectUri,
        state,
        code_challenge: createHash('sha256').update(randomBytes(32).toString('base64url')).digest('base64url'),
        code_challenge_method: 'S256',
        resource: `${baseUrl}/mcp`,
      }).toString();
      return authorize.toString();
    };
    const context = await browser.newContext();
    context.setDefaultTimeout(15_000);
    try {
      const page = await context.newPage();
      await page.goto(authorizationUrl('denied'));
      await page.click('button[name="decision"][value="deny"]');
      const denied = await callback.next();
      assert.deepEqual([denied.get('error'), denied.get('state')], ['access_denied', 'denied']);
      // The callback got the request; the page commits to it next: a goto before that is cut short.
      await page.waitForURL((target) => target.href.startsWith(callback.redirectUri));

      await page.goto(authorizationUrl('first'));
      await approveProxyConsent(page);
      await page.locator('#kc-form-login').waitFor();
      await page.fill('#username', alice.username);
      await page.fill('#password', alice.password);
      await page.click('#kc-login');
      const first = await callback.next();
      assert.deepEqual([first.get('state'), typeof first.get('code')], ['first', 'string']);
      await page.waitForURL((target) => target.href.startsWith(callback.redirectUri));

      // Keycloak's session is alive: it redirects straight back to the proxy, which redirects on to [::1].
      await page.goto(authorizationUrl('again'));
      await approveProxyConsent(page);
      const again = await callback.next();
      assert.deepEqual([again.get('state'), typeof again.get('code')], ['again', 'string']);
    } finally {
      await context.close();
    }
  });

  test('the official MCP conformance suite, as a client of this authorization server: metadata and the code grant pass', async () => {
    const run = await checkAuthorizationServer(baseUrl, { resource: `${baseUrl}/mcp`, signIn: approveAndSignIn });
    assert.deepEqual(summary(run), AUTHORIZATION_SERVER_PASSES, run.output);
  });
});
