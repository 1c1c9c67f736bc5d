import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  accessToken,
  base64url,
  FakeIdp,
  now,
  RESOURCE,
  type SigningKey,
  signingKey,
} from '@mcp-auth-stack/testing/fake-idp';
import { Hono } from 'hono';
import { exportSPKI, SignJWT } from 'jose';
import {
  AuthUnavailableError,
  type AuthVariables,
  type JwtBearerProviderOptions,
  jwtBearerProvider,
  type Principal,
  requireAuth,
  VerifiedTokenCache,
} from '../src/index.ts';

const METADATA_URL = 'http://localhost:8000/.well-known/oauth-protected-resource/mcp';
const CHALLENGE_BASE = `Bearer resource_metadata="${METADATA_URL}", scope="mcp:access expenses:read"`;

let idp: FakeIdp;
let rsa: SigningKey;
let ec: SigningKey;
let stranger: SigningKey;

before(async () => {
  rsa = await signingKey('rsa-1', 'RS256');
  ec = await signingKey('ec-1', 'ES256');
  stranger = await signingKey('rsa-1', 'RS256'); // same kid, other key: a forged signature
  idp = await FakeIdp.start([rsa, ec]);
});
after(() => idp.close());

function provider(overrides: Partial<JwtBearerProviderOptions> = {}) {
  return jwtBearerProvider({
    issuer: idp.issuer,
    jwksUri: idp.jwksUri,
    resource: RESOURCE,
    challengeScopes: ['mcp:access', 'expenses:read'],
    ...overrides,
  });
}

function appWith(auth: ReturnType<typeof provider>) {
  const app = new Hono<{ Variables: AuthVariables }>();
  app.use('/mcp', requireAuth(auth));
  app.post('/mcp', (c) => c.json(c.get('principal')));
  return app;
}

const call = (app: Hono<{ Variables: AuthVariables }>, token: string) =>
  app.request('/mcp', { method: 'POST', headers: { authorization: `Bearer ${token}` } });

async function authenticated(auth: ReturnType<typeof provider>, token: string): Promise<Principal> {
  const outcome = await auth.authenticate(
    new Request('http://x/mcp', { headers: { authorization: `Bearer ${token}` } }),
  );
  assert.ok(outcome.ok, `expected success, got ${JSON.stringify(outcome)}`);
  return outcome.principal;
}

describe('jwtBearerProvider: good tokens', () => {
  test('an RS256 token with a string aud gives the principal', async () => {
    const app = appWith(provider());
    const response = await call(
      app,
      await accessToken(idp, rsa, {
        name: 'Alice Liddell',
        realm_access: { roles: ['expenses-admin', 'default-roles-mcp'] },
      }),
    );
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      userId: 'alice-sub',
      scopes: ['mcp:access', 'expenses:read'],
      method: 'oauth',
      clientId: 'vscode',
      name: 'Alice Liddell',
      roles: ['expenses-admin', 'default-roles-mcp'],
    });
  });

  test('an ES256 token with an array aud (Keycloak audience mapper) is accepted', async () => {
    const principal = await authenticated(
      provider(),
      await accessToken(idp, ec, { aud: ['mcp-server', RESOURCE], preferred_username: 'alice' }),
    );
    assert.equal(principal.userId, 'alice-sub');
    assert.equal(principal.name, 'alice');
  });

  test('a configured audience list accepts any listed value', async () => {
    const principal = await authenticated(
      provider({ audience: ['mcp-server'] }),
      await accessToken(idp, rsa, { aud: ['mcp-server', 'account'] }),
    );
    assert.equal(principal.userId, 'alice-sub');
  });

  test('Entra-style claims: user id from oid, scopes from scp, app roles, client from client_id', async () => {
    const principal = await authenticated(
      provider({ userIdClaim: 'oid' }),
      await accessToken(idp, rsa, {
        oid: 'entra-oid',
        scope: undefined,
        scp: 'mcp-access expenses:read',
        azp: undefined,
        client_id: 'app-1',
        roles: ['Admin'],
      }),
    );
    assert.deepEqual(
      { ...principal },
      {
        userId: 'entra-oid',
        scopes: ['mcp-access', 'expenses:read'],
        method: 'oauth',
        clientId: 'app-1',
        roles: ['Admin'],
      },
    );
    const arrayScp = await authenticated(provider(), await accessToken(idp, rsa, { scope: 'a', scp: ['b', 'a'] }));
    assert.deepEqual(arrayScp.scopes, ['a', 'b']);
  });

  test('a token expired within the clock tolerance still passes', async () => {
    const principal = await authenticated(provider(), await accessToken(idp, rsa, { exp: now() - 10 }));
    assert.equal(principal.userId, 'alice-sub');
  });

  test('allowedClientIds accepts a listed client', async () => {
    const principal = await authenticated(provider({ allowedClientIds: ['vscode'] }), await accessToken(idp, rsa));
    assert.equal(principal.clientId, 'vscode');
  });
});

