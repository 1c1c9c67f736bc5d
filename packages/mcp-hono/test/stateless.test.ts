import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { type Context, Hono } from 'hono';
import { z } from 'zod';
import {
  createStatelessMcpEndpoint,
  lossyNumbers,
  lossyRequestNumbers,
  originGuard,
  readBodyOnce,
} from '../src/index.ts';

const events: string[] = [];

/** What the `hold` tool waits for: released by the test that started it (`releaseHold`). */
let releaseHold = () => {};
let held = Promise.resolve();

async function makeApp(maxBodyBytes = 4096, toolVisible?: (name: string, user: string | undefined) => boolean) {
  const server = new McpServer({ name: 'test', version: '1.0.0' });
  server.registerTool(
    'echo',
    { inputSchema: { value: z.string(), delayMs: z.number().optional() } },
    async ({ value, delayMs }, extra) => {
      if (delayMs) await sleep(delayMs);
      const who = (extra.authInfo?.extra as { user?: string } | undefined)?.user ?? 'nobody';
      return { content: [{ type: 'text', text: `${who}:${value}` }] };
    },
  );
  server.registerTool('hold', { inputSchema: {} }, async (_args, extra) => {
    events.push('holding');
    await held;
    const who = (extra.authInfo?.extra as { user?: string } | undefined)?.user ?? 'nobody';
    return { content: [{ type: 'text', text: `${who}:held` }] };
  });
  server.registerTool('wait_for_cancel', { inputSchema: {} }, async (_args, extra) => {
    await new Promise<void>((resolve) => extra.signal.addEventListener('abort', () => resolve(), { once: true }));
    events.push('handler saw the abort');
    return { content: [] };
  });
  server.registerTool('ask_user', { inputSchema: {} }, async () => {
    await server.server.elicitInput({ message: 'name?', requestedSchema: { type: 'object', properties: {} } });
    return { content: [] };
  });
  server.registerResource('greeting', 'test://greeting', {}, async (uri) => ({
    contents: [{ uri: uri.href, text: 'hello' }],
  }));
  const endpoint = await createStatelessMcpEndpoint(server, {
    maxBodyBytes,
    authInfo: (c) => ({ token: 'x', clientId: 'c', scopes: [], extra: { user: c.req.header('x-user') } }),
    ...(toolVisible ? { toolVisible: (name: string, c) => toolVisible(name, c.req.header('x-user')) } : {}),
  });
  const app = new Hono();
  app.all('/mcp', (c) => endpoint.handle(c));
  return app;
}

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const call = (id: number | string, value: string, delayMs = 0) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'echo', arguments: { value, delayMs } },
});

describe('one MCP server shared by concurrent stateless requests', () => {
  test("replies go back to the right request with the caller's own id, even when ids collide", async () => {
    const app = await makeApp();
    const responses = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const response = await app.request('/mcp', {
          method: 'POST',
          headers: { ...HEADERS, 'x-user': `user${i}` },
          body: JSON.stringify(call(1, `value${i}`, (i * 7) % 13)),
        });
        return {
          i,
          status: response.status,
          body: (await response.json()) as { id: number; result: { content: { text: string }[] } },
        };
      }),
    );
    for (const { i, status, body } of responses) {
      assert.equal(status, 200);
      assert.equal(body.id, 1);
      assert.equal(body.result.content[0]?.text, `user${i}:value${i}`);
    }
  });

  test('initialize works for every client, and a notification gets 202 with no body', async () => {
    const app = await makeApp();
    for (let i = 0; i < 2; i++) {
      const init = await app.request('/mcp', {
        method: 'POST',
        headers: HEADERS,
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 'init',
          method: 'initialize',
          params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: `c${i}`, version: '1' } },
        }),
      });
      const body = (await init.json()) as {
        id: string;
        result: { protocolVersion: string; serverInfo: { name: string } };
      };
      assert.equal(body.id, 'init');
      assert.equal(body.result.protocolVersion, '2025-06-18');
      assert.equal(body.result.serverInfo.name, 'test');
    }
    const note = await app.request('/mcp', {
      method: 'POST',
      headers: HEADERS,
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    assert.equal(note.status, 202);
    assert.equal(await note.text(), '');
  });

  test('initialize negotiates whatever version its header names; other messages need a supported one', async () => {
    const app = await makeApp();
    const newer = '2099-01-01';
    const init = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, 'mcp-protocol-version': newer },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: newer, capabilities: {}, clientInfo: { name: 'next', version: '1' } },
      }),
    });
    assert.equal(init.status, 200);
    const body = (await init.json()) as { result: { protocolVersion: string } };
    assert.equal(body.result.protocolVersion, LATEST_PROTOCOL_VERSION, 'offered the newest it supports');
    const listing = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, 'mcp-protocol-version': newer },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
    });
    assert.equal(listing.status, 400);
    assert.match(((await listing.json()) as { error: { message: string } }).error.message, /Unsupported MCP-Protocol/);
  });

  test('a client that disconnects cancels its handler', async () => {
    const app = await makeApp();
    const controller = new AbortController();
    const pending = Promise.resolve(
      app.request('/mcp', {
        method: 'POST',
        headers: HEADERS,
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 9,
          method: 'tools/call',
          params: { name: 'wait_for_cancel', arguments: {} },
        }),
        signal: controller.signal,
      }),
    ).catch(() => undefined);
    await sleep(50);
    controller.abort();
    await pending;
    await sleep(20);
    assert.ok(events.includes('handler saw the abort'));
  });

  test("a client's notifications/cancelled cannot cancel another client's request", async () => {
    const app = await makeApp();
    held = new Promise((resolve) => {
      releaseHold = resolve;
    });
    // Another caller's request runs under an internal id (small, sequential), which a
    // cancellation naming "its own" request id would hit if it reached the server. It is held
    // running until every cancellation has been answered.
    const pending = app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, 'x-user': 'alice' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'hold', arguments: {} } }),
    });
    while (!events.includes('holding')) await sleep(5);
    for (let requestId = 0; requestId <= 20; requestId++) {
      const note = await app.request('/mcp', {
        method: 'POST',
        headers: { ...HEADERS, 'x-user': 'mallory' },
        body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId } }),
      });
      assert.equal(note.status, 202);
    }
    releaseHold();
    const giveUp = new AbortController();
    const response = await Promise.race([
      pending,
      sleep(5_000, undefined, { signal: giveUp.signal }).catch(() => undefined),
    ]);
    giveUp.abort();
    assert.ok(response, 'the request was answered');
    assert.deepEqual(await response.json(), {
      jsonrpc: '2.0',
      id: 1,
      result: { content: [{ type: 'text', text: 'alice:held' }] },
    });
  });

  test('a server-to-client request fails at once instead of hanging', async () => {
    const app = await makeApp();
    // A client that declares elicitation, so the SDK does try to send the request.
    await app.request('/mcp', {
      method: 'POST',
      headers: HEADERS,
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: {
          protocolVersion: '2025-06-18',
          capabilities: { elicitation: {} },
          clientInfo: { name: 'c', version: '1' },
        },
      }),
    });
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: HEADERS,
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 3,
        method: 'tools/call',
        params: { name: 'ask_user', arguments: {} },
      }),
    });
    const body = (await response.json()) as { result: { isError: boolean; content: { text: string }[] } };
    assert.equal(body.result.isError, true);
    assert.match(body.result.content[0]?.text ?? '', /needs a session; this endpoint is stateless/);
  });
});

