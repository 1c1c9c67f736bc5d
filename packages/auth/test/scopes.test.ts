import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { serve } from '@hono/node-server';
import { accessToken, FakeIdp, RESOURCE, type SigningKey, signingKey } from '@mcp-auth-stack/testing/fake-idp';
import { Hono } from 'hono';
import {
  type AuthOutcome,
  type AuthProvider,
  type AuthVariables,
  filterToolsListResult,
  isToolAllowed,
  jwtBearerProvider,
  type McpScopeRequirements,
  noAuthProvider,
  type Principal,
  requireAuth,
  requireMcpScopes,
  scopesRequiredFor,
} from '../src/index.ts';

const METADATA_URL = 'http://localhost:8000/.well-known/oauth-protected-resource/mcp';

const requirements: McpScopeRequirements = {
  tools: {
    add_user_expense: ['expenses:write'],
    get_user_expenses: ['expenses:read'],
    get_expense_stats: ['expenses:admin'],
  },
  methods: { 'resources/read': ['expenses:read'] },
};

const toolCall = (name: string, id = 1) =>
  JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });

let idp: FakeIdp;
let key: SigningKey;
before(async () => {
  key = await signingKey('k1');
  idp = await FakeIdp.start([key]);
});
after(() => idp.close());

/** requireAuth → requireMcpScopes → an endpoint that echoes the body it reads, as the MCP endpoint would. */
function appWith(auth: AuthProvider, read: 'raw' | 'hono' = 'raw') {
  const app = new Hono<{ Variables: AuthVariables }>();
  app.use('/mcp', requireAuth(auth));
  app.use('/mcp', requireMcpScopes({ requirements, provider: auth }));
  app.post('/mcp', async (c) => c.json({ body: read === 'raw' ? await c.req.raw.text() : await c.req.json() }));
  return app;
}

function jwtApp(read: 'raw' | 'hono' = 'raw') {
  const auth = jwtBearerProvider({
    issuer: idp.issuer,
    jwksUri: idp.jwksUri,
    resource: RESOURCE,
    challengeScopes: ['mcp:access'],
  });
  return appWith(auth, read);
}

async function post(app: Hono<{ Variables: AuthVariables }>, body: string, headers: Record<string, string> = {}) {
  return await app.request('/mcp', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });
}

const reader = async (scope = 'mcp:access expenses:read') => ({
  authorization: `Bearer ${await accessToken(idp, key, { scope })}`,
});

