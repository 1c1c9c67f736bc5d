import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { entraUpstream, oidcUpstream } from '../src/index.ts';

const TENANT = '11111111-2222-3333-4444-55555555abcd';
const CLIENT = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';

describe('entraUpstream (no network)', () => {
  const upstream = entraUpstream({ tenantId: TENANT, clientId: CLIENT, clientSecret: 's3cret' });

  test('v2.0 endpoints of the tenant, and its issuer', async () => {
    const endpoints = await upstream.endpoints();
    assert.equal(endpoints.authorizationEndpoint, `https://login.microsoftonline.com/${TENANT}/oauth2/v2.0/authorize`);
    assert.equal(endpoints.tokenEndpoint, `https://login.microsoftonline.com/${TENANT}/oauth2/v2.0/token`);
    assert.equal(endpoints.issuer, `https://login.microsoftonline.com/${TENANT}/v2.0`);
  });

  test('a tenant id given in upper case expects the issuer Entra writes, in lower case', async () => {
    const shouted = entraUpstream({ tenantId: TENANT.toUpperCase(), clientId: CLIENT, clientSecret: 's' });
    assert.equal((await shouted.endpoints()).issuer, `https://login.microsoftonline.com/${TENANT}/v2.0`);
  });

  test('scopes: the app API scope in api://<client-id>/ form plus openid profile offline_access', () => {
    assert.deepEqual([...upstream.scopes], [`api://${CLIENT}/mcp-access`, 'openid', 'profile', 'offline_access']);
  });

  test('the user id is the oid claim; the fixed client and its secret go to the token endpoint in the body', () => {
    assert.equal(upstream.userIdClaim, 'oid');
    assert.equal(upstream.clientId, CLIENT);
    assert.equal(upstream.clientSecret, 's3cret');
    assert.equal(upstream.tokenEndpointAuthMethod, 'client_secret_post');
    assert.equal(upstream.displayName, 'Microsoft Entra ID');
  });

  test('custom API scopes, a custom Application ID URI and full scope URIs', () => {
    const custom = entraUpstream({
      tenantId: TENANT,
      clientId: CLIENT,
      clientSecret: 's',
      apiScopes: ['expenses.read', 'https://graph.microsoft.com/User.Read'],
      applicationIdUri: 'api://expenses-mcp',
    });
    assert.deepEqual(custom.scopes.slice(0, 2), [
      'api://expenses-mcp/expenses.read',
      'https://graph.microsoft.com/User.Read',
    ]);
  });

  test('a multi-tenant authority needs its allowed tenants and expects the issuer of the tenant the token names; bad tenant ids are refused', async () => {
    for (const tenantId of ['common', 'organizations', 'consumers']) {
      assert.throws(() => entraUpstream({ tenantId, clientId: CLIENT, clientSecret: 's' }), /allowedTenantIds/);
      assert.throws(
        () => entraUpstream({ tenantId, clientId: CLIENT, clientSecret: 's', allowedTenantIds: [] }),
        /allowedTenantIds/,
      );
    }
    assert.throws(
      () =>
        entraUpstream({ tenantId: 'common', clientId: CLIENT, clientSecret: 's', allowedTenantIds: ['contoso.com'] }),
      /Not a tenant GUID/,
    );
    assert.throws(
      () => entraUpstream({ tenantId: TENANT, clientId: CLIENT, clientSecret: 's', allowedTenantIds: [TENANT] }),
      /multi-tenant tenantId .* only/,
    );
    const multi = entraUpstream({
      tenantId: 'organizations',
      clientId: CLIENT,
      clientSecret: 's',
      allowedTenantIds: [TENANT.toUpperCase()],
    });
    const { issuer } = await multi.endpoints();
    assert.equal(typeof issuer, 'function');
    const expected = issuer as (claims: Record<string, unknown>) => string | undefined;
    assert.equal(expected({ tid: TENANT }), `https://login.microsoftonline.com/${TENANT}/v2.0`);
    assert.equal(expected({ tid: 'ffffffff-2222-3333-4444-555555555555' }), undefined, 'another tenant');
    assert.equal(expected({}), undefined, 'no tenant named');
    assert.throws(() => entraUpstream({ tenantId: 'a/b?c', clientId: CLIENT, clientSecret: 's' }), /tenant/);
    // A verified domain reaches Entra's endpoints, but its tokens name the GUID in iss: refused up front.
    assert.throws(
      () => entraUpstream({ tenantId: 'contoso.onmicrosoft.com', clientId: CLIENT, clientSecret: 's' }),
      /directory \(tenant\) id, a GUID/,
    );
    assert.throws(() => entraUpstream({ tenantId: TENANT, clientId: CLIENT, clientSecret: '' }), /secret/);
  });

  test('sovereign clouds: another authority', async () => {
    const gov = entraUpstream({
      tenantId: TENANT,
      clientId: CLIENT,
      clientSecret: 's',
      authority: 'https://login.microsoftonline.us/',
    });
    assert.equal((await gov.endpoints()).tokenEndpoint, `https://login.microsoftonline.us/${TENANT}/oauth2/v2.0/token`);
  });
});

describe('oidcUpstream', () => {
  test('reads the discovery document once, rewrites internal URLs, refuses a provider without S256', async () => {
    let calls = 0;
    const fakeFetch = (async (input: string | URL | Request) => {
      calls += 1;
      assert.equal(String(input), 'http://keycloak:8080/realms/mcp/.well-known/openid-configuration');
      return Response.json({
        issuer: 'http://localhost:8080/realms/mcp',
        authorization_endpoint: 'http://localhost:8080/realms/mcp/protocol/openid-connect/auth',
        token_endpoint: 'http://localhost:8080/realms/mcp/protocol/openid-connect/token',
        code_challenge_methods_supported: ['plain', 'S256'],
      });
    }) as typeof fetch;
    const upstream = oidcUpstream({
      discoveryUrl: 'http://localhost:8080/realms/mcp',
      clientId: 'mcp-proxy',
      clientSecret: 's',
      internalBaseUrl: { from: 'http://localhost:8080', to: 'http://keycloak:8080' },
      fetch: fakeFetch,
    });
    const endpoints = await upstream.endpoints();
    await upstream.endpoints();
    assert.equal(calls, 1);
    assert.equal(endpoints.issuer, 'http://localhost:8080/realms/mcp');
    assert.equal(
      endpoints.authorizationEndpoint,
      'http://localhost:8080/realms/mcp/protocol/openid-connect/auth',
      'browsers use the public URL',
    );
    assert.equal(
      endpoints.tokenEndpoint,
      'http://keycloak:8080/realms/mcp/protocol/openid-connect/token',
      'the proxy the internal one',
    );
    assert.deepEqual([...upstream.scopes], ['openid', 'profile', 'offline_access']);
    assert.equal(upstream.userIdClaim, 'sub');

    const noPkce = oidcUpstream({
      discoveryUrl: 'https://idp.example.com/.well-known/openid-configuration',
      clientId: 'c',
      clientSecret: 's',
      fetch: (async () =>
        Response.json({
          issuer: 'https://idp.example.com',
          authorization_endpoint: 'https://a',
          token_endpoint: 'https://t',
          code_challenge_methods_supported: ['plain'],
        })) as typeof fetch,
    });
    await assert.rejects(noPkce.endpoints(), /S256/);
  });
});
