import assert from 'node:assert/strict';
import { test } from 'node:test';
import { firstJanitorPass, logProxyEvent, upstreamAdmin } from '../src/auth.ts';

test('upstreamAdmin: Keycloak granted expenses:admin, or Entra named the expenses-admin app role', () => {
  // Keycloak: the realm grants its expenses:admin scope only to the expenses-admin role.
  assert.equal(upstreamAdmin({}, 'openid profile expenses:admin'), true);
  assert.equal(upstreamAdmin({}, 'openid profile'), false);
  assert.equal(upstreamAdmin({}, 'openid expenses:admin-ish'), false);
  // Entra: app roles assigned to the user arrive in the ID token's `roles`.
  assert.equal(upstreamAdmin({ roles: ['expenses-admin'] }, 'openid profile'), true);
  assert.equal(upstreamAdmin({ roles: ['reader'] }, undefined), false);
  assert.equal(upstreamAdmin({ roles: 'expenses-admin' }, undefined), false, 'roles is a list, never a string');
  assert.equal(upstreamAdmin({}, undefined), false);
});

test('firstJanitorPass: a slow Keycloak is tried again before the pass is reported; a refusal is reported at once', async (t) => {
  const logged: string[] = [];
  const logger = {
    info: (message: string) => logged.push(message),
    warn: (message: string) => logged.push(message),
  };
  const timeout = () => Object.assign(new Error('The operation was aborted due to timeout'), { name: 'TimeoutError' });
  // The retry timers are unref'd (a server shutting down does not wait for them): keep the loop.
  const keepAlive = setInterval(() => {}, 1_000);
  t.after(() => clearInterval(keepAlive));

  let calls = 0;
  await firstJanitorPass(
    async () => {
      calls++;
      if (calls < 3) throw calls === 1 ? timeout() : new TypeError('fetch failed');
      return { inspected: 4, removed: ['a'] };
    },
    logger,
    [0, 0],
  );
  assert.equal(calls, 3);
  assert.deepEqual(logged.slice(-1), ['keycloak client janitor: on']);
  assert.ok(!logged.includes('keycloak client janitor: failed'), 'no failure reported before the retries');

  logged.length = 0;
  calls = 0;
  await firstJanitorPass(
    async () => {
      calls++;
      throw timeout();
    },
    logger,
    [0, 0],
  );
  assert.equal(calls, 3, 'the first try and one per delay');
  assert.deepEqual(logged.slice(-1), ['keycloak client janitor: failed']);

  logged.length = 0;
  calls = 0;
  await firstJanitorPass(
    async () => {
      calls++;
      throw new Error('Keycloak refused the janitor client: 401 invalid_client');
    },
    logger,
    [0, 0],
  );
  assert.equal(calls, 1, 'a wrong secret is not retried');
  assert.deepEqual(logged, ['keycloak client janitor: failed']);
});

test('logProxyEvent: an unreachable identity provider is a warning, security events are info', () => {
  const logged: [string, string, Record<string, unknown>][] = [];
  const log = logProxyEvent({
    info: (message, fields = {}) => logged.push(['info', message, fields]),
    warn: (message, fields = {}) => logged.push(['warn', message, fields]),
  });
  log('upstream_unavailable', { step: 'authorize', message: 'The upstream discovery document answered 502.' });
  log('consent_denied', { client_id: 'c' });
  assert.deepEqual(logged, [
    [
      'warn',
      'oauth proxy: upstream_unavailable',
      { step: 'authorize', message: 'The upstream discovery document answered 502.' },
    ],
    ['info', 'oauth proxy: consent_denied', { client_id: 'c' }],
  ]);
});
