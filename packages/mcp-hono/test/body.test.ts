import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  discardBody,
  parseBodyOnce,
  readBodyKeepingIt,
  readBodyOnce,
  readBodyWithin,
  requestWithBody,
} from '../src/index.ts';

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

/** A chunked request whose body arrives in these pieces. */
function chunked(chunks: string[]): Request {
  return new Request('http://x/mcp', {
    method: 'POST',
    body: new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
        controller.close();
      },
    }),
    duplex: 'half',
  } as RequestInit);
}

test("a chunked body past a reader's limit: a later reader with a larger limit reads it whole", async () => {
  const body = `{"a":"${'x'.repeat(50)}"}`;
  const request = chunked(['{"a":', '"', 'x'.repeat(50), '"}']);
  const req = { raw: request };
  assert.equal(await readBodyKeepingIt(req, 20), undefined, 'too large for the first (tracing, say)');
  assert.equal(req.raw, request, 'no stand-in for a body not read whole');
  assert.deepEqual(parseBodyOnce(request), { ok: false });
  assert.equal(await readBodyOnce(request, 1000), body, 'the endpoint, with its larger limit');
  assert.deepEqual(parseBodyOnce(request), { ok: true, value: { a: 'x'.repeat(50) } });
  assert.equal(await readBodyOnce(request, 20), undefined, 'still held to each limit');
});

test('a chunked body of exactly the limit is read; one byte more is not', async () => {
  for (const pieces of [['x'.repeat(64)], ['x'.repeat(32), 'x'.repeat(32)]]) {
    assert.equal(await readBodyOnce(chunked(pieces), 64), 'x'.repeat(64), `${pieces.length} chunks at the limit`);
    assert.equal(await readBodyOnce(chunked([...pieces, 'y']), 64), undefined, `${pieces.length} chunks, one over`);
  }
});

test('readBodyWithin gives up an endless chunked body at its limit: the stream is cancelled', async () => {
  let cancelled = false;
  let pulled = 0;
  const request = new Request('http://x/form', {
    method: 'POST',
    body: new ReadableStream({
      pull(controller) {
        pulled += 1;
        controller.enqueue(new TextEncoder().encode('x'.repeat(64)));
      },
      cancel() {
        cancelled = true;
      },
    }),
    duplex: 'half',
  } as RequestInit);
  assert.equal(await readBodyWithin(request, 100), undefined);
  assert.equal(cancelled, true, 'the rest is not left to be read');
  assert.ok(pulled < 10, `read no further than the limit: ${pulled} pulls`);
});

test("each reader's answer depends on the body's size alone, not on how it was cut into chunks", async () => {
  const body = `{"a":"${'x'.repeat(90)}"}`;
  const cuts = [[body], body.match(/.{1,10}/gs) as string[], [...body]];
  for (const pieces of cuts) {
    const request = chunked(pieces);
    const answers = [];
    for (const limit of [20, 50, 1000, 30]) answers.push(await readBodyOnce(request, limit));
    assert.deepEqual(answers, [undefined, undefined, body, undefined], `${pieces.length} chunks`);
  }
});

test('discardBody gives up a body read only partly: the stream is cancelled, no later reader has it', async () => {
  let cancelled = false;
  const request = new Request('http://x/mcp', {
    method: 'POST',
    body: new ReadableStream({
      pull(controller) {
        controller.enqueue(new TextEncoder().encode('x'.repeat(64)));
      },
      cancel() {
        cancelled = true;
      },
    }),
    duplex: 'half',
  } as RequestInit);
  assert.equal(await readBodyOnce(request, 100), undefined, 'an endless body stops at the limit');
  await discardBody(request);
  assert.equal(cancelled, true);
  assert.equal(await readBodyOnce(request, 1 << 20), undefined);
  assert.deepEqual(parseBodyOnce(request), { ok: false });
  await discardBody(request); // twice is harmless
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
