import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { accessToken, FakeIdp, now, RESOURCE, type SigningKey, signingKey } from '@mcp-auth-stack/testing/fake-idp';
import { jwtBearerProvider } from '../src/index.ts';

/**
 * The rules a deployment adds when it knows its issuer (Keycloak: apps/server's
 * KEYCLOAK_TOKEN_RULES), each refusing what a protocol mapper or a client's own settings could
 * shape (issue 11).
 */
let idp: FakeIdp;
let key: SigningKey;
const UUID = '0b8a8f4e-6c1d-4c3b-9d1e-2f3a4b5c6d7e';

before(async () => {
  key = await signingKey('rsa-1', 'RS256');
  idp = await FakeIdp.start([key]);
});
after(() => idp.close());

const strict = () =>
  jwtBearerProvider({
    issuer: idp.issuer,
    jwksUri: idp.jwksUri,
    resource: RESOURCE,
    tokenType: 'JWT',
    payloadType: 'Bearer',
    userIdPattern: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    scopeClaims: ['scope'],
    maxLifetimeSeconds: 3600,
    cache: false,
  });

const verify = async (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
  strict().verifyToken(await accessToken(idp, key, { sub: UUID, typ: 'Bearer', ...claims }, header));

describe('jwtBearerProvider: issuer-specific rules', () => {
  test('an iat within the clock tolerance ahead passes (a server clock a little behind the issuer)', async () => {
    assert.ok((await verify({ iat: now() + 20, exp: now() + 320 })).ok);
  });

  test('the lifetime cap is exact: 3600 s passes, 3601 s is refused', async () => {
    const issued = now();
    assert.ok((await verify({ iat: issued, exp: issued + 3600 })).ok);
    const longer = await verify({ iat: issued, exp: issued + 3601 });
    assert.equal(longer.ok, false);
    assert.match(longer.ok === false ? (longer.description ?? '') : '', /lives longer than this resource accepts/);
  });

  test('a Keycloak-shaped access token passes, with scopes from scope only', async () => {
    const outcome = await verify({ scope: 'mcp:access expenses:read', scp: 'expenses:admin' });
    assert.ok(outcome.ok);
    assert.deepEqual([...outcome.principal.scopes], ['mcp:access', 'expenses:read'], 'scp ignored');
  });

  for (const [what, claims, header] of [
    ['an ID token (typ ID)', { typ: 'ID' }, {}],
    ['a refresh token (typ Refresh)', { typ: 'Refresh' }, {}],
    ['no typ', { typ: undefined }, {}],
    ['a sub that is not a Keycloak id (a username a mapper put there)', { sub: 'bob' }, {}],
    ['a day-long token', { iat: now(), exp: now() + 86_400 }, {}],
    // Its exp - iat is 5 minutes, but it is good for a day: the cap is on what is left of it too.
    ['a day-long token that says it was issued tomorrow', { iat: now() + 86_400, exp: now() + 86_400 + 300 }, {}],
    ['issued a minute from now', { iat: now() + 60, exp: now() + 360 }, {}],
    ['no iat', { iat: undefined }, {}],
    ['another header typ', {}, { typ: 'at+jwt' }],
  ] as const) {
    test(`refused: ${what}`, async () => {
      const outcome = await verify(claims, header);
      assert.equal(outcome.ok, false);
      assert.equal(outcome.ok === false && outcome.error, 'invalid_token');
    });
  }
});