describe('jwtBearerProvider: checkClient', () => {
  test("is asked once per token with the token's client; its description refuses, undefined takes", async () => {
    const asked: (string | undefined)[] = [];
    const auth = provider({
      checkClient: async (clientId) => {
        asked.push(clientId);
        return clientId === 'vscode' ? undefined : 'The client redirects to a host this resource does not trust.';
      },
    });
    const app = appWith(auth);
    const good = await accessToken(idp, rsa);
    assert.equal((await call(app, good)).status, 200);
    assert.equal((await call(app, good)).status, 200, 'the second request is the cache');
    const refused = await call(app, await accessToken(idp, rsa, { azp: 'stranger' }));
    assert.equal(refused.status, 401);
    assert.equal(
      refused.headers.get('www-authenticate'),
      `${CHALLENGE_BASE}, error="invalid_token", error_description="The client redirects to a host this resource does not trust."`,
    );
    assert.deepEqual(asked, ['vscode', 'stranger']);
  });

  test('an AuthUnavailableError it throws answers 503, and the token is asked about again next time', async () => {
    let down = true;
    const app = appWith(
      provider({
        checkClient: async () => {
          if (down) throw new AuthUnavailableError('the realm cannot be read');
          return undefined;
        },
      }),
    );
    const token = await accessToken(idp, rsa);
    assert.equal((await call(app, token)).status, 503);
    down = false;
    assert.equal((await call(app, token)).status, 200);
  });
});