test('tools/list is filtered per caller when a visibility rule is given', async () => {
  const app = await makeApp(4096, (name, user) => name === 'echo' || user === 'admin');
  const list = async (user: string) => {
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, 'x-user': user },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    return ((await response.json()) as { result: { tools: { name: string }[] } }).result.tools
      .map((t) => t.name)
      .sort();
  };
  assert.deepEqual(await list('someone'), ['echo']);
  assert.deepEqual(await list('admin'), ['ask_user', 'echo', 'hold', 'wait_for_cancel']);
});

test('resources, resource templates and prompts are filtered per caller like tools', async () => {
  const server = new McpServer({ name: 'listings', version: '1.0.0' });
  const read = async (uri: URL) => ({ contents: [{ uri: uri.href, text: 'x' }] });
  server.registerResource('open', 'test://open', {}, read);
  server.registerResource('secret', 'test://secret', {}, read);
  server.registerResource('by-id', new ResourceTemplate('test://secret/{id}', { list: undefined }), {}, read);
  server.registerPrompt('open_prompt', {}, () => ({ messages: [] }));
  server.registerPrompt('secret_prompt', {}, () => ({ messages: [] }));
  const admin = (c: Context) => c.req.header('x-user') === 'admin';
  const endpoint = await createStatelessMcpEndpoint(server, {
    resourceVisible: (uri, c) => !uri.startsWith('test://secret') || admin(c),
    promptVisible: (name, c) => name !== 'secret_prompt' || admin(c),
  });
  const app = new Hono();
  app.all('/mcp', (c) => endpoint.handle(c));
  const list = async (method: string, member: string, key: string, user: string) => {
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, 'x-user': user },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method }),
    });
    const body = (await response.json()) as { result: Record<string, Record<string, string>[]> };
    return (body.result[member] ?? []).map((item) => item[key]).sort();
  };
  assert.deepEqual(await list('resources/list', 'resources', 'uri', 'someone'), ['test://open']);
  assert.deepEqual(await list('resources/list', 'resources', 'uri', 'admin'), ['test://open', 'test://secret']);
  assert.deepEqual(await list('resources/templates/list', 'resourceTemplates', 'uriTemplate', 'someone'), []);
  assert.deepEqual(await list('resources/templates/list', 'resourceTemplates', 'uriTemplate', 'admin'), [
    'test://secret/{id}',
  ]);
  assert.deepEqual(await list('prompts/list', 'prompts', 'name', 'someone'), ['open_prompt']);
  assert.deepEqual(await list('prompts/list', 'prompts', 'name', 'admin'), ['open_prompt', 'secret_prompt']);
});

