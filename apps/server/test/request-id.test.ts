import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import type { RequestIdVariables } from 'hono/request-id';
import { requestId } from '../src/request-id.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function makeApp() {
  const app = new Hono<{ Variables: RequestIdVariables }>();
  app.use(requestId());
  // A reply built by hand, one by the context, and one with its own headers.
  app.get('/raw', (c) => new Response(c.get('requestId')));
  app.get('/json', (c) => c.json({ id: c.get('requestId') }, 200, { 'x-other': '1' }));
  return app;
}

test('under @hono/node-server every reply carries the id, however it was built', async () => {
  const server = serve({ fetch: makeApp().fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as { port: number };
  try {
    const raw = await fetch(`http://127.0.0.1:${port}/raw`);
    const id = raw.headers.get('x-request-id') ?? '';
    assert.match(id, UUID);
    assert.equal(await raw.text(), id, 'the handler saw the same id');
    const json = await fetch(`http://127.0.0.1:${port}/json`, { headers: { 'x-request-id': 'trace-7=' } });
    assert.equal(json.headers.get('x-request-id'), 'trace-7=', "a caller's plain token is kept");
    assert.equal(json.headers.get('x-other'), '1');
    const refused = await fetch(`http://127.0.0.1:${port}/json`, { headers: { 'x-request-id': 'two words' } });
    assert.match(refused.headers.get('x-request-id') ?? '', UUID, 'anything else is replaced');
    const long = await fetch(`http://127.0.0.1:${port}/json`, { headers: { 'x-request-id': 'a'.repeat(256) } });
    assert.match(long.headers.get('x-request-id') ?? '', UUID, 'so is a token over 255 characters');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('without Node bindings (app.request) the id goes through c.header()', async () => {
  const response = await makeApp().request('/json');
  const id = response.headers.get('x-request-id') ?? '';
  assert.match(id, UUID);
  assert.deepEqual(await response.json(), { id });
});
