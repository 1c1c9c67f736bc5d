import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { McpServer, type RegisteredTool } from '@modelcontextprotocol/sdk/server/mcp.js';
import { UrlElicitationRequiredError } from '@modelcontextprotocol/sdk/types.js';
import { Hono } from 'hono';
import { z } from 'zod';
import { createStatelessMcpEndpoint } from '../src/index.ts';

/**
 * The same tools served twice: through the SDK's dispatch, and with `directToolCalls`. Every
 * call below must get the same reply from both; the direct path is only worth having if a
 * client cannot tell it from the SDK.
 */
async function makeApp(direct: boolean, seen: { requestIds: unknown[]; aborted: string[] }) {
  const server = new McpServer({ name: 'test', version: '1.0.0' });
  const tools = new Map<string, RegisteredTool>();
  const register = (name: string, tool: RegisteredTool) => tools.set(name, tool);
  register(
    'echo',
    server.registerTool(
      'echo',
      {
        inputSchema: { value: z.string(), times: z.number().int().min(1).default(1) },
        outputSchema: { echoed: z.string() },
      },
      async ({ value, times }, extra) => {
        seen.requestIds.push(extra.requestId);
        const who = (extra.authInfo?.extra as { user?: string } | undefined)?.user ?? 'nobody';
        const echoed = `${who}:${value.repeat(times)}`;
        return { content: [{ type: 'text', text: echoed }], structuredContent: { echoed } };
      },
    ),
  );
  register(
    'strict',
    server.registerTool('strict', { inputSchema: z.strictObject({ value: z.string() }) }, async ({ value }) => ({
      content: [{ type: 'text', text: value }],
    })),
  );
  register(
    'headers',
    server.registerTool('headers', { inputSchema: {} }, async (_args, extra) => ({
      content: [
        {
          type: 'text',
          text: Object.keys(extra.requestInfo?.headers ?? {})
            .sort()
            .join(' '),
        },
      ],
    })),
  );
  register(
    'fails',
    server.registerTool('fails', { inputSchema: {} }, async () => {
      throw new Error('the database did not answer');
    }),
  );
  register(
    'no_input',
    server.registerTool('no_input', { description: 'takes nothing' }, async (extra) => ({
      content: [{ type: 'text', text: `meta ${JSON.stringify(extra._meta ?? null)}` }],
    })),
  );
  const disabled = server.registerTool('disabled', { inputSchema: {} }, async () => ({ content: [] }));
  disabled.disable();
  register('disabled', disabled);
  register(
    'bad_result',
    // A result that is not a CallToolResult (content must be an array).
    server.registerTool('bad_result', { inputSchema: {} }, async () => ({ content: 'oops' }) as never),
  );
  register(
    'needs_url',
    server.registerTool('needs_url', { inputSchema: {} }, async () => {
      throw new UrlElicitationRequiredError([
        { mode: 'url', message: 'Sign in', url: 'https://example.com/sign-in', elicitationId: 'e1' },
      ]);
    }),
  );
  register(
    'wait_for_cancel',
    server.registerTool('wait_for_cancel', { inputSchema: { name: z.string() } }, async ({ name }, extra) => {
      await new Promise<void>((resolve) => extra.signal.addEventListener('abort', () => resolve(), { once: true }));
      seen.aborted.push(name);
      return { content: [] };
    }),
  );
  register(
    'asks_client',
    server.registerTool('asks_client', { inputSchema: {} }, async (_args, extra) => {
      await extra.sendRequest({ method: 'roots/list' }, z.object({ roots: z.array(z.unknown()) }));
      return { content: [] };
    }),
  );
  const endpoint = await createStatelessMcpEndpoint(server, {
    authInfo: (c) => ({ token: 'x', clientId: 'c', scopes: [], extra: { user: c.req.header('x-user') } }),
    credentialHeaders: ['X-Expenses-Key'],
    ...(direct ? { directToolCalls: tools, staticToolList: true } : {}),
  });
  const app = new Hono();
  app.all('/mcp', (c) => endpoint.handle(c));
  return app;
}

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'x-user': 'ann' };

const post = (app: Hono, message: unknown, signal?: AbortSignal) =>
  app.request('/mcp', { method: 'POST', headers: HEADERS, body: JSON.stringify(message), ...(signal && { signal }) });

const callOf = (id: number | string, params: Record<string, unknown>) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params,
});

const CASES: [string, Record<string, unknown>][] = [
  ['a valid call, defaults applied', { name: 'echo', arguments: { value: 'hi' } }],
  ['a valid call with every argument', { name: 'echo', arguments: { value: 'ab', times: 3 } }],
  ['arguments that fail the schema', { name: 'echo', arguments: { value: 7 } }],
  ['an argument out of range', { name: 'echo', arguments: { value: 'x', times: 0 } }],
  ['no arguments for a tool that needs some', { name: 'echo' }],
  ['arguments that are not an object', { name: 'echo', arguments: 'hi' }],
  ['a tool that throws', { name: 'fails', arguments: {} }],
  ['a strict input schema, valid', { name: 'strict', arguments: { value: 'hi' } }],
  ['a strict input schema, an argument it does not take', { name: 'strict', arguments: { value: 'hi', extra: 1 } }],
  ['a tool without an input schema, with _meta', { name: 'no_input', _meta: { progressToken: 5 } }],
  ['a disabled tool', { name: 'disabled', arguments: {} }],
  ['an unknown tool', { name: 'nope', arguments: {} }],
  ['a result that is not a CallToolResult', { name: 'bad_result', arguments: {} }],
  ['a tool that needs a URL elicitation', { name: 'needs_url', arguments: {} }],
  ['a task-augmented call', { name: 'echo', arguments: { value: 'hi' }, task: { ttl: 1000 } }],
  ['a server-to-client request from the tool', { name: 'asks_client', arguments: {} }],
  ['a name that is not a string', { name: 42, arguments: {} }],
];

