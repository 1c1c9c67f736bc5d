/**
 * Direct mode, the logins that must not succeed: nothing reaches the client, nothing is issued.
 */
import { bob, expect, test } from './fixtures/test.ts';

test('a wrong password shows the error on the login page and issues nothing', async ({ oauthClient, connect }) => {
  const wrong = await oauthClient(bob, { password: 'not-bobs-password' });
  await expect(connect(wrong)).rejects.toThrow(/callback was never called/);
  expect(wrong.loginErrors[0] ?? '').toMatch(/Invalid username or password/i);
  expect(wrong.tokens()).toBeUndefined();
  expect(wrong.callback.received, 'no code reached the client').toHaveLength(0);
});

test('a denied consent gives the client access_denied and no token', async ({ oauthClient, connect }) => {
  const denied = await oauthClient(bob, { consent: 'deny', clientName: 'Denied client' });
  await expect(connect(denied)).rejects.toThrow(/no code: .*error=access_denied/);
  expect(denied.consentPages[0], 'the consent page named the client').toContain('Denied client');
  expect(denied.tokens()).toBeUndefined();
});