describe('jwtBearerProvider: tokens that must fail get 401 with the challenge', () => {
  const rejected = async (
    token: string | (() => Promise<string>),
    description: string,
    overrides: Partial<JwtBearerProviderOptions> = {},
  ) => {
    const response = await call(appWith(provider(overrides)), typeof token === 'string' ? token : await token());
    assert.equal(response.status, 401);
    assert.equal(
      response.headers.get('www-authenticate'),
      `${CHALLENGE_BASE}, error="invalid_token", error_description="${description}"`,
    );
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await response.json(), { error: 'invalid_token', error_description: description });
  };

  test('expired', () =>
    rejected(() => accessToken(idp, rsa, { exp: now() - 120, iat: now() - 400 }), 'The access token has expired.'));
  test('not yet valid', () =>
    rejected(() => accessToken(idp, rsa, { nbf: now() + 120 }), 'The access token is not valid yet.'));
  test('wrong issuer', () =>
    rejected(
      () => accessToken(idp, rsa, { iss: `${idp.issuer}-other` }),
      'The access token was issued by another authorization server.',
    ));
  test('wrong audience', () =>
    rejected(
      () => accessToken(idp, rsa, { aud: ['mcp-server', 'http://localhost:9000/mcp'] }),
      'The access token is meant for another resource (audience mismatch).',
    ));
  test('no audience', () =>
    rejected(
      () => accessToken(idp, rsa, { aud: undefined }),
      'The access token names no audience; this resource accepts only tokens issued for it.',
    ));
  test('missing exp', () =>
    rejected(() => accessToken(idp, rsa, { exp: undefined }), 'The access token lacks the required claim exp.'));
  test('bad signature (same kid, another key)', () =>
    rejected(() => accessToken(idp, stranger), 'The access token signature is invalid.'));
  test('a tampered payload', async () => {
    const [header, , signature] = (await accessToken(idp, rsa)).split('.');
    const forged = `${header}.${base64url({ iss: idp.issuer, aud: RESOURCE, sub: 'mallory', exp: now() + 300 })}.${signature}`;
    await rejected(forged, 'The access token signature is invalid.');
  });
  test('alg none', () =>
    rejected(
      `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ iss: idp.issuer, aud: RESOURCE, sub: 'mallory', exp: now() + 300 })}.`,
      'The access token is signed with an algorithm this resource does not accept.',
    ));
  test('HS256 signed with the public key bytes (key confusion)', async () => {
    const publicPem = new TextEncoder().encode(await exportSPKI(rsa.publicKey));
    const token = await new SignJWT({ iss: idp.issuer, aud: RESOURCE, sub: 'mallory', exp: now() + 300 })
      .setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' })
      .sign(publicPem);
    await rejected(token, 'The access token is signed with an algorithm this resource does not accept.');
  });
  test('unknown kid', async () => {
    const unknown = await signingKey('nobody-knows', 'RS256');
    await rejected(() => accessToken(idp, unknown), 'The access token is signed with an unknown key.');
  });
  test('a client not in allowedClientIds', () =>
    rejected(
      () => accessToken(idp, rsa, { azp: 'evil-dcr-client' }),
      'The access token was issued to a client this resource does not accept.',
      { allowedClientIds: ['vscode'] },
    ));
  test('no client at all when allowedClientIds is set', () =>
    rejected(
      () => accessToken(idp, rsa, { azp: undefined }),
      'The access token was issued to a client this resource does not accept.',
      { allowedClientIds: ['vscode'] },
    ));
  test('no user id claim', () =>
    rejected(() => accessToken(idp, rsa, { sub: undefined }), 'The access token does not name a user (claim sub).'));
  test('the wrong typ when one is required', () =>
    rejected(() => accessToken(idp, rsa), 'The access token has the wrong type (typ).', { tokenType: 'at+jwt' }));
  test('not a JWT at all', () => rejected('abc.def', 'The access token is malformed or not a signed JWT.'));
  test('bound to a key: DPoP (Keycloak: typ DPoP, cnf.jkt) and mTLS (cnf x5t#S256)', async () => {
    const bound = 'The access token is bound to a key (cnf); this resource accepts bearer tokens only.';
    await rejected(() => accessToken(idp, rsa, { typ: 'DPoP', cnf: { jkt: 'x'.repeat(43) } }), bound);
    await rejected(() => accessToken(idp, rsa, { cnf: { 'x5t#S256': 'y'.repeat(43) } }), bound, {
      payloadType: 'Bearer',
    });
  });

  test('no credentials or another scheme: a bare challenge (RFC 6750 3.1); a malformed Bearer header: 400 invalid_request', async () => {
    const app = appWith(provider());
    const bare = await app.request('/mcp', { method: 'POST' });
    assert.equal(bare.status, 401);
    assert.equal(bare.headers.get('www-authenticate'), CHALLENGE_BASE);
    const basic = await app.request('/mcp', { method: 'POST', headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    assert.equal(basic.status, 401);
    assert.equal(basic.headers.get('www-authenticate'), CHALLENGE_BASE, 'no error code for another scheme');
    assert.match(((await basic.json()) as { error_description: string }).error_description, /Authorization: Bearer/);
    // An empty token carries nothing: the bare 401, which starts an MCP client's sign-in.
    const empty = await app.request('/mcp', { method: 'POST', headers: { authorization: 'Bearer ' } });
    assert.equal(empty.status, 401);
    assert.equal(empty.headers.get('www-authenticate'), CHALLENGE_BASE);
    for (const malformed of ['Bearer a b', 'bearer "quoted"']) {
      const response = await app.request('/mcp', { method: 'POST', headers: { authorization: malformed } });
      assert.equal(response.status, 400, malformed);
      const challenge = response.headers.get('www-authenticate') ?? '';
      assert.match(challenge, /, error="invalid_request", error_description="([^"]*)"/, malformed);
      // RFC 6750 3: error_description holds %x20-21 / %x23-5B / %x5D-7E only (no quote, no backslash).
      const description = /error_description="([^"]*)"/.exec(challenge)?.[1] ?? '';
      assert.match(description, /^[\x20\x21\x23-\x5B\x5D-\x7E]+$/, description);
    }
  });
});