test('staticToolList answers tools/list from the listing made with the endpoint, per caller filter included', async () => {
  const server = new McpServer({ name: 'static', version: '1.0.0' });
  server.registerTool('first', { inputSchema: {} }, async () => ({ content: [] }));
  const endpoint = await createStatelessMcpEndpoint(server, {
    staticToolList: true,
    toolVisible: (name, c) => name !== 'hidden' || c.req.header('x-user') === 'admin',
  });
  // Registered after the endpoint was made, before anyone listed: a static list was made at
  // start and does not see it (the documented contract).
  server.registerTool('hidden', { inputSchema: {} }, async () => ({ content: [] }));
  const app = new Hono();
  app.all('/mcp', (c) => endpoint.handle(c));
  const list = async (user = 'someone') =>
    (
      (await (
        await app.request('/mcp', {
          method: 'POST',
          headers: { ...HEADERS, 'x-user': user },
          body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/list' }),
        })
      ).json()) as { id: number; result: { tools: { name: string }[] } }
    ).result.tools.map((tool) => tool.name);
  assert.deepEqual(await list(), ['first']);
  assert.deepEqual(await list('admin'), ['first']);
  // The reply is spliced from bytes: a string id with quotes and characters of several bytes
  // comes back whole.
  const id = 'ré"quête-✓';
  const response = await app.request('/mcp', {
    method: 'POST',
    headers: HEADERS,
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/list' }),
  });
  assert.equal(response.headers.get('content-type'), 'application/json');
  const bytes = new Uint8Array(await response.arrayBuffer());
  const reply = JSON.parse(new TextDecoder().decode(bytes)) as { id: unknown; result: { tools: unknown[] } };
  assert.equal(reply.id, id);
  assert.equal(reply.result.tools.length, 1);
});

test("staticToolList on a server without tools: tools/list gets the server's own error", async () => {
  const server = new McpServer({ name: 'empty', version: '1.0.0' });
  const endpoint = await createStatelessMcpEndpoint(server, { staticToolList: true });
  const app = new Hono();
  app.all('/mcp', (c) => endpoint.handle(c));
  const response = await app.request('/mcp', {
    method: 'POST',
    headers: HEADERS,
    body: JSON.stringify({ jsonrpc: '2.0', id: 'x', method: 'tools/list' }),
  });
  assert.equal(response.status, 200);
  const reply = (await response.json()) as { id: unknown; error?: { code: number } };
  assert.equal(reply.id, 'x');
  assert.equal(reply.error?.code, -32601); // Method not found: no tool was ever registered
});

test('a cached listing keeps each caller to its own tools and echoes each request id', async () => {
  const server = new McpServer({ name: 'static', version: '1.0.0' });
  server.registerTool('open', { inputSchema: {} }, async () => ({ content: [] }));
  server.registerTool('secret', { inputSchema: {} }, async () => ({ content: [] }));
  const endpoint = await createStatelessMcpEndpoint(server, {
    staticToolList: true,
    toolVisible: (name, c) => name !== 'secret' || c.req.header('x-user') === 'admin',
  });
  const app = new Hono();
  app.all('/mcp', (c) => endpoint.handle(c));
  const list = async (user: string, id: string | number) => {
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, 'x-user': user },
      body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/list' }),
    });
    const reply = (await response.json()) as { jsonrpc: string; id: unknown; result: { tools: { name: string }[] } };
    return { jsonrpc: reply.jsonrpc, id: reply.id, tools: reply.result.tools.map((tool) => tool.name) };
  };
  // The first listing goes to the server; the later ones come from the cache, in both orders.
  assert.deepEqual(await list('someone', 1), { jsonrpc: '2.0', id: 1, tools: ['open'] });
  assert.deepEqual(await list('admin', 'a"b'), { jsonrpc: '2.0', id: 'a"b', tools: ['open', 'secret'] });
  assert.deepEqual(await list('someone', 3), { jsonrpc: '2.0', id: 3, tools: ['open'] });
  assert.deepEqual(await list('admin', 4), { jsonrpc: '2.0', id: 4, tools: ['open', 'secret'] });
});

