import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { checkRegistration, clientAddress } from '@mcp-auth-stack/auth';
import { Hono } from 'hono';
import { registrationFacade } from '../src/registration-facade.ts';
import { openPassThroughDatabase } from './passthrough-database.ts';

/** A stand-in for the identity provider's metadata and registration endpoint, recording what it receives. */
const received: Record<string, unknown>[] = [];
const upstream = 'http://idp.test/realms/mcp';
const fakeFetch: typeof fetch = async (input, init) => {
  const url = String(input);
  if (url === `${upstream}/.well-known/openid-configuration`) {
    return Response.json({
      issuer: upstream,
      authorization_endpoint: `${upstream}/protocol/openid-connect/auth`,
      token_endpoint: `${upstream}/protocol/openid-connect/token`,
      registration_endpoint: `${upstream}/clients-registrations/openid-connect`,
      authorization_response_iss_parameter_supported: true,
      code_challenge_methods_supported: ['plain', 'S256'],
      client_id_metadata_document_supported: true,
      userinfo_endpoint: `${upstream}/protocol/openid-connect/userinfo`,
      device_authorization_endpoint: `${upstream}/protocol/openid-connect/auth/device`,
      backchannel_authentication_endpoint: `${upstream}/protocol/openid-connect/ext/ciba/auth`,
      end_session_endpoint: `${upstream}/protocol/openid-connect/logout`,
      id_token_signing_alg_values_supported: ['RS256'],
      claims_supported: ['sub', 'name'],
      subject_types_supported: ['public', 'pairwise'],
      scopes_supported: ['openid', 'mcp:access', 'expenses:read'],
      response_types_supported: ['code', 'none', 'id_token', 'token', 'id_token token', 'code id_token'],
      grant_types_supported: [
        'authorization_code',
        'implicit',
        'refresh_token',
        'password',
        'client_credentials',
        'urn:ietf:params:oauth:grant-type:device_code',
        'urn:openid:params:grant-type:ciba',
        'urn:ietf:params:oauth:grant-type:token-exchange',
      ],
      // As Keycloak 26.7 announces them.
      dpop_signing_alg_values_supported: ['ES256', 'RS256'],
      response_modes_supported: ['query', 'fragment', 'form_post', 'query.jwt', 'fragment.jwt', 'form_post.jwt', 'jwt'],
      request_parameter_supported: true,
      request_uri_parameter_supported: true,
      token_endpoint_auth_methods_supported: [
        'private_key_jwt',
        'client_secret_basic',
        'client_secret_post',
        'tls_client_auth',
        'client_secret_jwt',
      ],
    });
  }
  if (url === `${upstream}/clients-registrations/openid-connect` && init?.method === 'POST') {
    const body = JSON.parse(String(init.body)) as Record<string, unknown>;
    received.push(body);
    return Response.json({ client_id: 'generated', ...body }, { status: 201 });
  }
  return new Response('not found', { status: 404 });
};

function makeApp(registrationsPerMinute = 100) {
  const app = new Hono();
  registrationFacade({
    issuer: 'http://localhost:8000',
    upstreamIssuer: upstream,
    registrationsPerMinute,
    fetch: fakeFetch,
  }).mount(app);
  return app;
}

