/**
 * Direct mode, the way most MCP clients connect: from a bare 401 the client discovers the
 * server's protected resource metadata and Keycloak, registers itself there (Dynamic Client
 * Registration), and the user signs in in the browser (PKCE, `resource`, consent).
 */
import { decodeJwtPayload } from '@mcp-auth-stack/testing';
import { alice, callTool, expect, lunch, ownExpenses, test } from './fixtures/test.ts';

test('a new MCP client registers at Keycloak, the user signs in and consents, and the expense is stored as hers', async ({
  stack,
  sql,
  oauthClient,
  connect,
}) => {
  const oauth = await oauthClient(alice, { clientName: 'DCR e2e client' });
  const client = await connect(oauth);

  await test.step('the login was an authorization code flow with PKCE and the resource, at Keycloak', async () => {
    const authorizeUrl = oauth.authorizationUrls[0] as URL;
    expect(authorizeUrl.href.startsWith(`${stack.realmUrl}/protocol/openid-connect/auth`)).toBe(true);
    expect(authorizeUrl.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorizeUrl.searchParams.get('resource')).toBe(stack.mcpUrl);
    expect(oauth.consentPages[0], 'the consent page names the client').toContain('DCR e2e client');
    expect(oauth.clientInformation()?.client_id, 'registered dynamically').toBeTruthy();
  });

  const token = decodeJwtPayload(oauth.tokens()?.access_token as string);
  await test.step('the access token is for this server only', async () => {
    expect([token.aud].flat()).toEqual([stack.mcpUrl]);
  });

  await test.step('she adds an expense and reads back exactly her own', async () => {
    const added = await callTool(client, 'add_user_expense', { ...lunch, description: 'DCR lunch' });
    expect(added.isError).toBeUndefined();
    const stored = await sql.query('SELECT user_id FROM expenses WHERE description = $1', ['DCR lunch']);
    expect(stored.rows, 'stored under the token subject').toEqual([{ user_id: token.sub }]);
    const hers = await sql.query('SELECT description FROM expenses WHERE user_id = $1', [token.sub]);
    const listed = await ownExpenses(client);
    expect(listed.toSorted()).toEqual(hers.rows.map((row) => row.description as string).toSorted());
    expect(listed).toContain('DCR lunch');
  });
});