describe('protocol errors', () => {
  type Case = [string, RequestInit, number, number | undefined];
  const cases: Case[] = [
    ['GET has no server stream', { method: 'GET', headers: { accept: 'text/event-stream' } }, 405, -32600],
    ['DELETE has no session to end', { method: 'DELETE' }, 405, -32600],
    [
      'Accept without text/event-stream',
      { method: 'POST', headers: { ...HEADERS, accept: 'application/json' }, body: JSON.stringify(call(1, 'a')) },
      406,
      -32600,
    ],
    [
      'Accept without application/json',
      { method: 'POST', headers: { ...HEADERS, accept: 'text/event-stream' }, body: JSON.stringify(call(1, 'a')) },
      406,
      -32600,
    ],
    [
      'a form body',
      { method: 'POST', headers: { ...HEADERS, 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' },
      415,
      -32600,
    ],
    // Plain JSON labelled as compressed: it must not run as if the label were not there.
    [
      'a body labelled gzip',
      { method: 'POST', headers: { ...HEADERS, 'content-encoding': 'gzip' }, body: JSON.stringify(call(1, 'a')) },
      415,
      -32600,
    ],
    [
      'a body coded twice, identity then gzip',
      {
        method: 'POST',
        headers: { ...HEADERS, 'content-encoding': 'identity, gzip' },
        body: JSON.stringify(call(1, 'a')),
      },
      415,
      -32600,
    ],
    [
      'a body labelled br',
      { method: 'POST', headers: { ...HEADERS, 'content-encoding': 'BR' }, body: JSON.stringify(call(1, 'a')) },
      415,
      -32600,
    ],
    ['malformed JSON', { method: 'POST', headers: HEADERS, body: '{"jsonrpc": "2.0", "id": 1,' }, 400, -32700],
    ['a batch', { method: 'POST', headers: HEADERS, body: JSON.stringify([call(1, 'a'), call(2, 'b')]) }, 400, -32600],
    [
      'not JSON-RPC 2.0',
      { method: 'POST', headers: HEADERS, body: JSON.stringify({ jsonrpc: '1.0', id: 1, method: 'x' }) },
      400,
      -32600,
    ],
    [
      'params that are not an object',
      {
        method: 'POST',
        headers: HEADERS,
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: 5 }),
      },
      400,
      -32600,
    ],
    // Requests the SDK's strict schema refuses: it would drop them without a reply.
    ...(
      [
        ['params that are an array', { jsonrpc: '2.0', id: 7, method: 'tools/call', params: ['get_user_expenses'] }],
        ['a member JSON-RPC does not have', { jsonrpc: '2.0', id: 7, method: 'ping', extra: 1 }],
        ['_meta that is not an object', { jsonrpc: '2.0', id: 7, method: 'ping', params: { _meta: 5 } }],
        [
          'a progress token that is an object',
          { jsonrpc: '2.0', id: 7, method: 'ping', params: { _meta: { progressToken: { a: 1 } } } },
        ],
      ] as const
    ).map(
      ([name, message]): Case => [
        name,
        { method: 'POST', headers: HEADERS, body: JSON.stringify(message) },
        400,
        -32600,
      ],
    ),
    ['a body that is JSON null', { method: 'POST', headers: HEADERS, body: 'null' }, 400, -32600],
    ['a body that is a number', { method: 'POST', headers: HEADERS, body: '5' }, 400, -32600],
    [
      'an integer id beyond 2^53 - 1 (the SDK takes safe integers only)',
      { method: 'POST', headers: HEADERS, body: JSON.stringify({ jsonrpc: '2.0', id: 2 ** 54, method: 'tools/list' }) },
      400,
      -32600,
    ],
    [
      'a null id',
      { method: 'POST', headers: HEADERS, body: JSON.stringify({ jsonrpc: '2.0', id: null, method: 'tools/list' }) },
      400,
      -32600,
    ],
    [
      'an unsupported protocol version',
      {
        method: 'POST',
        headers: { ...HEADERS, 'mcp-protocol-version': '1999-01-01' },
        body: JSON.stringify(call(1, 'a')),
      },
      400,
      -32600,
    ],
    [
      'a body over the limit',
      { method: 'POST', headers: HEADERS, body: JSON.stringify(call(1, 'x'.repeat(5000))) },
      413,
      -32600,
    ],
  ];
  for (const [name, init, status, code] of cases) {
    test(name, async () => {
      const app = await makeApp();
      const response = await app.request('/mcp', init);
      assert.equal(response.status, status);
      const body = (await response.json()) as { jsonrpc: string; id: null; error: { code: number; message: string } };
      assert.equal(body.jsonrpc, '2.0');
      assert.equal(body.id, null);
      assert.equal(body.error.code, code);
      assert.ok(body.error.message.length > 0);
      if (status === 405) assert.equal(response.headers.get('allow'), 'POST');
    });
  }

  test('a body labelled identity (any case, listed twice, or an empty label) is read as sent', async () => {
    for (const coding of ['identity', ' Identity , identity', '']) {
      const app = await makeApp();
      const response = await app.request('/mcp', {
        method: 'POST',
        headers: { ...HEADERS, 'content-encoding': coding },
        body: JSON.stringify(call(1, 'a')),
      });
      assert.equal(response.status, 200, JSON.stringify(coding));
      assert.equal(((await response.json()) as { id: unknown }).id, 1);
    }
  });

  test('an invalid message with an ordinary id is told so, not that its id is too large', async () => {
    const app = await makeApp();
    for (const message of [
      { jsonrpc: '2.0', id: 1, method: 'ping', params: 5 },
      { jsonrpc: '2.0', id: 1 },
      { jsonrpc: '1.0', id: 7, method: 'ping' },
    ]) {
      const response = await app.request('/mcp', { method: 'POST', headers: HEADERS, body: JSON.stringify(message) });
      assert.equal(response.status, 400);
      const body = (await response.json()) as { error: { code: number; message: string } };
      assert.deepEqual(body.error, { code: -32600, message: 'Invalid Request: not a JSON-RPC 2.0 message.' });
    }
  });

  test('resources/read with a uri that is not a URL: -32602, the caller’s mistake, not an internal error', async () => {
    const app = await makeApp();
    const read = async (uri: unknown) => {
      const response = await app.request('/mcp', {
        method: 'POST',
        headers: HEADERS,
        body: JSON.stringify({ jsonrpc: '2.0', id: 16, method: 'resources/read', params: { uri } }),
      });
      assert.equal(response.status, 200);
      return (await response.json()) as {
        id: number;
        result?: { contents: { text: string }[] };
        error?: { code: number; message: string };
      };
    };
    for (const uri of ['::::', 'not a uri', '']) {
      assert.deepEqual((await read(uri)).error, { code: -32602, message: 'Invalid params: uri is not a URL.' }, uri);
    }
    assert.equal((await read('test://greeting')).result?.contents[0]?.text, 'hello');
    assert.equal((await read('test://other')).error?.code, -32602, 'an unknown resource, as the SDK answers it');
  });

  test('a chunked body over the limit is cut off at the limit', async () => {
    const app = await makeApp(1024);
    let sent = 0;
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 512;
        controller.enqueue(new Uint8Array(512).fill(32));
        if (sent >= 1024 * 1024) controller.close();
      },
      cancel() {
        cancelled = true;
      },
    });
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: HEADERS,
      body: stream,
      duplex: 'half',
    } as RequestInit);
    assert.equal(response.status, 413);
    assert.ok(sent < 64 * 1024, `stopped reading early (read ${sent} bytes)`);
    assert.equal(cancelled, true, 'the 413 gives the rest up (discardBody): not read and dropped after the answer');
  });

  test('a body with a leading BOM reads the same declared or chunked', async () => {
    const app = await makeApp();
    const bytes = new Uint8Array([
      0xef,
      0xbb,
      0xbf,
      ...new TextEncoder().encode(JSON.stringify({ jsonrpc: '2.0', id: 'bom', method: 'tools/list' })),
    ]);
    const { declared, chunked } = await postDeclaredAndChunked(app, bytes, 2);
    assert.deepEqual([declared.status, chunked.status], [200, 200]);
    assert.deepEqual(await chunked.json(), await declared.json());
  });

  test('a body read before the endpoint (a scope check) is held to the limit by the bytes sent, not the text decoded', async () => {
    // Each invalid UTF-8 byte decodes to U+FFFD, three bytes: 2,000 bytes sent, 6,000 decoded.
    const body = (fill: number) =>
      new Uint8Array([
        ...new TextEncoder().encode('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"s":"'),
        ...new Uint8Array(fill).fill(0xff),
        ...new TextEncoder().encode('"}}}'),
      ]);
    const statuses: Record<string, number> = {};
    for (const readFirst of [false, true]) {
      const app = new Hono();
      if (readFirst) {
        app.use('/mcp', async (c, next) => {
          await readBodyOnce(c.req.raw, 1 << 20);
          await next();
        });
      }
      app.route('/', await makeApp(4096));
      for (const [name, fill] of Object.entries({ within: 2000, over: 4100 })) {
        const { declared, chunked } = await postDeclaredAndChunked(app, body(fill));
        statuses[`${name}, declared${readFirst ? ', read first' : ''}`] = declared.status;
        statuses[`${name}, chunked${readFirst ? ', read first' : ''}`] = chunked.status;
      }
    }
    assert.deepEqual(statuses, {
      'within, declared': 200,
      'within, chunked': 200,
      'over, declared': 413,
      'over, chunked': 413,
      'within, declared, read first': 200,
      'within, chunked, read first': 200,
      'over, declared, read first': 413,
      'over, chunked, read first': 413,
    });
  });

  test('a task-augmented request to a server that declares no tasks is answered as if plain (MCP 2025-11-25, Tasks)', async () => {
    const app = await makeApp();
    const post = async (body: unknown) =>
      (await app.request('/mcp', { method: 'POST', headers: HEADERS, body: JSON.stringify(body) })).json();
    const task = { ttl: 60_000 };
    assert.deepEqual(await post({ jsonrpc: '2.0', id: 1, method: 'ping', params: { task } }), {
      jsonrpc: '2.0',
      id: 1,
      result: {},
    });
    const called = (await post({
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'echo', arguments: { value: 'v' }, task },
    })) as { result?: { content: { text: string }[] } };
    assert.equal(called.result?.content[0]?.text, 'nobody:v', JSON.stringify(called));
    const read = (await post({
      jsonrpc: '2.0',
      id: 3,
      method: 'resources/read',
      params: { uri: 'test://greeting', task },
    })) as { result?: { contents: { text: string }[] } };
    assert.equal(read.result?.contents[0]?.text, 'hello', JSON.stringify(read));
  });

  test('Accept is read without regard to case (RFC 9110 8.3.1)', async () => {
    const app = await makeApp();
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, accept: 'Application/JSON, Text/Event-Stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
    });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { jsonrpc: '2.0', id: 1, result: {} });
  });

  test("an unknown method is a JSON-RPC error with the caller's id", async () => {
    const app = await makeApp();
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: HEADERS,
      body: JSON.stringify({ jsonrpc: '2.0', id: 'abc', method: 'no/such/method' }),
    });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      jsonrpc: '2.0',
      id: 'abc',
      error: { code: -32601, message: 'Method not found' },
    });
  });
});

