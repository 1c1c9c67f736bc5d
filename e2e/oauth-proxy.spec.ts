/**
 * OAuth proxy mode: the server is the MCP client's authorization server (registration, its own
 * consent page, PKCE, its own tokens), and the user signs in at Keycloak through the realm's
 * fixed confidential client `mcp-oauth-proxy`, as with a provider that has no DCR (Entra).
 */
import { decodeJwtPayload } from '@mcp-auth-stack/testing';
import { keycloakUserId, type ProxyOAuthProvider, startCimdDocument } from '@mcp-auth-stack/testing/mcp-oauth';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import type pg from 'pg';
import { alice, bob, callTool, carol, expect, lunch, ownExpenses, type Stack, test } from './fixtures/test.ts';

/** Runs the authorization code flow with the SDK's own `auth()`; returns the redirect's parameters. */
async function authorizeOnce(stack: Stack, oauth: ProxyOAuthProvider): Promise<URLSearchParams> {
  expect(await auth(oauth, { serverUrl: stack.mcpUrl })).toBe('REDIRECT');
  const params = await oauth.callback.next();
  const code = params.get('code');
  if (code) expect(await auth(oauth, { serverUrl: stack.mcpUrl, authorizationCode: code })).toBe('AUTHORIZED');
  return params;
}

const count = async (sql: pg.Pool, table: string) =>
  (await sql.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n as number;

test('the SDK client registers at the proxy, alice approves its consent page and signs in at Keycloak; the expense is stored under her Keycloak sub', async ({
  stack,
  sql,
  proxyClient,
  connect,
}) => {
  const oauth = await proxyClient(alice, { clientName: 'Proxy e2e client' });
  const client = await connect(oauth);
  const clientId = oauth.clientInformation()?.client_id as string;

  await test.step('the login went through the proxy with PKCE and the resource', async () => {
    const authorizeUrl = oauth.authorizationUrls[0] as URL;
    expect(`${authorizeUrl.origin}${authorizeUrl.pathname}`).toBe(`${stack.serverUrl}/authorize`);
    expect(authorizeUrl.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorizeUrl.searchParams.get('resource')).toBe(stack.mcpUrl);
    expect(clientId, 'registered dynamically at the proxy').toBeTruthy();
  });

  await test.step('the consent page named the client, its id, its redirect URI and the scopes', async () => {
    expect(oauth.proxyConsentPages, 'the consent page was shown once').toHaveLength(1);
    const consent = oauth.proxyConsentPages[0] as string;
    expect(consent).toContain('Proxy e2e client');
    expect(consent).toContain(clientId);
    expect(consent).toContain(oauth.callback.redirectUri);
    for (const scope of ['mcp:access', 'expenses:read', 'expenses:write']) expect(consent).toContain(scope);
    expect(oauth.keycloakLogins, 'signed in at Keycloak').toBe(1);
  });

  const aliceId = await keycloakUserId(stack.keycloakUrl, alice.username);
  await test.step("the token is the proxy's own, for this server, about alice", async () => {
    const token = decodeJwtPayload(oauth.tokens()?.access_token as string);
    expect(token.iss).toBe(stack.serverUrl);
    expect([token.aud].flat()).toEqual([stack.mcpUrl]);
    expect(token.sub).toBe(aliceId);
    expect(token.client_id).toBe(clientId);
  });

  await test.step('she adds an expense, stored under her Keycloak sub', async () => {
    const added = await callTool(client, 'add_user_expense', { ...lunch, description: 'Proxy lunch' });
    expect(added.isError).toBeUndefined();
    // The project's first test: the database held nothing before.
    expect(await ownExpenses(client)).toEqual(['Proxy lunch']);
    const rows = (await sql.query('SELECT user_id FROM expenses')).rows;
    expect(rows, "stored under alice's Keycloak sub").toEqual([{ user_id: aliceId }]);
  });
});

test('cross-user statistics: an administrator upstream gets expenses:admin through the proxy; alice asking for it does not', async ({
  stack,
  proxyClient,
}) => {
  const scope = 'mcp:access expenses:read expenses:admin';
  const login = (user: typeof alice) =>
    test.step(`${user.username} asks for "${scope}"`, async () => {
      const oauth = await proxyClient(user, { clientName: `stats for ${user.username}` });
      expect(await auth(oauth, { serverUrl: stack.mcpUrl, scope })).toBe('REDIRECT');
      const code = (await oauth.callback.next()).get('code');
      expect(code, `${user.username} got a code`).toBeTruthy();
      expect(await auth(oauth, { serverUrl: stack.mcpUrl, scope, authorizationCode: code as string })).toBe(
        'AUTHORIZED',
      );
      expect(oauth.proxyConsentPages[0] ?? '', 'the consent page names it').toMatch(/statistics across all users/);
      return oauth.tokens()?.access_token as string;
    });
  const stats = (token: string) =>
    fetch(stack.mcpUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'get_expense_stats', arguments: {} },
      }),
    });

  // carol is in the realm's expenses-admin group: Keycloak grants the proxy's client the scope.
  const carolToken = await login(carol);
  expect(String(decodeJwtPayload(carolToken).scope).split(' ')).toContain('expenses:admin');
  const allowed = await stats(carolToken);
  expect(allowed.status).toBe(200);
  const { result } = (await allowed.json()) as { result: { isError?: boolean; structuredContent: { count: number } } };
  expect(result.isError).toBeUndefined();
  expect(result.structuredContent.count, 'counts the expenses of others').toBeGreaterThanOrEqual(1);

  // alice asked and consented, but the upstream did not grant it: her token goes without.
  const aliceToken = await login(alice);
  expect(String(decodeJwtPayload(aliceToken).scope).split(' ')).not.toContain('expenses:admin');
  const refused = await stats(aliceToken);
  expect(refused.status).toBe(403);
  expect(refused.headers.get('www-authenticate') ?? '').toMatch(/error="insufficient_scope"/);
});

