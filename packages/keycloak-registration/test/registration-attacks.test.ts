import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkRegistration } from '@mcp-auth-stack/auth';
import { Hono } from 'hono';
import { registrationFacade } from '../src/registration-facade.ts';

/**
 * Hostile registrations at the facade (issue 11, broken 2 and 4): each is refused with 400 and
 * never reaches the identity provider. The provider here is a stand-in counting what it gets.
 */
const upstream = 'http://idp.test/realms/mcp';
let forwarded = 0;
const fakeFetch: typeof fetch = async (input, init) => {
  const url = String(input);
  if (url === `${upstream}/.well-known/openid-configuration`) {
    return Response.json({
      issuer: upstream,
      registration_endpoint: `${upstream}/clients-registrations/openid-connect`,
    });
  }
  if (init?.method === 'POST') {
    forwarded++;
    return Response.json({ client_id: 'generated' }, { status: 201 });
  }
  return new Response('not found', { status: 404 });
};

function app() {
  const hono = new Hono();
  registrationFacade({ issuer: 'http://localhost:8000', upstreamIssuer: upstream, fetch: fakeFetch }).mount(hono);
  return hono;
}

const register = (hono: Hono, body: string) =>
  hono.request('/register', { method: 'POST', headers: { 'content-type': 'application/json' }, body });

const nested = (depth: number) => `${'['.repeat(depth)}"http://127.0.0.1/cb"${']'.repeat(depth)}`;
const base = { client_name: 'x', redirect_uris: ['http://127.0.0.1:3000/cb'], token_endpoint_auth_method: 'none' };

describe('registration attacks', () => {
  test('redirect_uris nested 5,000 deep: 400 invalid_client_metadata, not a 500 from a stack overflow', async () => {
    const before = forwarded;
    const response = await register(app(), `{"redirect_uris":${nested(5000)}}`);
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { error: string }).error, 'invalid_client_metadata');
    assert.equal(forwarded, before, 'nothing forwarded');
    // The check itself, as the OAuth proxy's registration uses it on an already parsed body.
    const parsed = JSON.parse(`{"redirect_uris":${nested(5000)}}`) as unknown;
    assert.equal(checkRegistration(parsed)?.error, 'invalid_client_metadata');
    assert.equal(checkRegistration({ redirect_uris: [['http://127.0.0.1/cb']] })?.error, 'invalid_redirect_uri');
  });

  const GRANTS_REFUSED =
    /^(grant_types may only contain authorization_code and refresh_token|response_types may only contain code)\.$/;
  for (const [what, extra, description] of [
    [
      'pairwise with a sector_identifier_uri',
      { subject_type: 'pairwise', sector_identifier_uri: 'http://127.0.0.2:9/x' },
    ],
    ['a sector_identifier_uri alone', { sector_identifier_uri: 'https://internal.example/x' }],
    ['subject_type pairwise alone', { subject_type: 'pairwise' }],
    ['a jwks_uri', { jwks_uri: 'http://169.254.169.254/latest' }],
    ['request_uris', { request_uris: ['http://127.0.0.2/r'] }],
    ['a backchannel_logout_uri', { backchannel_logout_uri: 'http://127.0.0.2/logout' }],
    ['a CIBA notification endpoint', { backchannel_client_notification_endpoint: 'http://127.0.0.2/ciba' }],
    // A grant without a redirect hands the token to whoever holds the request: the registrant
    // sends a user the sign-in link and collects the user's token (RFC 8628 section 5.4).
    [
      'the device grant',
      { grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'] },
      GRANTS_REFUSED,
    ],
    ['CIBA', { grant_types: ['authorization_code', 'urn:openid:params:grant-type:ciba'] }, GRANTS_REFUSED],
    ['client_credentials', { grant_types: ['authorization_code', 'client_credentials'] }, GRANTS_REFUSED],
    ['password', { grant_types: ['password'] }, GRANTS_REFUSED],
    ['grant_types not a list', { grant_types: 'authorization_code' }, GRANTS_REFUSED],
    // Nothing to use at the token endpoint (a refresh token comes from a code).
    [
      'refresh tokens without the code grant',
      { grant_types: ['refresh_token'] },
      /^grant_types must include authorization_code\.$/,
    ],
    ['no grant at all', { grant_types: [] }, /^grant_types must include authorization_code\.$/],
    ['the implicit response type', { response_types: ['code', 'token'] }, GRANTS_REFUSED],
    // The name Keycloak's consent page shows: what it reads must be what it is.
    [
      'a client_name with a right-to-left override',
      { client_name: 'Editor\u202Etxt.exe' },
      /^client_name must not contain/,
    ],
    ['a client_name with nothing visible', { client_name: '\u2800' }, /^client_name must contain at least one visible/],
  ] as const) {
    test(`${what}: refused before the identity provider sees it`, async () => {
      const before = forwarded;
      const response = await register(app(), JSON.stringify({ ...base, ...extra }));
      assert.equal(response.status, 400);
      const body = (await response.json()) as { error: string; error_description: string };
      assert.equal(body.error, 'invalid_client_metadata');
      if (description) assert.match(body.error_description, description);
      assert.equal(forwarded, before);
    });
  }

  test('an ordinary registration still goes through', async () => {
    const before = forwarded;
    const response = await register(app(), JSON.stringify({ ...base, subject_type: 'public' }));
    assert.equal(response.status, 201);
    assert.equal(forwarded, before + 1);
    // What MCP clients send: the code grant, with refresh tokens.
    const explicit = await register(
      app(),
      JSON.stringify({ ...base, grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] }),
    );
    assert.equal(explicit.status, 201);
    assert.equal(forwarded, before + 2);
  });
});