describe('jwtBearerProvider: keys and caching', () => {
  test('steady state makes no identity-provider call: one JWKS fetch for many tokens', async () => {
    const auth = provider();
    assert.equal(auth.keySet.fetchCount, 0, 'keys are fetched lazily');
    for (let i = 0; i < 5; i++) await authenticated(auth, await accessToken(idp, rsa, { jti: `t${i}` }));
    await authenticated(auth, await accessToken(idp, ec));
    assert.equal(auth.keySet.fetchCount, 1);
  });

  test('a cache hit returns the verified principal without verifying again; cache off verifies each time', async () => {
    const token = await accessToken(idp, rsa);
    const cached = provider();
    assert.equal(await authenticated(cached, token), await authenticated(cached, token));
    const uncached = provider({ cache: false });
    assert.notEqual(await authenticated(uncached, token), await authenticated(uncached, token));
  });

  test('a cached principal cannot be modified by a tool', async () => {
    const principal = await authenticated(provider(), await accessToken(idp, rsa));
    assert.throws(() => {
      (principal as { userId: string }).userId = 'mallory';
    }, TypeError);
    assert.throws(() => (principal.scopes as string[]).push('expenses:admin'), TypeError);
  });

  test('the cache never serves a token past its exp', async () => {
    const auth = provider({ clockToleranceSeconds: 0 });
    const token = await accessToken(idp, rsa, { exp: now() + 2 });
    await authenticated(auth, token);
    await authenticated(auth, token); // from the cache
    await new Promise((resolve) => setTimeout(resolve, 3100));
    const outcome = await auth.authenticate(
      new Request('http://x/mcp', { headers: { authorization: `Bearer ${token}` } }),
    );
    assert.deepEqual(outcome, { ok: false, error: 'invalid_token', description: 'The access token has expired.' });
  });

  test('random kids within the cool-down cause one refetch in all', async () => {
    const auth = provider({ jwks: { cooldownMs: 60_000 } });
    const unknownToken = async (kid: string) => accessToken(idp, await signingKey(kid));
    const [first, second, burst] = await Promise.all([
      unknownToken('unknown-1'),
      unknownToken('unknown-2'),
      Promise.all([3, 4, 5].map((i) => unknownToken(`unknown-${i}`))),
    ]);
    await authenticated(auth, await accessToken(idp, rsa));
    assert.equal(auth.keySet.fetchCount, 1);
    const refused = {
      ok: false,
      error: 'invalid_token',
      description: 'The access token is signed with an unknown key.',
    };
    assert.deepEqual(await auth.verifyToken(first), refused);
    assert.equal(auth.keySet.fetchCount, 2, 'one refetch: the keys may have been rotated since the first fetch');
    assert.deepEqual(await auth.verifyToken(second), refused);
    for (const outcome of await Promise.all(burst.map((token) => auth.verifyToken(token)))) {
      assert.deepEqual(outcome, refused);
    }
    assert.equal(auth.keySet.fetchCount, 2, 'within the cool-down: no further fetch');
  });

  test('an unknown kid is not fetched again when the keys were fetched for that very token', async () => {
    const auth = provider({ jwks: { cooldownMs: 60_000 } });
    const outcome = await auth.verifyToken(await accessToken(idp, await signingKey('unknown-first')));
    assert.equal(outcome.ok, false);
    assert.equal(auth.keySet.fetchCount, 1);
  });

  test('key rotation right after a readiness check: the new kid is fetched at once', async () => {
    // A readiness probe (or a background refresh) fetches the keys just before the realm
    // rotates them; the first token signed with the new key must not wait out a cool-down.
    const auth = provider({ jwks: { cooldownMs: 60_000 } });
    const rotated = await signingKey('rsa-rotated');
    const rotatedToken = await accessToken(idp, rotated);
    await authenticated(auth, await accessToken(idp, rsa));
    assert.equal((await auth.ready()).checks.jwks, 'ok');
    assert.equal(auth.keySet.fetchCount, 2);
    idp.published = [rsa, ec, rotated];
    try {
      assert.equal((await authenticated(auth, rotatedToken)).userId, 'alice-sub');
      assert.equal(auth.keySet.fetchCount, 3, 'one refetch for the new kid');
    } finally {
      idp.published = [rsa, ec];
    }
  });

  test('a refetch for an unknown kid that fails: 503 with Retry-After, not 401', async () => {
    const failing = await FakeIdp.start([rsa]);
    const auth = provider({
      issuer: failing.issuer,
      jwksUri: failing.jwksUri,
      jwks: { cooldownMs: 60_000, timeoutMs: 1000 },
    });
    const rotatedToken = await accessToken(failing, await signingKey('rsa-rotated'));
    const otherToken = await accessToken(failing, await signingKey('rsa-other'));
    const knownToken = await accessToken(failing, rsa, { jti: 'known' });
    await authenticated(auth, await accessToken(failing, rsa));
    assert.equal(auth.keySet.fetchCount, 1);
    await failing.close(); // the JWKS endpoint goes down
    const response = await call(appWith(auth), rotatedToken);
    assert.equal(response.status, 503, 'the key may exist: the client must retry, not sign in again');
    assert.equal(response.headers.get('retry-after'), '5');
    assert.equal(((await response.json()) as { error: string }).error, 'temporarily_unavailable');
    assert.equal(auth.keySet.fetchCount, 2);
    // Within the cool-down: no refetch, and still undecided while the last fetch failed.
    await assert.rejects(auth.verifyToken(otherToken), AuthUnavailableError);
    assert.equal(auth.keySet.fetchCount, 2);
    // The keys already held keep working.
    assert.equal((await authenticated(auth, knownToken)).userId, 'alice-sub');
  });

  test('key rotation: a new kid is fetched once the cool-down has passed, and then works', async () => {
    const auth = provider({ jwks: { cooldownMs: 500 } });
    // Keys and tokens first: generating RSA keys takes long enough to blur the timing.
    const rotated = await signingKey('rsa-2');
    const rotatedToken = await accessToken(idp, rotated);
    const burst = await Promise.all([0, 1, 2].map(async (i) => accessToken(idp, await signingKey(`burst-${i}`))));
    const laterToken = await accessToken(idp, await signingKey('later'));
    await authenticated(auth, await accessToken(idp, rsa));
    assert.equal(auth.keySet.fetchCount, 1);
    idp.published = [rsa, ec, rotated];
    try {
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.equal((await authenticated(auth, rotatedToken)).userId, 'alice-sub');
      assert.equal(auth.keySet.fetchCount, 2, 'one refetch for the new kid');
      // A burst of unknown kids right after: the cool-down allows no fetch.
      for (const token of burst) assert.equal((await auth.verifyToken(token)).ok, false);
      assert.equal(auth.keySet.fetchCount, 2);
      // After the cool-down, one more unknown kid costs exactly one fetch.
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.equal((await auth.verifyToken(laterToken)).ok, false);
      assert.equal(auth.keySet.fetchCount, 3);
    } finally {
      idp.published = [rsa, ec];
    }
  });

  test('concurrent first requests share one JWKS fetch', async () => {
    const auth = provider();
    const tokens = await Promise.all([1, 2, 3, 4].map((i) => accessToken(idp, rsa, { jti: `c${i}` })));
    await Promise.all(tokens.map((token) => authenticated(auth, token)));
    assert.equal(auth.keySet.fetchCount, 1);
  });

  test('signing keys unreachable: 503 with Retry-After, not a 401', async () => {
    const auth = provider({ jwksUri: 'http://127.0.0.1:9/certs', jwks: { timeoutMs: 1000 } });
    const response = await call(appWith(auth), await accessToken(idp, rsa));
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '5');
    assert.equal(((await response.json()) as { error: string }).error, 'temporarily_unavailable');
  });
});