test('consent denied: the client gets access_denied, bob is never sent to Keycloak, nothing is stored', async ({
  stack,
  sql,
  proxyClient,
}) => {
  const before = { grants: await count(sql, 'oauth_proxy_grants'), codes: await count(sql, 'oauth_proxy_codes') };
  const oauth = await proxyClient(bob, { clientName: 'Denied client', decision: 'deny' });
  const params = await authorizeOnce(stack, oauth);
  expect(params.get('error')).toBe('access_denied');
  expect(params.get('code')).toBeNull();
  expect(params.get('iss')).toBe(stack.serverUrl);
  expect(oauth.proxyConsentPages).toHaveLength(1);
  expect(oauth.keycloakLogins, 'never sent to Keycloak').toBe(0);
  expect(oauth.tokens()).toBeUndefined();
  expect({ grants: await count(sql, 'oauth_proxy_grants'), codes: await count(sql, 'oauth_proxy_codes') }).toEqual(
    before,
  );
  expect(await count(sql, 'oauth_proxy_transactions'), 'no upstream login started').toBe(0);
  const bobId = await keycloakUserId(stack.keycloakUrl, bob.username);
  expect((await sql.query('SELECT count(*)::int AS n FROM expenses WHERE user_id = $1', [bobId])).rows[0].n).toBe(0);
});