describe('directToolCalls answers exactly as the SDK does', () => {
  for (const [what, params] of CASES) {
    test(what, async () => {
      const seen = { requestIds: [], aborted: [] };
      const [viaSdk, direct] = await Promise.all([makeApp(false, seen), makeApp(true, seen)]);
      const [sdkResponse, directResponse] = await Promise.all([
        post(viaSdk, callOf('req-1', params)),
        post(direct, callOf('req-1', params)),
      ]);
      assert.equal(directResponse.status, sdkResponse.status);
      assert.equal(directResponse.headers.get('content-type'), sdkResponse.headers.get('content-type'));
      assert.deepEqual(await directResponse.json(), await sdkResponse.json());
    });
  }
});

// Whole messages: the fast paths (direct calls, the listing made with the endpoint) run before
// the SDK's strict request schema, so they must refuse what it refuses.
const MESSAGES: [string, Record<string, unknown>][] = [
  [
    'a call with a member JSON-RPC does not have',
    { ...callOf('req-1', { name: 'echo', arguments: { value: 'hi' } }), extra: 1 },
  ],
  ['a call whose _meta is not an object', callOf('req-1', { name: 'echo', arguments: { value: 'hi' }, _meta: 5 })],
  // Exact as a double, so no lossy number; but the SDK takes safe integers only as ids.
  ['a call whose id is an integer above 2^53', callOf(2 ** 54, { name: 'echo', arguments: { value: 'hi' } })],
  ['a listing whose id is an integer above 2^53', { jsonrpc: '2.0', id: 2 ** 54, method: 'tools/list' }],
  ['a listing', { jsonrpc: '2.0', id: 'req-1', method: 'tools/list' }],
  ['a listing with a member JSON-RPC does not have', { jsonrpc: '2.0', id: 'req-1', method: 'tools/list', extra: 1 }],
  [
    'a listing whose _meta is not an object',
    { jsonrpc: '2.0', id: 'req-1', method: 'tools/list', params: { _meta: 5 } },
  ],
];

describe('the fast paths answer whole messages exactly as the SDK path does', () => {
  for (const [what, message] of MESSAGES) {
    test(what, async () => {
      const seen = { requestIds: [], aborted: [] };
      const [viaSdk, fast] = await Promise.all([makeApp(false, seen), makeApp(true, seen)]);
      const [sdkResponse, fastResponse] = await Promise.all([post(viaSdk, message), post(fast, message)]);
      assert.equal(fastResponse.status, sdkResponse.status);
      assert.deepEqual(await fastResponse.json(), await sdkResponse.json());
      if (what !== 'a listing') assert.equal(sdkResponse.status, 400, 'refused');
    });
  }
});

test("a tool sees the request's headers but not the caller's credentials, on both paths", async () => {
  const seen = { requestIds: [], aborted: [] };
  const credentials = {
    authorization: 'Bearer secret-token',
    'x-api-key': 'mcp_secret',
    cookie: 'session=secret',
    // A key header of another name, given in `credentialHeaders`.
    'x-expenses-key': 'mcpk_secret',
  };
  for (const app of await Promise.all([makeApp(false, seen), makeApp(true, seen)])) {
    const response = await app.request('/mcp', {
      method: 'POST',
      headers: { ...HEADERS, ...credentials },
      body: JSON.stringify(callOf(1, { name: 'headers', arguments: {} })),
    });
    const names = ((await response.json()) as { result: { content: { text: string }[] } }).result.content[0]?.text;
    assert.equal(names, 'accept content-type x-user');
  }
});

describe('the direct path', () => {
  test("runs the call itself: the tool sees the caller's own request id", async () => {
    const seen: { requestIds: unknown[]; aborted: string[] } = { requestIds: [], aborted: [] };
    const [viaSdk, direct] = await Promise.all([makeApp(false, seen), makeApp(true, seen)]);
    await post(direct, callOf('client-7', { name: 'echo', arguments: { value: 'hi' } }));
    // Through the SDK the tool sees the multiplexing transport's internal id instead.
    await post(viaSdk, callOf('client-7', { name: 'echo', arguments: { value: 'hi' } }));
    assert.equal(seen.requestIds[0], 'client-7');
    assert.equal(typeof seen.requestIds[1], 'number');
  });

  test('a client that disconnects aborts the call', async () => {
    const seen: { requestIds: unknown[]; aborted: string[] } = { requestIds: [], aborted: [] };
    const app = await makeApp(true, seen);
    const controller = new AbortController();
    const pending = Promise.resolve(
      post(app, callOf(1, { name: 'wait_for_cancel', arguments: { name: 'first' } }), controller.signal),
    ).catch(() => undefined);
    await sleep(50);
    assert.deepEqual(seen.aborted, []);
    controller.abort();
    await pending;
    await sleep(20);
    assert.deepEqual(seen.aborted, ['first']);
  });

  test('concurrent calls each get their own reply', async () => {
    const seen = { requestIds: [], aborted: [] };
    const app = await makeApp(true, seen);
    const replies = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const response = await post(app, callOf(1, { name: 'echo', arguments: { value: `v${i}` } }));
        return (await response.json()) as { id: number; result: { structuredContent: { echoed: string } } };
      }),
    );
    replies.forEach((reply, i) => {
      assert.equal(reply.id, 1);
      assert.equal(reply.result.structuredContent.echoed, `ann:v${i}`);
    });
  });
});