describe('jwtBearerProvider: configuration and readiness', () => {
  test('refuses none and HMAC algorithms and a resource with a fragment', () => {
    assert.throws(() => provider({ algorithms: ['RS256', 'none'] }), /refuses the algorithm none/);
    assert.throws(() => provider({ algorithms: ['HS256'] }), /refuses the algorithm HS256/);
    assert.throws(() => provider({ resource: 'http://localhost:8000/mcp#x' }), /no query and no fragment/);
    assert.throws(() => provider({ audience: [] }), /at least one accepted audience/);
  });

  test('challengeParameters name the path-aware metadata URL and the scopes', () => {
    assert.deepEqual(provider().challengeParameters(), {
      resource_metadata: METADATA_URL,
      scope: 'mcp:access expenses:read',
    });
  });

  test('ready() checks metadata and keys, and reuses its result', async () => {
    const auth = provider({ readyTtlSeconds: 60 });
    const metadataBefore = idp.metadataFetches;
    const [one, two] = await Promise.all([auth.ready(), auth.ready()]);
    assert.deepEqual(one.checks, { issuer_metadata: 'ok', jwks: 'ok' });
    assert.equal(one.ok, true);
    assert.equal(two, one);
    assert.equal((await auth.ready()).checkedAt, one.checkedAt);
    assert.equal(idp.metadataFetches, metadataBefore + 1);
  });

  test('ready() reports an issuer mismatch and unreachable keys', async () => {
    idp.advertisedIssuer = 'http://elsewhere/realms/test';
    try {
      const report = await provider().ready();
      assert.equal(report.ok, false);
      assert.equal(report.checks.issuer_metadata, 'issuer mismatch');
    } finally {
      idp.advertisedIssuer = undefined;
    }
    const down = await provider({ jwksUri: 'http://127.0.0.1:9/certs' }).ready();
    assert.deepEqual(down.checks, { issuer_metadata: 'ok', jwks: 'unreachable' });
    assert.equal(down.ok, false);
  });
});

describe('VerifiedTokenCache', () => {
  test('evicts the least recently used entry and honours expiry exactly', () => {
    let clock = 1_000;
    const cache = new VerifiedTokenCache<string>({ maxEntries: 2, now: () => clock });
    cache.set('a', 'A', 2_000);
    cache.set('b', 'B', 2_000);
    assert.equal(cache.get('a'), 'A'); // a is now the most recent
    cache.set('c', 'C', 2_000);
    assert.equal(cache.get('b'), undefined, 'b was the least recently used');
    assert.equal(cache.get('a'), 'A');
    assert.equal(cache.size, 2);
    clock = 1_999;
    assert.equal(cache.get('c'), 'C');
    clock = 2_000;
    assert.equal(cache.get('c'), undefined, 'not at its expiry');
    cache.set('d', 'D', 2_000);
    assert.equal(cache.get('d'), undefined, 'an already-expired entry is not stored');
  });
});
