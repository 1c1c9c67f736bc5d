/**
 * Registration off: only the realm's pre-registered clients (ALLOWED_CLIENT_IDS). The one here
 * is `vscode-mcp-client`, the id a VS Code-like editor signs in with: a public client with
 * loopback redirects and no consent page (keycloak/realm-mcp.json).
 */
import { decodeJwtPayload } from '@mcp-auth-stack/testing';
import { authorize } from './fixtures/oauth-flows.ts';
import { alice, callTool, expect, lunch, ownExpenses, postMcp, test } from './fixtures/test.ts';

test("an editor with the realm's pre-registered client id signs alice in without a consent page and uses the tools", async ({
  oauthClient,
  connect,
}) => {
  const editor = await oauthClient(alice);
  editor.saveClientInformation({ client_id: 'vscode-mcp-client' });
  const client = await connect(editor);
  expect(decodeJwtPayload(editor.tokens()?.access_token as string).azp).toBe('vscode-mcp-client');
  expect(editor.consentPages, 'a pre-registered client has no consent page').toHaveLength(0);
  expect((await client.listTools()).tools.length).toBeGreaterThan(0);
  await callTool(client, 'add_user_expense', { ...lunch, description: 'From the editor' });
  expect(await ownExpenses(client)).toContain('From the editor');
});

test("a dynamically registered client's token is refused with 401 invalid_token", async ({ stack, oauthClient }) => {
  const registered = await oauthClient(alice, { clientName: 'Not on the list' });
  await authorize(registered, stack.mcpUrl, 'mcp:access expenses:read');
  const response = await postMcp(
    stack.mcpUrl,
    { jsonrpc: '2.0', id: 1, method: 'tools/list' },
    { authorization: `Bearer ${registered.tokens()?.access_token}` },
  );
  expect(response.status).toBe(401);
  expect(response.headers.get('www-authenticate') ?? '').toMatch(/error="invalid_token"/);
});
