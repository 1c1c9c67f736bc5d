import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseBodyOnce, readBodyKeepingIt, readBodyOnce, requestWithBody } from '../src/index.ts';

test('requestWithBody answers every body method from the text and keeps the rest', async () => {
  const controller = new AbortController();
  const original = new Request('http://x/mcp?q=1', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'mcp-method': 'tools/list' },
    body: '{"a":1}',
    signal: controller.signal,
  });
  await original.text(); // consumed, as the guard leaves it
  const request = requestWithBody(original, '{"a":1}');
  assert.equal(request.url, 'http://x/mcp?q=1');
  assert.equal(request.method, 'POST');
  assert.equal(request.headers.get('mcp-method'), 'tools/list');
  assert.equal(request.bodyUsed, false);
  assert.equal(await request.text(), '{"a":1}');
  assert.deepEqual(await request.json(), { a: 1 });
  assert.equal(new TextDecoder().decode(await request.arrayBuffer()), '{"a":1}');
  assert.equal(await new Response(request.body).text(), '{"a":1}');
  assert.equal(await request.clone().text(), '{"a":1}');
  assert.equal(request.signal.aborted, false);
  controller.abort();
  assert.equal(request.signal.aborted, true, 'the original signal, not a copy');
});

test('readBodyKeepingIt: one read, a stand-in in its place, kept by a second reader', async () => {
  const original = new Request('http://x/mcp', { method: 'POST', body: '{"a":2}' });
  const req = { raw: original };
  assert.equal(await readBodyKeepingIt(req, 100), '{"a":2}');
  const standIn = req.raw;
  assert.notEqual(standIn, original);
  assert.equal(original.bodyUsed, true);
  assert.equal(await readBodyKeepingIt(req, 100), '{"a":2}');
  assert.equal(req.raw, standIn, 'not wrapped twice');
  assert.equal(await readBodyOnce(standIn, 100), '{"a":2}');
  assert.equal(await readBodyOnce(standIn, 6), undefined, 'still held to the later limit');
  assert.deepEqual(parseBodyOnce(standIn), { ok: true, value: { a: 2 } });
  assert.equal(parseBodyOnce(standIn), parseBodyOnce(original), 'one parse for both');
});

test('a chunked body abandoned past the limit is refused to every later reader, not thrown at', async () => {
  const chunks = ['{"a":', '"', 'x'.repeat(50), '"}'];
  const request = new Request('http://x/mcp', {
    method: 'POST',
    body: new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
        controller.close();
      },
    }),
    duplex: 'half',
  } as RequestInit);
  const req = { raw: request };
  assert.equal(await readBodyKeepingIt(req, 20), undefined);
  assert.equal(req.raw, request);
  assert.equal(await readBodyOnce(request, 20), undefined);
  assert.equal(await readBodyOnce(request, 1000), undefined, 'the rest was never read');
  assert.deepEqual(parseBodyOnce(request), { ok: false });
});

test('a declared length past the limit is not read: a reader with a larger limit still gets it', async () => {
  const request = new Request('http://x/mcp', {
    method: 'POST',
    headers: { 'content-length': '7' },
    body: '{"a":3}',
  });
  assert.equal(await readBodyOnce(request, 6), undefined);
  assert.equal(request.bodyUsed, false);
  assert.equal(await readBodyOnce(request, 7), '{"a":3}');
});
