import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Hono } from 'hono';
import {
  jwtBearerProvider,
  mountProtectedResourceMetadata,
  protectedResourceMetadata,
  protectedResourceMetadataUrl,
} from '../src/index.ts';

describe('protectedResourceMetadataUrl (RFC 9728 section 3.1)', () => {
  test('puts the well-known segment between host and path', () => {
    assert.equal(
      protectedResourceMetadataUrl('http://localhost:8000/mcp'),
      'http://localhost:8000/.well-known/oauth-protected-resource/mcp',
    );
    assert.equal(
      protectedResourceMetadataUrl('https://example.com/tenant/a/mcp'),
      'https://example.com/.well-known/oauth-protected-resource/tenant/a/mcp',
    );
    assert.equal(
      protectedResourceMetadataUrl('https://example.com'),
      'https://example.com/.well-known/oauth-protected-resource',
    );
  });
  test('refuses what is not a resource identifier', () => {
    assert.throws(() => protectedResourceMetadataUrl('/mcp'), /not an absolute URL/);
    assert.throws(() => protectedResourceMetadataUrl('ftp://h/mcp'), /http or https/);
    assert.throws(() => protectedResourceMetadataUrl('https://h/mcp?x=1'), /no query/);
  });
});

describe('mountProtectedResourceMetadata', () => {
  const options = {
    resource: 'http://localhost:8000/mcp',
    authorizationServers: ['http://localhost:8080/realms/mcp'],
    scopesSupported: ['mcp:access', 'expenses:read', 'expenses:write'],
    resourceName: 'Expenses',
    resourceDocumentation: 'http://localhost:8000/docs',
  };
  const expected = {
    resource: 'http://localhost:8000/mcp',
    authorization_servers: ['http://localhost:8080/realms/mcp'],
    bearer_methods_supported: ['header'],
    scopes_supported: ['mcp:access', 'expenses:read', 'expenses:write'],
    resource_name: 'Expenses',
    resource_documentation: 'http://localhost:8000/docs',
  };

  test('serves the same document at the path-aware and the root URL, publicly readable', async () => {
    const app = new Hono();
    mountProtectedResourceMetadata(app, options);
    for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
      const response = await app.request(path);
      assert.equal(response.status, 200, path);
      assert.deepEqual(await response.json(), expected);
      assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
      assert.equal(response.headers.get('access-control-allow-origin'), '*');
      assert.equal(response.headers.get('cache-control'), 'public, max-age=300');
    }
  });

  test('HEAD has the headers and no body; OPTIONS answers a CORS preflight', async () => {
    const app = new Hono();
    mountProtectedResourceMetadata(app, options);
    const head = await app.request('/.well-known/oauth-protected-resource/mcp', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal(head.headers.get('access-control-allow-origin'), '*');
    const preflight = await app.request('/.well-known/oauth-protected-resource/mcp', {
      method: 'OPTIONS',
      headers: {
        origin: 'http://localhost:6274',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'mcp-protocol-version',
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), '*');
    assert.equal(preflight.headers.get('access-control-allow-methods'), 'GET, HEAD, OPTIONS');
    assert.equal(preflight.headers.get('access-control-allow-headers'), 'mcp-protocol-version');
  });

  test('serveAtRoot: false leaves the root form to someone else; other paths are not served', async () => {
    const app = new Hono();
    mountProtectedResourceMetadata(app, { ...options, serveAtRoot: false });
    assert.equal((await app.request('/.well-known/oauth-protected-resource')).status, 404);
    assert.equal((await app.request('/.well-known/oauth-protected-resource/other')).status, 404);
    assert.equal((await app.request('/.well-known/oauth-protected-resource/mcp')).status, 200);
  });

  test('the document needs an authorization server; extra members are kept but cannot override', () => {
    assert.throws(() => protectedResourceMetadata({ ...options, authorizationServers: [] }), /authorization server/);
    const document = protectedResourceMetadata({
      resource: options.resource,
      authorizationServers: options.authorizationServers,
      additionalMetadata: { resource_policy_uri: 'http://x/policy', resource: 'http://evil/' },
    });
    assert.deepEqual(document, {
      resource_policy_uri: 'http://x/policy',
      resource: 'http://localhost:8000/mcp',
      authorization_servers: ['http://localhost:8080/realms/mcp'],
      bearer_methods_supported: ['header'],
    });
  });

  test("jwtBearerProvider's mount serves it, naming the issuer by default", async () => {
    const app = new Hono();
    jwtBearerProvider({
      issuer: 'http://localhost:8080/realms/mcp',
      jwksUri: 'http://localhost:8080/realms/mcp/protocol/openid-connect/certs',
      resource: 'http://localhost:8000/mcp',
      challengeScopes: ['mcp:access'],
    }).mount(app);
    const response = await app.request('/.well-known/oauth-protected-resource/mcp');
    assert.deepEqual(await response.json(), {
      resource: 'http://localhost:8000/mcp',
      authorization_servers: ['http://localhost:8080/realms/mcp'],
      bearer_methods_supported: ['header'],
      scopes_supported: ['mcp:access'],
    });
  });
});
