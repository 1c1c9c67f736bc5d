import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { fetchJson } from '../src/jwks.ts';

/**
 * fetchJson reads the identity provider's metadata and keys: at most `maxBytes`, whether the
 * size is declared or the body is chunked, so a misbehaving provider cannot make the server
 * hold an unbounded body.
 */
let server: Server;
let base: string;
/** Bytes the server managed to write before the client stopped reading. */
let written = 0;

before(async () => {
  server = createServer((request, response) => {
    if (request.url === '/small') {
      response.end(JSON.stringify({ keys: [] }));
      return;
    }
    if (request.url === '/not-json') {
      // A token left unquoted: JSON.parse's own message quotes the text around the error, token and all.
      response.end('{"token_type":"bearer","access_token":at-S3cret}');
      return;
    }
    if (request.url === '/declared') {
      const body = JSON.stringify({ pad: 'x'.repeat(5000) });
      response.writeHead(200, { 'content-length': String(Buffer.byteLength(body)) });
      response.end(body);
      return;
    }
    // Chunked, without Content-Length, and endless: 1 KB every millisecond until the client goes.
    written = 0;
    response.writeHead(200, { 'content-type': 'application/json' });
    response.write('{"pad":"');
    const timer = setInterval(() => {
      if (response.destroyed || written > 10_000_000) {
        clearInterval(timer);
        response.end();
        return;
      }
      written += 1024;
      response.write('x'.repeat(1024));
    }, 1);
    response.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

test('a document within the limit is parsed', async () => {
  assert.deepEqual(await fetchJson(`${base}/small`, 5000, 1024), { keys: [] });
});

test('an answer that is not JSON is refused without quoting it (answers hold tokens)', async () => {
  await assert.rejects(fetchJson(`${base}/not-json`, 5000, 1024), (error: Error) => {
    assert.match(error.message, /the answer is not JSON/);
    assert.doesNotMatch(error.message, /S3cret/);
    return true;
  });
});

test('a declared length past the limit is refused before the body is read', async () => {
  await assert.rejects(fetchJson(`${base}/declared`, 5000, 1024), /larger than 1024 bytes/);
});

test('a chunked body is abandoned at the limit, not read to its end', async () => {
  await assert.rejects(fetchJson(`${base}/endless`, 10_000, 16 * 1024), /larger than 16384 bytes/);
  assert.ok(written < 10_000_000, `the server stopped writing: ${written} bytes`);
});
