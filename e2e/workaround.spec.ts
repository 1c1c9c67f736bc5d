/**
 * Workaround mode: MCP clients register through this server, which repairs what Keycloak 26.7.3
 * gets wrong about registrations (the realm's audience scope, `scope` and `resource` members);
 * logins pass through it too, and its callback names it as the issuer (RFC 9207).
 */
import { stepUp } from './fixtures/oauth-flows.ts';
import { alice, callTool, expect, lunch, ownExpenses, test } from './fixtures/test.ts';

test('the SDK client registers through the server, signs alice in at Keycloak and works end to end', async ({
  stack,
  oauthClient,
  connect,
}) => {
  const oauth = await oauthClient(alice, { clientName: 'Workaround e2e client' });
  const client = await connect(oauth);
  await test.step('registered and signed in through this server', async () => {
    expect(oauth.clientInformation()?.client_id).toBeTruthy();
    const authorizeUrl = oauth.authorizationUrls[0] as URL;
    expect(`${authorizeUrl.origin}${authorizeUrl.pathname}`).toBe(`${stack.serverUrl}/authorize`);
    expect(oauth.consentPages[0], 'the consent page names the client').toContain('Workaround e2e client');
  });
  await test.step('she adds an expense and reads it back', async () => {
    await callTool(client, 'add_user_expense', { ...lunch, description: 'Via workaround' });
    expect(await ownExpenses(client)).toEqual(['Via workaround']);
  });
});

test('step-up: a read-only token gets 403 on add_user_expense; authorizing again with write succeeds', async ({
  stack,
  sql,
  oauthClient,
  connect,
}) => {
  const outcome = await stepUp(stack.mcpUrl, sql, await oauthClient(alice), connect);
  expect(outcome.error).toBeUndefined();
  expect(outcome.added).toBe(true);
});