test('remembered consent skips the page for the same client only', async ({ stack, browser, proxyClient }) => {
  const context = await browser.newContext();
  try {
    const first = await proxyClient(carol, { clientName: 'Remembering client', remember: true, context });
    await test.step('the first login asks, and carol ticks "remember"', async () => {
      expect((await authorizeOnce(stack, first)).get('error')).toBeNull();
      expect(first.proxyConsentPages, 'asked the first time').toHaveLength(1);
      expect(first.tokens()?.access_token).toBeTruthy();
    });
    await test.step('the same client again in the same browser goes straight through', async () => {
      first.forgetTokens();
      const again = await authorizeOnce(stack, first);
      expect(again.get('code'), again.toString()).toBeTruthy();
      expect(first.proxyConsentPages, 'not asked again').toHaveLength(1);
      expect(first.tokens()?.access_token).toBeTruthy();
    });
    await test.step('another client in the same browser is asked', async () => {
      const other = await proxyClient(carol, { clientName: 'Other client', context });
      const otherParams = await authorizeOnce(stack, other);
      expect(otherParams.get('code'), otherParams.toString()).toBeTruthy();
      expect(other.proxyConsentPages, 'a different client is asked').toHaveLength(1);
      expect(other.proxyConsentPages[0] ?? '').toContain('Other client');
      expect(other.clientInformation()?.client_id).not.toBe(first.clientInformation()?.client_id);
    });
  } finally {
    await context.close();
  }
});

test('a client identified by its metadata document URL signs in through the proxy without a stored registration', async ({
  stack,
  sql,
  proxyClient,
  connect,
}) => {
  const cimd = await startCimdDocument('CIMD proxy client');
  try {
    const oauth = await proxyClient(bob, { clientName: 'CIMD proxy client' });
    cimd.setRedirect(oauth.callback.redirectUri);
    // The SDK's clientMetadataUrl insists on https; the loopback document (accepted on a
    // loopback base URL) is handed to it as the client id it already has.
    oauth.saveClientInformation({ client_id: cimd.url });
    const registeredBefore = await count(sql, 'oauth_proxy_clients');
    const client = await connect(oauth);
    expect(cimd.fetches(), 'the proxy fetched the document').toBeGreaterThan(0);
    expect(oauth.proxyConsentPages[0] ?? '').toContain('CIMD proxy client');
    expect(decodeJwtPayload(oauth.tokens()?.access_token as string).client_id).toBe(cimd.url);
    await callTool(client, 'add_user_expense', { ...lunch, description: 'CIMD lunch' });
    const rows = (await sql.query("SELECT user_id FROM expenses WHERE description = 'CIMD lunch'")).rows;
    expect(rows).toEqual([{ user_id: await keycloakUserId(stack.keycloakUrl, 'bob') }]);
    expect(await count(sql, 'oauth_proxy_clients'), 'no registration was stored').toBe(registeredBefore);
  } finally {
    await cimd.close();
  }
});

test("signing out revokes the grant at the proxy's /revoke: the refresh token and the access token are refused from then on", async ({
  stack,
  proxyClient,
  connect,
}) => {
  const oauth = await proxyClient(alice, { clientName: 'Revoking client' });
  const client = await connect(oauth);
  await callTool(client, 'get_user_expenses');
  const clientId = oauth.clientInformation()?.client_id as string;
  const tokens = oauth.tokens() as { access_token: string; refresh_token?: string };
  expect(tokens.refresh_token).toBeTruthy();

  await test.step('the client revokes its refresh token (RFC 7009) at sign-out', async () => {
    const revoked = await fetch(`${stack.serverUrl}/revoke`, {
      method: 'POST',
      body: new URLSearchParams({
        token: tokens.refresh_token as string,
        token_type_hint: 'refresh_token',
        client_id: clientId,
      }),
    });
    expect(revoked.status).toBe(200);
  });

  await test.step('the proxy refuses the refresh token', async () => {
    const refreshed = await fetch(`${stack.serverUrl}/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: tokens.refresh_token as string,
        client_id: clientId,
      }),
    });
    expect(refreshed.status).toBe(400);
    expect(((await refreshed.json()) as { error: string }).error).toBe('invalid_grant');
  });

  await test.step('and the server refuses the access token of that grant', async () => {
    const response = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: `Bearer ${tokens.access_token}`,
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate') ?? '').toMatch(/error="invalid_token"/);
  });
});