describe('originGuard', () => {
  const app = new Hono();
  app.use(
    originGuard({
      allowedHosts: ['localhost', '127.0.0.1', '[::1]', 'mcp.example.com:8443'],
      allowedOrigins: ['http://localhost:6274'],
    }),
  );
  app.get('/', (c) => c.text('ok'));
  const cases: [string, Record<string, string>, number][] = [
    ['an allowed host with any port', { host: 'localhost:8000' }, 200],
    ['an IPv6 loopback host', { host: '[::1]:8000' }, 200],
    ['an allowed host and port', { host: 'mcp.example.com:8443' }, 200],
    ['an allowed host on another port', { host: 'mcp.example.com:9999' }, 403],
    ["a rebinding attacker's host", { host: 'evil.example:8000' }, 403],
    ['an allowed origin', { host: 'localhost:8000', origin: 'http://localhost:6274' }, 200],
    ['a foreign origin', { host: 'localhost:8000', origin: 'http://evil.example' }, 403],
    ['the null origin', { host: 'localhost:8000', origin: 'null' }, 403],
  ];
  for (const [name, headers, status] of cases) {
    test(name, async () => {
      const response = await app.request('http://x/', { headers });
      assert.equal(response.status, status);
      if (status === 403)
        assert.match(((await response.json()) as { error: { message: string } }).error.message, /^Forbidden/);
    });
  }

  test('an allowed origin gets CORS: its preflight answered before any credential check, its answers readable', async () => {
    const guarded = new Hono();
    guarded.use(
      '/mcp',
      originGuard({
        allowedHosts: ['localhost'],
        allowedOrigins: ['http://localhost:6274'],
        exposeHeaders: ['WWW-Authenticate', 'X-Request-Id'],
      }),
    );
    // What a credential check answers a browser's request without a token.
    guarded.all('/mcp', (c) => c.json({ error: 'invalid_token' }, 401, { 'WWW-Authenticate': 'Bearer realm="mcp"' }));
    const preflight = await guarded.request('http://localhost:8000/mcp', {
      method: 'OPTIONS',
      headers: {
        host: 'localhost:8000',
        origin: 'http://localhost:6274',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,mcp-protocol-version',
      },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), 'http://localhost:6274');
    assert.equal(preflight.headers.get('access-control-allow-methods'), 'POST');
    for (const header of ['authorization', 'x-api-key', 'content-type', 'mcp-protocol-version']) {
      assert.match(preflight.headers.get('access-control-allow-headers') ?? '', new RegExp(header, 'i'));
    }
    const refused = await guarded.request('http://localhost:8000/mcp', {
      method: 'POST',
      headers: { host: 'localhost:8000', origin: 'http://localhost:6274', 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('access-control-allow-origin'), 'http://localhost:6274');
    assert.equal(refused.headers.get('access-control-expose-headers'), 'WWW-Authenticate, X-Request-Id');
    assert.match(refused.headers.get('vary') ?? '', /Origin/);
    // A foreign origin's preflight is refused; a request without Origin gets no CORS at all.
    const foreign = await guarded.request('http://localhost:8000/mcp', {
      method: 'OPTIONS',
      headers: { host: 'localhost:8000', origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.headers.get('access-control-allow-origin'), null);
    const server = await guarded.request('http://localhost:8000/mcp', {
      method: 'POST',
      headers: { host: 'localhost:8000' },
    });
    assert.equal(server.headers.get('access-control-allow-origin'), null);
  });
});

/** The same bytes POSTed to /mcp twice: with Content-Length, and chunked (cut after `cutAt` bytes, if given). */
async function postDeclaredAndChunked(app: Hono, bytes: Uint8Array, cutAt = bytes.byteLength) {
  const declared = await app.request('/mcp', {
    method: 'POST',
    headers: { ...HEADERS, 'content-length': String(bytes.byteLength) },
    body: bytes,
  });
  const chunked = await app.request('/mcp', {
    method: 'POST',
    headers: HEADERS,
    body: new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.subarray(0, cutAt));
        if (cutAt < bytes.byteLength) controller.enqueue(bytes.subarray(cutAt));
        controller.close();
      },
    }),
    duplex: 'half',
  } as RequestInit);
  return { declared, chunked };
}

