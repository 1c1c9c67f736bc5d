import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { Hono } from 'hono';
import { z } from 'zod';
import { jsonTextTooDeep, jsonValueTooDeep } from '../src/json-depth.ts';
import { createStatelessMcpEndpoint } from '../src/stateless.ts';

/** Deeply nested bodies (issue 11, broken 5): 400 before anything recursive walks them. */
async function endpoint() {
  const server = new McpServer({ name: 't', version: '1' });
  server.registerTool('echo', { inputSchema: { value: z.unknown() } }, async ({ value }) => ({
    content: [{ type: 'text', text: typeof value }],
  }));
  const { handle } = await createStatelessMcpEndpoint(server, { exactNumbers: true });
  const app = new Hono();
  app.post('/mcp', (c) => handle(c));
  return app;
}

const post = (app: Hono, body: string) =>
  app.request('/mcp', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body,
  });

const deep = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;

describe('JSON nesting depth', () => {
  test('an exponent and an array nested 3,000 deep: 400 Invalid Request, not a 500', async () => {
    const app = await endpoint();
    const response = await post(
      app,
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"value":{"n":1e5,"a":${deep(3000)}}}}}`,
    );
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { code: number; message: string } };
    assert.equal(body.error.code, -32600);
    assert.match(body.error.message, /nested deeper than 64/);
  });

  test('ordinary nesting passes, brackets inside strings do not count', async () => {
    const app = await endpoint();
    const response = await post(
      app,
      `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"value":{"s":"${'['.repeat(500)}\\"[","a":${deep(20)}}}}}`,
    );
    assert.equal(response.status, 200, await response.text());
    assert.equal(jsonTextTooDeep(deep(64)), false);
    assert.equal(jsonTextTooDeep(deep(65)), true);
    assert.equal(jsonValueTooDeep(JSON.parse(deep(64))), false);
    assert.equal(jsonValueTooDeep(JSON.parse(deep(65))), true);
    assert.equal(jsonValueTooDeep(JSON.parse(deep(100_000))), true, 'no recursion, no stack overflow');
  });
});