describe('requireMcpScopes: HTTP-level step-up', () => {
  test('a call from the body that lacks a scope: 403 with every scope to ask for in one challenge', async () => {
    const response = await post(jwtApp(), toolCall('add_user_expense'), await reader());
    assert.equal(response.status, 403);
    assert.equal(
      response.headers.get('www-authenticate'),
      `Bearer error="insufficient_scope", scope="mcp:access expenses:read expenses:write", resource_metadata="${METADATA_URL}", error_description="The tool add_user_expense needs the scope expenses:write."`,
    );
    assert.equal(response.headers.get('cache-control'), 'no-store');
    assert.deepEqual(await response.json(), {
      error: 'insufficient_scope',
      error_description: 'The tool add_user_expense needs the scope expenses:write.',
    });
  });

  test('from the Mcp-Method/Mcp-Name headers, decided before the body is parsed', async () => {
    // The body is not even JSON: only the headers can have produced this 403.
    const response = await post(jwtApp(), 'not json', {
      ...(await reader('mcp:access')),
      'mcp-method': 'tools/call',
      'mcp-name': 'get_expense_stats',
    });
    assert.equal(response.status, 403);
    assert.equal(
      response.headers.get('www-authenticate'),
      `Bearer error="insufficient_scope", scope="mcp:access expenses:admin", resource_metadata="${METADATA_URL}", error_description="The tool get_expense_stats needs the scope expenses:admin."`,
    );
  });

  test('method-level requirements: resources/read', async () => {
    const body = JSON.stringify({
      jsonrpc: '2.0',
      id: 3,
      method: 'resources/read',
      params: { uri: 'resource://expenses' },
    });
    const response = await post(jwtApp(), body, await reader('mcp:access'));
    assert.equal(response.status, 403);
    assert.match(response.headers.get('www-authenticate') ?? '', /scope="mcp:access expenses:read", /);
    assert.match(response.headers.get('www-authenticate') ?? '', /The method resources\/read needs the scope/);
  });

  test('an allowed call passes and its body is still readable, raw or through Hono', async () => {
    const body = toolCall('get_user_expenses');
    const headers = { ...(await reader()), 'mcp-method': 'tools/call', 'mcp-name': 'get_user_expenses' };
    const raw = await post(jwtApp('raw'), body, headers);
    assert.equal(raw.status, 200);
    assert.deepEqual(await raw.json(), { body });
    const viaHono = await post(jwtApp('hono'), body, headers);
    assert.deepEqual(await viaHono.json(), { body: JSON.parse(body) });
  });

  test('a method or tool named after an Object property (constructor, __proto__) needs no declared scope and is passed on, not a 500', async () => {
    const app = jwtApp();
    for (const body of [
      JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'constructor' }),
      JSON.stringify({ jsonrpc: '2.0', id: 1, method: '__proto__' }),
      toolCall('constructor'),
      toolCall('__proto__'),
      toolCall('hasOwnProperty'),
    ]) {
      const response = await post(app, body, await reader('mcp:access'));
      assert.equal(response.status, 200, body);
      assert.deepEqual(await response.json(), { body }, 'the endpoint answers it (an unknown method or tool)');
    }
    assert.deepEqual(scopesRequiredFor(requirements, { method: 'tools/call', name: 'toString' }), []);
  });

  test('headers that disagree with the body: 400', async () => {
    const app = jwtApp();
    const headers = await reader();
    const wrongName = await post(app, toolCall('add_user_expense'), {
      ...headers,
      'mcp-method': 'tools/call',
      'mcp-name': 'get_user_expenses',
    });
    assert.equal(wrongName.status, 400);
    assert.match(
      ((await wrongName.json()) as { error: { message: string } }).error.message,
      /Mcp-Name header does not match/,
    );
    const wrongMethod = await post(app, toolCall('get_user_expenses'), {
      ...headers,
      'mcp-method': 'tools/list',
    });
    assert.equal(wrongMethod.status, 400);
    assert.match(
      ((await wrongMethod.json()) as { error: { message: string } }).error.message,
      /Mcp-Method header does not match/,
    );
  });

  test('an Mcp-Name sent as =?base64?…?= (a name that is not header-safe ASCII) is read decoded', async () => {
    const app = jwtApp();
    const headers = { ...(await reader()), 'mcp-method': 'tools/call' };
    const encoded = (name: string) => `=?base64?${Buffer.from(name, 'utf8').toString('base64')}?=`;
    // As mcp-remote and the SDK's client send them: a non-ASCII name, a name with an edge space.
    for (const name of ['dépense', ' padded']) {
      const body = toolCall(name);
      const response = await post(app, body, { ...headers, 'mcp-name': encoded(name) });
      assert.equal(response.status, 200, name);
      assert.deepEqual(await response.json(), { body }, name);
    }
    // Decoded, it still has to be the body's name, and the scope rule still applies to it.
    const other = await post(app, toolCall('get_user_expenses'), { ...headers, 'mcp-name': encoded('dépense') });
    assert.equal(other.status, 400);
    const forbidden = await post(app, 'not json', { ...headers, 'mcp-name': encoded('get_expense_stats') });
    assert.equal(forbidden.status, 403);
    for (const broken of [
      '=?base64?not*base64?=',
      `=?base64?${Buffer.from([0xff, 0xfe]).toString('base64')}?=`,
      '=?base64?eA?=', // "x" without its padding: not base64 as the clients write it
    ]) {
      const response = await post(app, toolCall('x'), { ...headers, 'mcp-name': broken });
      assert.equal(response.status, 400, broken);
      assert.match(((await response.json()) as { error: { message: string } }).error.message, /not valid/);
    }
    // Only the whole form is an encoding: a name that merely starts like it is itself.
    const literal = '=?base64?x';
    const plain = await post(app, toolCall(literal), { ...headers, 'mcp-name': literal });
    assert.equal(plain.status, 200);
  });

  test('a caller holding every scope: body unread without headers, yet mismatching headers still get 400', async () => {
    const app = jwtApp();
    const all = await reader('mcp:access expenses:read expenses:write expenses:admin');
    const body = toolCall('get_expense_stats');
    const plain = await post(app, body, all);
    assert.deepEqual(await plain.json(), { body });
    const mismatch = await post(app, body, { ...all, 'mcp-method': 'tools/call', 'mcp-name': 'add_user_expense' });
    assert.equal(mismatch.status, 400);
  });

  test('calls that need nothing pass: tools/list, unlisted tools, notifications, malformed JSON', async () => {
    const app = jwtApp();
    const headers = await reader('mcp:access');
    for (const body of [
      JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      toolCall('add_expense'),
      JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    ]) {
      const response = await post(app, body, headers);
      assert.equal(response.status, 200, body);
      assert.deepEqual(await response.json(), { body });
    }
    // Left to the endpoint, which answers the parse error.
    const malformed = await post(app, '{"jsonrpc":', headers);
    assert.deepEqual(await malformed.json(), { body: '{"jsonrpc":' });
  });

  test('a batch is authorized call by call', async () => {
    const batch = `[${toolCall('get_user_expenses', 1)},${toolCall('add_user_expense', 2)}]`;
    const response = await post(jwtApp(), batch, await reader());
    assert.equal(response.status, 403);
    assert.match(response.headers.get('www-authenticate') ?? '', /add_user_expense needs the scope expenses:write/);
  });

  test('a body over the limit: 413 without reading it', async () => {
    const auth = jwtBearerProvider({ issuer: idp.issuer, jwksUri: idp.jwksUri, resource: RESOURCE });
    const app = new Hono<{ Variables: AuthVariables }>();
    app.use('/mcp', requireAuth(auth), requireMcpScopes({ requirements, provider: auth, maxBodyBytes: 100 }));
    app.post('/mcp', (c) => c.text('reached'));
    const response = await post(app, toolCall('x'.repeat(200)), await reader('mcp:access'));
    assert.equal(response.status, 413);
  });

  test('a chunked body over the limit: 413, and the rest of the stream is given up', async () => {
    const auth = jwtBearerProvider({ issuer: idp.issuer, jwksUri: idp.jwksUri, resource: RESOURCE });
    const app = new Hono<{ Variables: AuthVariables }>();
    app.use('/mcp', requireAuth(auth), requireMcpScopes({ requirements, provider: auth, maxBodyBytes: 100 }));
    app.post('/mcp', (c) => c.text('reached'));
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(new Uint8Array(64).fill(32));
      },
      cancel() {
        cancelled = true;
      },
    });
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        ...(await reader('mcp:access')),
      },
      body,
      duplex: 'half',
    } as RequestInit);
    assert.equal(response.status, 413);
    assert.equal(cancelled, true, 'discardBody: the endless body is not read on after the answer');
  });

  test('no authentication (method none) may call everything', async () => {
    const response = await post(appWith(noAuthProvider({ userId: 'local' })), toolCall('get_expense_stats'));
    assert.equal(response.status, 200);
  });

  test('API keys carry scopes like tokens: a key without scopes gets only what needs none', async () => {
    const keyProvider = (scopes: string[]): AuthProvider => {
      const accepted: AuthOutcome = {
        ok: true,
        principal: { userId: 'u', scopes, method: 'api_key', clientId: 'key_1' },
      };
      // The requests below carry no credential: the stub accepts them as the key's caller.
      return {
        name: 'key',
        challengeParameters: () => ({ realm: 'mcp' }),
        verify: async () => accepted,
        withoutCredential: async () => accepted,
      };
    };
    const unscoped = await post(appWith(keyProvider([])), toolCall('get_user_expenses'));
    assert.equal(unscoped.status, 403);
    assert.equal(
      unscoped.headers.get('www-authenticate'),
      'Bearer error="insufficient_scope", scope="expenses:read", realm="mcp", error_description="The tool get_user_expenses needs the scope expenses:read."',
    );
    assert.equal((await post(appWith(keyProvider(['expenses:read'])), toolCall('get_user_expenses'))).status, 200);
  });

  test('through a real @hono/node-server: the MCP endpoint still reads the body', async () => {
    const server = serve({ fetch: jwtApp().fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const body = toolCall('get_user_expenses');
      const response = await fetch(`http://127.0.0.1:${port}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(await reader('mcp:access expenses:read')) },
        body,
      });
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), { body });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('tools/list filtering helpers', () => {
  const reader: Principal = { userId: 'u', scopes: ['expenses:read'], method: 'oauth' };

  test('scopesRequiredFor merges method-wide and per-tool scopes', () => {
    const withBase = { ...requirements, methods: { 'tools/call': ['mcp:access'] } };
    assert.deepEqual(scopesRequiredFor(withBase, { method: 'tools/call', name: 'add_user_expense' }), [
      'mcp:access',
      'expenses:write',
    ]);
    assert.deepEqual(scopesRequiredFor(requirements, { method: 'tools/list' }), []);
  });

  test('isToolAllowed and filterToolsListResult keep only what the caller may call', () => {
    assert.equal(isToolAllowed(reader, 'get_user_expenses', requirements), true);
    assert.equal(isToolAllowed(reader, 'add_user_expense', requirements), false);
    assert.equal(isToolAllowed(reader, 'add_expense', requirements), true, 'unlisted tools need nothing');
    const result = {
      tools: [{ name: 'add_user_expense' }, { name: 'get_user_expenses' }, { name: 'get_expense_stats' }],
      nextCursor: 'n',
    };
    assert.deepEqual(filterToolsListResult(result, reader, requirements), {
      tools: [{ name: 'get_user_expenses' }],
      nextCursor: 'n',
    });
    assert.equal(result.tools.length, 3, 'the input is not modified');
    const admin = (principal: Principal, scope: string) =>
      principal.scopes.includes(scope) || (scope === 'expenses:admin' && (principal.roles ?? []).includes('admin'));
    assert.equal(isToolAllowed({ ...reader, roles: ['admin'] }, 'get_expense_stats', requirements, admin), true);
  });
});