describe('exact numbers', () => {
  test('lossyNumbers names the literals a double cannot hold, and only those', () => {
    assert.deepEqual(lossyNumbers('{"a":12.340000000000000001,"b":[999999.9999999999999]}'), [
      '12.340000000000000001',
      '999999.9999999999999',
    ]);
    assert.deepEqual(lossyNumbers('{"a":9007199254740993}'), ['9007199254740993']);
    // Out of the double's range: Infinity and 0 are not what was written.
    assert.deepEqual(lossyNumbers('{"a":1e400,"b":-2E+999,"c":1.5e-400}'), ['1e400', '-2E+999', '1.5e-400']);
    assert.deepEqual(lossyNumbers('{"a":1e2,"b":2.5E-3,"c":0e0}'), []);
    // Other spellings of the same value, 15 digits or fewer, digits inside strings: all exact.
    assert.deepEqual(
      lossyNumbers('{"a":1.50,"b":15e-1,"c":-0.0,"d":0.30000000000000004,"e":"12.340000000000000001"}'),
      [],
    );
    assert.deepEqual(lossyNumbers('{"a":9007199254740992,"b":123456789012345.67}'), []);
  });

  test('with exactNumbers, a lossy argument is a tool error and the tool never runs', async () => {
    const server = new McpServer({ name: 'exact', version: '1.0.0' });
    const seen: number[] = [];
    server.registerTool('pay', { inputSchema: { amount: z.number() } }, async ({ amount }) => {
      seen.push(amount);
      return { content: [{ type: 'text', text: String(amount) }] };
    });
    const endpoint = await createStatelessMcpEndpoint(server, { exactNumbers: true });
    const app = new Hono();
    app.all('/mcp', (c) => endpoint.handle(c));
    const post = async (body: string) =>
      (await (await app.request('/mcp', { method: 'POST', headers: HEADERS, body })).json()) as {
        id: number;
        result?: { isError?: boolean; content: { text: string }[] };
        error?: { code: number };
      };
    const lossy = await post(
      '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"pay","arguments":{"amount":12.340000000000000001}}}',
    );
    assert.equal(lossy.id, 5);
    assert.equal(lossy.result?.isError, true);
    assert.match(lossy.result?.content[0]?.text ?? '', /12\.340000000000000001/);
    const exact = await post(
      '{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"pay","arguments":{"amount":12.34}}}',
    );
    assert.equal(exact.result?.content[0]?.text, '12.34');
    assert.deepEqual(seen, [12.34], 'only the exact call reached the tool');
    const otherMethod = await post('{"jsonrpc":"2.0","id":7,"method":"ping","params":{"n":12.340000000000000001}}');
    assert.equal(otherMethod.error?.code, -32602);
    // A number in `_meta`, which no tool reads, does not refuse the call.
    const withMeta = await post(
      '{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"pay","arguments":{"amount":2.5},"_meta":{"sentAt":1.00000000000000001}}}',
    );
    assert.equal(withMeta.result?.isError, undefined, JSON.stringify(withMeta));
    assert.equal(withMeta.result?.content[0]?.text, '2.5');
    // An id the reply could not name as sent: a protocol error without an id, the tool not run.
    const lossyId = await app.request('/mcp', {
      method: 'POST',
      headers: HEADERS,
      body: '{"jsonrpc":"2.0","id":12345678901234567890,"method":"tools/call","params":{"name":"pay","arguments":{"amount":3}}}',
    });
    assert.equal(lossyId.status, 400);
    const refused = (await lossyId.json()) as { id: unknown; error: { code: number; message: string } };
    assert.equal(refused.id, null);
    assert.equal(refused.error.code, -32600);
    assert.match(refused.error.message, /12345678901234567890/);
    assert.deepEqual(seen, [12.34, 2.5], 'the call with the lossy id never ran');
  });

  test('lossyRequestNumbers finds the id and the params, not _meta, however the names are spelled', () => {
    assert.deepEqual(lossyRequestNumbers('{"id":9007199254740993,"params":{"a":[1e400],"b":{"c":0.1}}}'), {
      id: '9007199254740993',
      param: '1e400',
    });
    assert.deepEqual(lossyRequestNumbers('{"id":1,"params":{"a":{"b":[2,{"c":1e-400}]}}}'), { param: '1e-400' });
    // In `_meta`, directly or nested, at the top level or as a string: not looked at.
    assert.deepEqual(
      lossyRequestNumbers('{"id":1,"params":{"_meta":{"a":1e400,"b":[1e401]},"n":"1e402"},"other":{"x":1e403}}'),
      {},
    );
    assert.deepEqual(lossyRequestNumbers('{"params":{"_meta":1e400,"n":1e401}}'), { param: '1e401' });
    // Escaped member names are the names JSON.parse reads.
    assert.deepEqual(lossyRequestNumbers('{"\\u0069d":1e400,"\\u0070arams":{"\\u005fmeta":{"a":1e401},"b":1e402}}'), {
      id: '1e400',
      param: '1e402',
    });
    // Quotes, backslashes, brackets and digits inside strings do not move the walk.
    assert.deepEqual(
      lossyRequestNumbers('{"params":{"s":"a\\"]}1e400{[\\\\","_meta":{"t":"}"},"n":[12.340000000000000001]}}'),
      { param: '12.340000000000000001' },
    );
    // Params given as an array: every number in it counts.
    assert.deepEqual(lossyRequestNumbers('{"id":"x","params":[1,1e400]}'), { param: '1e400' });
  });

  test('lossyNumbers agrees with a reviver that compares each value with its source text', () => {
    // The walk decides most literals by counting; this compares it with the slow, sure way on
    // literals around every bound it counts against (15 and 16 digits, 10^-307 and 10^308).
    const mantissas = ['0', '1', '9', '12.5', '0.1', '0.30000000000000004', '123456789012345', '1234567890123456'];
    mantissas.push('9007199254740993', '999999999999999.9', '0.000000000000001', '12.340000000000000001', '1.5', '100');
    const exponents = ['', 'e0', 'e-1', 'E+2', 'e290', 'e292', 'e293', 'e294', 'e306', 'e307', 'e308', 'e309'];
    exponents.push('e-290', 'e-305', 'e-306', 'e-307', 'e-308', 'e-309', 'e-322', 'e-324', 'e-400', 'e400');
    const literals = mantissas.flatMap((m) => exponents.flatMap((e) => [`${m}${e}`, `-${m}${e}`]));
    const text = `{"a":[${literals.join(',')}]}`;
    const expected: string[] = [];
    JSON.parse(text, (_key, value: unknown, context?: { source?: string }) => {
      if (typeof value === 'number' && context?.source !== undefined) {
        const exact = Number.isFinite(value) && exactDecimal(context.source) === exactDecimal(String(value));
        if (!exact) expected.push(context.source);
      }
      return value;
    });
    assert.ok(expected.length > 50 && expected.length < literals.length - 50, `${expected.length} lossy`);
    assert.deepEqual(lossyNumbers(text), expected);
  });

  test('a literal as long as the body allows is judged like a short one', () => {
    const zeros = '0'.repeat(200_000);
    assert.deepEqual(lossyRequestNumbers(`{"id":1,"params":{"x":1.${zeros}1}}`), { param: `1.${zeros}1` });
    assert.deepEqual(lossyRequestNumbers(`{"id":1,"params":{"x":1.${zeros},"y":-0.${zeros}e9}}`), {});
    assert.deepEqual(lossyNumbers(`[${'9'.repeat(400)}, 1${zeros}e-200000, 0.${zeros}1e200001]`), ['9'.repeat(400)]);
  });

  test('a body that only looks lossy is walked, never parsed again with a reviver', async () => {
    // One 16-digit run anywhere (here in a string) used to send the whole body through a
    // reviver: a function call for each of its values, any caller's to trigger.
    const server = new McpServer({ name: 'exact', version: '1.0.0' });
    const endpoint = await createStatelessMcpEndpoint(server, { exactNumbers: true, maxBodyBytes: 1 << 20 });
    const app = new Hono();
    app.all('/mcp', (c) => endpoint.handle(c));
    const values = Array(10_000).fill(1).join(',');
    const body = `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"values":[${values}],"note":"card 1234567890123456","sentAt":1e400}}}`;
    const parse = JSON.parse;
    let withReviver = 0;
    JSON.parse = ((text: string, reviver?: (this: unknown, key: string, value: unknown) => unknown) => {
      if (reviver) withReviver += 1;
      return parse(text, reviver);
    }) as typeof JSON.parse;
    try {
      const response = await app.request('/mcp', { method: 'POST', headers: HEADERS, body });
      assert.equal(response.status, 200);
      assert.deepEqual(((await response.json()) as { result: unknown }).result, {});
    } finally {
      JSON.parse = parse;
    }
    assert.equal(withReviver, 0);
  });
});

