/**
 * Direct mode with a Client ID Metadata Document instead of registration: the client's id is
 * the URL of a JSON document about itself, which Keycloak fetches.
 */
import { decodeJwtPayload } from '@mcp-auth-stack/testing';
import { keycloakUserId, startCimdDocument } from '@mcp-auth-stack/testing/mcp-oauth';
import { bob, callTool, expect, lunch, ownExpenses, test } from './fixtures/test.ts';

test('a client identified by its metadata document URL signs bob in; he sees only his own expenses', async ({
  stack,
  sql,
  oauthClient,
  connect,
}) => {
  const cimd = await startCimdDocument('CIMD e2e client');
  try {
    // Something of alice's in the same database, which bob must never see.
    const aliceId = await keycloakUserId(stack.keycloakUrl, 'alice');
    await sql.query(
      `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
       VALUES ($1, '2025-12-01', 9.5, 'food', 'Alice only', 'cash')`,
      [aliceId],
    );
    // The SDK's clientMetadataUrl option insists on https; a loopback http document (which the
    // realm allows for development) is given to it as the client id it already has.
    const oauth = await oauthClient(bob, { clientName: 'CIMD e2e client' });
    cimd.setRedirect(oauth.callback.redirectUri);
    oauth.saveClientInformation({ client_id: cimd.url });
    const client = await connect(oauth);

    await test.step("Keycloak fetched the document and showed its client's name", async () => {
      expect((oauth.authorizationUrls[0] as URL).searchParams.get('client_id')).toBe(cimd.url);
      expect(cimd.fetches()).toBeGreaterThan(0);
      expect(oauth.consentPages[0], "the consent page names the document's client").toContain('CIMD e2e client');
      expect(decodeJwtPayload(oauth.tokens()?.access_token as string).azp).toBe(cimd.url);
    });

    await test.step("bob adds an expense and sees only his own, never alice's", async () => {
      await callTool(client, 'add_user_expense', { ...lunch, description: 'Bob lunch' });
      expect(await ownExpenses(client)).toEqual(['Bob lunch']);
    });
  } finally {
    await cimd.close();
  }
});
