/**
 * Direct mode, a session over time: the access token expires and the client refreshes it; the
 * user signs out (the client revokes its refresh token at Keycloak) and the refresh token is
 * dead from then on; the user removes a client's access in Keycloak's account console, and its
 * refresh token is dead too.
 */
import { decodeJwtPayload } from '@mcp-auth-stack/testing';
import { type BrowserOAuthProvider, keycloakAdminToken } from '@mcp-auth-stack/testing/mcp-oauth';
import { alice, bob, callTool, carol, expect, type Stack, test } from './fixtures/test.ts';

test('an expired access token is refreshed by the client, which goes on', async ({ stack, oauthClient, connect }) => {
  const oauth = await oauthClient(alice);
  const client = await connect(oauth);
  const first = oauth.tokens();
  expect(first?.refresh_token).toBeTruthy();
  // Make the stored access token one that has expired: Keycloak issued it, the signature is
  // good, only time has passed. The server answers 401 and the SDK refreshes.
  const expired = await test.step('let an access token of this client expire', () => expiredAccessToken(stack, oauth));
  // With the refresh token that refresh returned: the realm rotates them, and the first one is spent.
  const current = oauth.tokens() as NonNullable<typeof first>;
  expect(current.refresh_token, 'rotated').not.toBe(first?.refresh_token);
  oauth.saveTokens({ ...current, access_token: expired });
  await test.step('the next call is refused, refreshed and repeated by the SDK', async () => {
    const result = await callTool(client, 'get_user_expenses');
    expect(result.isError).toBeUndefined();
    expect(oauth.tokens()?.access_token, 'a new access token came from the refresh').not.toBe(expired);
  });
});

test("signing out revokes the client's refresh token at Keycloak: refreshing with it is refused from then on", async ({
  stack,
  oauthClient,
  connect,
}) => {
  const oauth = await oauthClient(bob);
  await connect(oauth);
  const clientId = oauth.clientInformation()?.client_id as string;
  const refresh = (refreshToken: string) =>
    fetch(`${stack.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: refreshToken,
        client_id: clientId,
        resource: stack.mcpUrl,
      }),
    });
  const before = await refresh(oauth.tokens()?.refresh_token as string);
  expect(before.status, 'the refresh token works before').toBe(200);
  const { refresh_token: current } = (await before.json()) as { refresh_token: string };

  await test.step('the client revokes its refresh token (RFC 7009) at sign-out', async () => {
    const revoked = await fetch(`${stack.realmUrl}/protocol/openid-connect/revoke`, {
      method: 'POST',
      body: new URLSearchParams({ token: current, token_type_hint: 'refresh_token', client_id: clientId }),
    });
    expect(revoked.status).toBe(200);
  });

  await test.step('Keycloak refuses the revoked refresh token', async () => {
    const after = await refresh(current);
    expect(after.status).toBe(400);
    expect(((await after.json()) as { error: string }).error).toBe('invalid_grant');
  });
});

test("a user removes a client's access in Keycloak's account console: its refresh token is refused from then on", async ({
  stack,
  browser,
  oauthClient,
  connect,
}) => {
  const oauth = await oauthClient(carol);
  await connect(oauth);
  const clientId = oauth.clientInformation()?.client_id as string;
  const refresh = (refreshToken: string) =>
    fetch(`${stack.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId }),
    });
  const before = await refresh(oauth.tokens()?.refresh_token as string);
  expect(before.status, 'the refresh token works before').toBe(200);
  const { refresh_token: current } = (await before.json()) as { refresh_token: string };

  const context = await browser.newContext();
  let consoleToken = '';
  try {
    const page = await context.newPage();
    page.on('response', async (response) => {
      if (!response.url().endsWith('/protocol/openid-connect/token') || response.status() !== 200) return;
      consoleToken = ((await response.json()) as { access_token: string }).access_token;
    });
    await test.step('carol signs in to the account console and finds the client under Applications', async () => {
      await page.goto(`${stack.realmUrl}/account/applications`);
      await page.locator('#username').fill(carol.username);
      await page.locator('#password').fill(carol.password);
      await page.locator('#kc-login').click();
      await expect(page.getByTestId('page-heading')).toHaveText('Application');
      await page.locator(`#toggle-${clientId}`).click();
      await expect(page.locator(`#content-${clientId}`)).toContainText('Use the expenses MCP server');
    });
    await test.step('and removes its access', async () => {
      await page.locator(`#content-${clientId}`).getByRole('button', { name: 'Remove access' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
      await expect(page.locator(`#toggle-${clientId}`)).toHaveCount(0);
    });
  } finally {
    await context.close();
  }

  await test.step('Keycloak refuses the refresh token from then on', async () => {
    const after = await refresh(current);
    expect(after.status).toBe(400);
    expect(((await after.json()) as { error: string }).error).toBe('invalid_grant');
  });

  await test.step("the account console's own token is not one for the MCP server", async () => {
    expect(consoleToken, 'the console got a token').toBeTruthy();
    const claims = decodeJwtPayload(consoleToken) as { aud?: string | string[]; azp?: string; sub?: string };
    expect(claims.azp).toBe('account-console');
    expect([claims.aud].flat()).toEqual(['account']);
    expect(claims.sub, 'carol, by her id').toBeTruthy();
    const refused = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${consoleToken}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(refused.status).toBe(401);
  });
});

/**
 * An access token of this client that has already expired: Keycloak's admin API shortens the
 * client's access-token lifespan to 1 s, a refresh yields a token, and the test waits it out.
 */
async function expiredAccessToken(stack: Stack, oauth: BrowserOAuthProvider): Promise<string> {
  const admin = await keycloakAdminToken(stack.keycloakUrl);
  const clientId = (oauth.clientInformation() as { client_id: string }).client_id;
  const clients = (await (
    await fetch(`${stack.keycloakUrl}/admin/realms/mcp/clients?clientId=${encodeURIComponent(clientId)}`, {
      headers: { authorization: `Bearer ${admin}` },
    })
  ).json()) as { id: string; attributes?: Record<string, string> }[];
  const client = clients[0] as { id: string; attributes?: Record<string, string> };
  const setLifespan = (seconds: string) =>
    fetch(`${stack.keycloakUrl}/admin/realms/mcp/clients/${client.id}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...client, attributes: { ...client.attributes, 'access.token.lifespan': seconds } }),
    });
  expect((await setLifespan('1')).status).toBe(204);
  const refreshed = await fetch(`${stack.realmUrl}/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: oauth.tokens()?.refresh_token as string,
      client_id: clientId,
      resource: stack.mcpUrl,
    }),
  });
  const body = (await refreshed.json()) as { access_token: string; refresh_token: string };
  oauth.saveTokens({
    ...(oauth.tokens() as NonNullable<ReturnType<typeof oauth.tokens>>),
    refresh_token: body.refresh_token,
  });
  // The server allows 5 s of clock leeway.
  const expiresAt = Number(decodeJwtPayload(body.access_token).exp) * 1000;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt + 6_500 - Date.now())));
  await setLifespan('300');
  return body.access_token;
}