/**
 * A decimal literal's value written exactly (sign, significant digits, exponent as a BigInt):
 * the test's own reference, kept simple rather than fast.
 */
function exactDecimal(literal: string): string {
  const match = /^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(literal);
  assert.ok(match, literal);
  const [, sign = '', whole = '', fraction = '', exponent = '0'] = match;
  const digits = (whole + fraction).replace(/^0+/, '');
  if (digits === '') return '0';
  const significant = digits.replace(/0+$/, '');
  return `${sign}${significant}e${BigInt(exponent) - BigInt(fraction.length) + BigInt(digits.length - significant.length)}`;
}

describe('headers set by earlier middleware', () => {
  // Hono applies `c.header()` of a middleware to responses the context builds, not to a
  // `new Response()` a handler returns: the endpoint's replies must be built by the context.
  test('are on every reply: a result, a cached listing, a 202, a protocol error, a refused origin', async () => {
    const app = await makeApp();
    const tagged = new Hono();
    tagged.use(async (c, next) => {
      c.header('x-request-id', 'req-42');
      await next();
    });
    tagged.use('/mcp', originGuard({ allowedHosts: ['localhost'], allowedOrigins: [] }));
    tagged.route('/', app);
    const post = (body: string, headers: Record<string, string> = HEADERS) =>
      tagged.request('http://localhost/mcp', { method: 'POST', headers: { host: 'localhost', ...headers }, body });
    const listing = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });
    const replies = {
      result: await post(JSON.stringify(call(1, 'a'))),
      listing: await post(listing),
      cachedListing: await post(listing),
      notification: await post(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })),
      parseError: await post('{not json'),
      notAcceptable: await post('{}', { 'content-type': 'application/json', accept: 'application/json' }),
      refusedOrigin: await post(JSON.stringify(call(1, 'a')), { ...HEADERS, origin: 'https://evil.example' }),
    };
    const statuses = Object.fromEntries(Object.entries(replies).map(([name, r]) => [name, r.status]));
    assert.deepEqual(statuses, {
      result: 200,
      listing: 200,
      cachedListing: 200,
      notification: 202,
      parseError: 400,
      notAcceptable: 406,
      refusedOrigin: 403,
    });
    for (const [name, response] of Object.entries(replies)) {
      assert.equal(response.headers.get('x-request-id'), 'req-42', name);
      if (response.status !== 202) assert.match(response.headers.get('content-type') ?? '', /^application\/json/, name);
    }
  });
});