const register = (app: Hono, body: unknown) =>
  app.request('/register', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

describe('registrationFacade', () => {
  test("presents the provider's metadata under this server's issuer and registration endpoint", async () => {
    const app = makeApp();
    const response = await app.request('/.well-known/oauth-authorization-server');
    assert.equal(response.status, 200);
    const metadata = (await response.json()) as Record<string, unknown>;
    assert.equal(metadata.issuer, 'http://localhost:8000');
    assert.equal(metadata.registration_endpoint, 'http://localhost:8000/register');
    assert.equal(
      metadata.authorization_endpoint,
      `${upstream}/protocol/openid-connect/auth`,
      'logins still go upstream',
    );
    assert.equal(metadata.authorization_response_iss_parameter_supported, undefined);
    assert.equal(response.headers.get('access-control-allow-origin'), '*');
  });

  test('presents no OpenID provider: ID tokens name Keycloak as issuer, not this server', async () => {
    const app = makeApp();
    // A client that finds OpenID Connect discovery here checks ID tokens against this issuer.
    assert.equal((await app.request('/.well-known/openid-configuration')).status, 404);
    const metadata = (await (await app.request('/.well-known/oauth-authorization-server')).json()) as Record<
      string,
      unknown
    >;
    for (const member of [
      'userinfo_endpoint',
      'end_session_endpoint',
      'id_token_signing_alg_values_supported',
      'claims_supported',
      'subject_types_supported',
      'device_authorization_endpoint',
      'backchannel_authentication_endpoint',
    ]) {
      assert.equal(metadata[member], undefined, member);
    }
    assert.deepEqual(metadata.scopes_supported, ['mcp:access', 'expenses:read']);
    // Only what a client can use here: PKCE with S256, the code flow, no password or device grant.
    assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(metadata.response_types_supported, ['code']);
    assert.deepEqual(metadata.grant_types_supported, ['authorization_code', 'refresh_token', 'client_credentials']);
  });

  test('endpoints the provider wrote with its internal address (a back channel) are presented with its public one', async () => {
    const internal = 'http://keycloak:8080/realms/mcp';
    const published = 'http://localhost:8080/realms/mcp';
    const app = new Hono();
    registrationFacade({
      issuer: 'http://localhost:8000',
      upstreamIssuer: published,
      upstreamBaseUrl: internal,
      fetch: async (input) => {
        assert.equal(String(input), `${internal}/.well-known/openid-configuration`);
        // As Keycloak 26.7.3 with --hostname-backchannel-dynamic answers a request at its internal address.
        return Response.json({
          issuer: published,
          authorization_endpoint: `${published}/protocol/openid-connect/auth`,
          end_session_endpoint: `${published}/protocol/openid-connect/logout`,
          token_endpoint: `${internal}/protocol/openid-connect/token`,
          jwks_uri: `${internal}/protocol/openid-connect/certs`,
          introspection_endpoint: `${internal}/protocol/openid-connect/token/introspect`,
          revocation_endpoint: `${internal}/protocol/openid-connect/revoke`,
          userinfo_endpoint: `${internal}/protocol/openid-connect/userinfo`,
          code_challenge_methods_supported: ['S256'],
        });
      },
    }).mount(app);
    const metadata = (await (await app.request('/.well-known/oauth-authorization-server')).json()) as Record<
      string,
      unknown
    >;
    assert.doesNotMatch(JSON.stringify(metadata), /keycloak:8080/);
    assert.equal(metadata.jwks_uri, `${published}/protocol/openid-connect/certs`);
    assert.equal(metadata.revocation_endpoint, `${published}/protocol/openid-connect/revoke`);
    assert.equal(metadata.token_endpoint, `${published}/protocol/openid-connect/token`);
    assert.equal(metadata.authorization_endpoint, `${published}/protocol/openid-connect/auth`);
  });

  test("the provider's metadata is fetched once for every request waiting on it; a failure is remembered, the last good document served meanwhile", async () => {
    let fetches = 0;
    let answer: 'ok' | 'down' = 'down';
    const waiting: (() => void)[] = [];
    const app = new Hono();
    registrationFacade({
      issuer: 'http://localhost:8000',
      upstreamIssuer: upstream,
      metadataTtlMs: 200,
      fetch: async (input, init) => {
        if (!String(input).endsWith('/.well-known/openid-configuration')) return fakeFetch(input, init);
        fetches += 1;
        // Held until every request of the burst has asked.
        await new Promise<void>((resolve) => waiting.push(resolve));
        return answer === 'ok' ? fakeFetch(input, init) : new Response('down', { status: 503 });
      },
    }).mount(app);
    const burst = async () => {
      const answers = Array.from({ length: 20 }, () => app.request('/.well-known/oauth-authorization-server'));
      await new Promise((resolve) => setTimeout(resolve, 20));
      for (const release of waiting.splice(0)) release();
      return (await Promise.all(answers)).map((response) => response.status);
    };

    // Down: the burst asks once, and is answered 503 by that one answer; asked again at once, nothing is fetched.
    assert.deepEqual(new Set(await burst()), new Set([503]));
    assert.equal(fetches, 1);
    const again = await app.request('/.well-known/oauth-authorization-server');
    assert.equal(again.status, 503);
    assert.equal(fetches, 1, 'the failure is remembered');

    // Up again once the failure is forgotten (min(ttl, 5 s)): one fetch for the burst.
    await new Promise((resolve) => setTimeout(resolve, 250));
    answer = 'ok';
    assert.deepEqual(new Set(await burst()), new Set([200]));
    assert.equal(fetches, 2);

    // Down after the document expired: the burst asks once and gets the last good document.
    await new Promise((resolve) => setTimeout(resolve, 250));
    answer = 'down';
    assert.deepEqual(new Set(await burst()), new Set([200]));
    assert.equal(fetches, 3);
  });

  test('forwards a registration without the members Keycloak mishandles', async () => {
    const app = makeApp();
    const response = await register(app, {
      client_name: 'An MCP client',
      redirect_uris: ['http://127.0.0.1:33418/callback'],
      token_endpoint_auth_method: 'none',
      scope: 'expenses:read',
      resource: 'http://localhost:8000/mcp',
      grant_types: ['authorization_code'],
      client_uri: 'https://github.com/example/client',
      logo_uri: 'https://github.com/example/logo.png',
    });
    assert.equal(response.status, 201);
    const forwarded = received.at(-1) as Record<string, unknown>;
    assert.equal(forwarded.client_name, 'An MCP client');
    assert.equal(forwarded.token_endpoint_auth_method, 'none');
    assert.equal('scope' in forwarded, false);
    assert.equal('resource' in forwarded, false);
    assert.equal('client_uri' in forwarded, false);
    assert.equal('logo_uri' in forwarded, false);
    assert.deepEqual(forwarded.grant_types, ['authorization_code', 'refresh_token']);
    assert.equal(response.headers.get('cache-control'), 'no-store');
  });

  const refused: [string, unknown, number, string][] = [
    ['not JSON', '{"redirect_uris": [', 400, 'invalid_client_metadata'],
    ['an array', [], 400, 'invalid_client_metadata'],
    ['no redirect URIs', { client_name: 'x' }, 400, 'invalid_redirect_uri'],
    ['a custom scheme', { redirect_uris: ['myapp://callback'] }, 400, 'invalid_redirect_uri'],
    ['plain http to another host', { redirect_uris: ['http://evil.example/cb'] }, 400, 'invalid_redirect_uri'],
    ['a fragment', { redirect_uris: ['https://app.example/cb#x'] }, 400, 'invalid_redirect_uri'],
    [
      'too many redirect URIs',
      { redirect_uris: Array.from({ length: 11 }, (_, i) => `https://a.example/${i}`) },
      400,
      'invalid_redirect_uri',
    ],
    [
      'an oversize body',
      { redirect_uris: ['https://a.example/cb'], pad: 'x'.repeat(20_000) },
      413,
      'invalid_client_metadata',
    ],
  ];
  for (const [name, body, status, error] of refused) {
    test(`refuses ${name} before the provider sees it`, async () => {
      const before = received.length;
      const response = await register(makeApp(), body);
      assert.equal(response.status, status);
      assert.equal(((await response.json()) as { error: string }).error, error);
      assert.equal(received.length, before, 'nothing was forwarded');
    });
  }

  test('rate-limits registrations per client address', async () => {
    const app = makeApp(2);
    const body = { redirect_uris: ['http://localhost:1234/cb'] };
    assert.equal((await register(app, body)).status, 201);
    assert.equal((await register(app, body)).status, 201);
    const third = await register(app, body);
    assert.equal(third.status, 429);
    const retryAfter = Number(third.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After: the rest of the minute (${retryAfter})`);
  });

  test('loopback and https redirect URIs pass the check', () => {
    for (const uri of [
      'http://127.0.0.1:5000/cb',
      'http://localhost/cb',
      'http://[::1]:8/cb',
      'https://vscode.dev/redirect',
    ]) {
      assert.equal(checkRegistration({ redirect_uris: [uri] }), undefined, uri);
    }
  });
});

/**
 * With the pass-through, Keycloak only ever sees this server's callback, so its own trusted-hosts
 * policy no longer judges the clients' redirect URIs: the facade must. Real PostgreSQL.
 */
describe('registrationFacade with the pass-through: the redirect hosts are checked here', () => {
  let opened: Awaited<ReturnType<typeof openPassThroughDatabase>>;
  before(async () => {
    opened = await openPassThroughDatabase();
  });
  after(async () => {
    await opened?.close();
  });
  const appWith = (redirectHosts?: readonly string[]) => {
    const app = new Hono();
    registrationFacade({
      issuer: 'http://localhost:8000',
      upstreamIssuer: upstream,
      registrationsPerMinute: 100,
      pool: opened.database.pool,
      fetch: fakeFetch,
      ...(redirectHosts ? { redirectHosts } : {}),
    }).mount(app);
    return app;
  };

  test('presents only what the pass-through honours: no metadata-document clients, no certificate or assertion auth, no DPoP, answers in the query, no request objects', async () => {
    const response = await appWith().request('/.well-known/oauth-authorization-server');
    const metadata = (await response.json()) as Record<string, unknown>;
    assert.equal(metadata.authorization_response_iss_parameter_supported, true);
    // Their logins would come back with Keycloak's iss, not this issuer's.
    assert.equal(metadata.client_id_metadata_document_supported, undefined);
    assert.deepEqual(metadata.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post']);
    // A DPoP proof names this token endpoint, which Keycloak refuses at its own.
    assert.equal(metadata.dpop_signing_alg_values_supported, undefined);
    // The callback reads its query only; request objects are refused at /authorize.
    assert.deepEqual(metadata.response_modes_supported, ['query']);
    assert.equal(metadata.request_parameter_supported, false);
    assert.equal(metadata.request_uri_parameter_supported, false);
    const preflight = await appWith().request('/.well-known/oauth-authorization-server', {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:6274', 'access-control-request-headers': 'mcp-protocol-version' },
    });
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /mcp-protocol-version/);
  });

  test('https on a host outside the list is refused and nothing is forwarded; loopback and the listed hosts pass', async () => {
    const app = appWith();
    for (const uri of [
      'https://evil.example/cb',
      'https://vscode.dev.evil.example/redirect',
      'https://evil.example/vscode.dev',
    ]) {
      const before = received.length;
      const response = await register(app, { redirect_uris: ['http://127.0.0.1:5000/cb', uri] });
      assert.equal(response.status, 400, uri);
      assert.equal(((await response.json()) as { error: string }).error, 'invalid_redirect_uri', uri);
      assert.equal(received.length, before, `nothing was forwarded: ${uri}`);
    }
    for (const uri of ['http://127.0.0.1:5000/cb', 'https://vscode.dev/redirect']) {
      assert.equal((await register(app, { redirect_uris: [uri] })).status, 201, uri);
    }
    const own = appWith(['app.example']);
    assert.equal((await register(own, { redirect_uris: ['https://app.example/cb'] })).status, 201);
    assert.equal(
      (await register(own, { redirect_uris: ['https://vscode.dev/redirect'] })).status,
      400,
      'the list replaces the default',
    );
  });
});

describe('registrationFacade with an unreachable provider', () => {
  const app = new Hono();
  before(() => {
    registrationFacade({
      issuer: 'http://localhost:8000',
      upstreamIssuer: 'http://127.0.0.1:9/realms/x',
      fetch: async () => {
        throw new TypeError('fetch failed');
      },
    }).mount(app);
  });
  after(() => {});
  test('metadata and registration answer 503, not 500', async () => {
    assert.equal((await app.request('/.well-known/oauth-authorization-server')).status, 503);
    assert.equal((await register(app, { redirect_uris: ['https://a.example/cb'] })).status, 503);
  });
});

test('a provider that goes down after its metadata was cached: registration answers 503, not 500', async () => {
  let up = true;
  const app = new Hono();
  registrationFacade({
    issuer: 'http://localhost:8000',
    upstreamIssuer: upstream,
    fetch: async (input, init) => {
      if (!up) throw new TypeError('fetch failed');
      return fakeFetch(input, init);
    },
  }).mount(app);
  assert.equal((await app.request('/.well-known/oauth-authorization-server')).status, 200);
  up = false;
  const response = await register(app, { redirect_uris: ['https://a.example/cb'] });
  assert.equal(response.status, 503);
  assert.equal(((await response.json()) as { error: string }).error, 'temporarily_unavailable');
});

test('behind a trusted proxy the limit keys on the address the proxy appended, not on what the caller sent', () => {
  const request = (forwarded: string) =>
    new Request('http://x/register', { headers: { 'x-forwarded-for': forwarded } });
  // The caller sent "1.1.1.1" (or anything); the ingress appended the address it saw.
  assert.equal(clientAddress(request('1.1.1.1, 203.0.113.7'), undefined, true), '203.0.113.7');
  assert.equal(clientAddress(request('9.9.9.9, 203.0.113.7'), undefined, true), '203.0.113.7');
  assert.equal(clientAddress(request('203.0.113.7'), undefined, true), '203.0.113.7');
  // IPv6 counts by /64: a host cannot step around the limit by changing its interface id.
  assert.equal(clientAddress(request('2001:db8:1:2::5'), undefined, true), '2001:db8:1:2::/64');
  assert.equal(clientAddress(request('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), undefined, true), '2001:db8:1:2::/64');
  assert.equal(clientAddress(request('2001:db8::1'), undefined, true), '2001:db8:0:0::/64');
  assert.equal(clientAddress(request('::ffff:203.0.113.7'), undefined, true), '203.0.113.7');
  // Not trusted: the header means nothing.
  const socket = { incoming: { socket: { remoteAddress: '10.0.0.5' } } };
  assert.equal(clientAddress(request('1.1.1.1'), socket, false), '10.0.0.5');
});

describe('a provider whose answers are too large (over 256 KB, chunked)', () => {
  /** The same document with a pad member: valid JSON, just too large to be worth reading. */
  const padded = (body: unknown, status = 200) =>
    new Response(JSON.stringify({ ...(body as object), pad: 'x'.repeat(300 * 1024) }), {
      status,
      headers: { 'content-type': 'application/json' },
    });

  test('its metadata: 503, not served', async () => {
    const app = new Hono();
    registrationFacade({
      issuer: 'http://localhost:8000',
      upstreamIssuer: upstream,
      fetch: async (input, init) => padded(await (await fakeFetch(input, init)).json()),
    }).mount(app);
    const response = await app.request('/.well-known/oauth-authorization-server');
    assert.equal(response.status, 503);
  });

  test('its registration answer: 502 server_error, not passed on', async () => {
    const app = new Hono();
    registrationFacade({
      issuer: 'http://localhost:8000',
      upstreamIssuer: upstream,
      fetch: async (input, init) => {
        const answer = await fakeFetch(input, init);
        return init?.method === 'POST' ? padded(await answer.json(), answer.status) : answer;
      },
    }).mount(app);
    const response = await register(app, { redirect_uris: ['https://vscode.dev/redirect'] });
    assert.equal(response.status, 502);
    assert.deepEqual(await response.json(), {
      error: 'server_error',
      error_description: "The identity provider's answer is larger than this server accepts.",
    });
  });
});
