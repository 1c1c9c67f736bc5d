import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { accessToken, FakeIdp, now, RESOURCE, type SigningKey, signingKey } from '@mcp-auth-stack/testing/fake-idp';
import { firstJanitorPass, janitorKeep, logProxyEvent, REALM_CLIENTS_KEPT, upstreamAdmin } from '../src/auth.ts';
import { loadConfig } from '../src/config.ts';
import { postMcp, startTestStack, type TestStack } from './helpers.ts';

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

test("janitorKeep: the realm's clients and the operator's KEYCLOAK_JANITOR_KEEP are never removed", () => {
  const keycloak = { MCP_AUTH_PROVIDER: 'keycloak', KEYCLOAK_REALM_URL: 'http://localhost:8080/realms/mcp' };
  const config = loadConfig({ ...keycloak, KEYCLOAK_JANITOR_KEEP: ' partner-app , reports,mcp-server' });
  assert.ok(config.authMode === 'keycloak');
  assert.deepEqual(janitorKeep(config), [...REALM_CLIENTS_KEPT, 'partner-app', 'reports']);
  const unset = loadConfig(keycloak);
  assert.ok(unset.authMode === 'keycloak');
  assert.deepEqual(janitorKeep(unset), [...REALM_CLIENTS_KEPT]);
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

/**
 * Keycloak mode as the server wires it (createAuthProvider, KEYCLOAK_TOKEN_RULES, the resource as
 * audience), against a stand-in realm whose tokens the test signs: what a protocol mapper or a
 * client's own settings could shape is refused, without starting Keycloak.
 */
describe('keycloak mode against a stand-in realm', () => {
  const UUID = '0b8a8f4e-6c1d-4c3b-9d1e-2f3a4b5c6d7e';
  let idp: FakeIdp;
  let key: SigningKey;
  let stack: TestStack;
  before(async () => {
    key = await signingKey('realm-key', 'RS256');
    idp = await FakeIdp.start([key]);
    stack = await startTestStack({
      MCP_AUTH_PROVIDER: 'keycloak',
      KEYCLOAK_REALM_URL: idp.issuer,
      // The resource, and so the audience, the stand-in realm's tokens carry.
      MCP_SERVER_BASE_URL: new URL(RESOURCE).origin,
    });
  });
  after(async () => {
    await stack?.close();
    await idp?.close();
  });

  const token = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    accessToken(idp, key, { sub: UUID, typ: 'Bearer', scope: 'mcp:access expenses:read', ...claims }, header);
  const send = async (bearer: string, method = 'tools/list', params?: Record<string, unknown>) =>
    postMcp(stack.mcpUrl, { jsonrpc: '2.0', id: 1, method, params }, { authorization: `Bearer ${bearer}` });

  test('an access token shaped as Keycloak issues it is taken; anything else of the realm gets 401', async () => {
    assert.equal((await send(await token({}))).status, 200);
    for (const [what, claims, header] of [
      ['an ID token (typ ID)', { typ: 'ID' }, {}],
      ['a refresh token (typ Refresh)', { typ: 'Refresh' }, {}],
      ['a sub that is not a Keycloak id', { sub: 'alice' }, {}],
      // Keycloak's pairwise sub mapper: UUID.nameUUIDFromBytes of the sector, the user id and a salt.
      ['a pairwise sub (a version 3 UUID)', { sub: '7a4248fd-f51d-3987-881a-54ef5a091daf' }, {}],
      ['a day-long token', { iat: now(), exp: now() + 86_400 }, {}],
      ['another header typ', {}, { typ: 'at+jwt' }],
      ['a token for another resource', { aud: 'http://localhost:9000/mcp' }, {}],
      ['a token of another realm', { iss: `${idp.issuer}-other` }, {}],
    ] as const) {
      const response = await send(await token(claims, header));
      assert.equal(response.status, 401, what);
      assert.match(response.headers.get('www-authenticate') ?? '', /error="invalid_token"/, what);
    }
  });

  test('only the expenses:admin scope opens the statistics: not scp, not the expenses-admin role', async () => {
    const stats = { name: 'get_expense_stats', arguments: {} };
    for (const [what, claims] of [
      ['scp written by a mapper', { scp: 'expenses:admin' }],
      ['the realm role', { realm_access: { roles: ['expenses-admin'] } }],
      ['a roles claim', { roles: ['expenses-admin'] }],
    ] as const) {
      const response = await send(await token(claims), 'tools/call', stats);
      assert.equal(response.status, 403, what);
      assert.match(response.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/, what);
    }
    const admin = await send(await token({ scope: 'mcp:access expenses:admin' }), 'tools/call', stats);
    assert.equal(admin.status, 200);
    assert.equal(((await admin.json()) as { result?: { isError?: boolean } }).result?.isError, undefined);
  });
});
