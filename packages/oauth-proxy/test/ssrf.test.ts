import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  isLoopbackAddress,
  isMetadataDocumentUrl,
  isPrivateAddress,
  SafeFetchError,
  safeFetchJson,
} from '../src/index.ts';
import { type FakeDns, startFakeDns } from './fake-dns.ts';

const strict = { maxBytes: 5120, timeoutMs: 3000, allowInsecure: false };

describe('isPrivateAddress', () => {
  test('private, loopback, link-local, CGNAT, multicast and mapped addresses are private', () => {
    for (const address of [
      '127.0.0.1',
      '10.0.0.1',
      '172.16.5.4',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fd00::1',
      '::ffff:127.0.0.1',
      '::ffff:10.0.0.1',
      '::ffff:7f00:1',
      '::127.0.0.1',
      '::a9fe:a9fe',
      'fec0::1',
      '::ffff:0:7f00:1',
      '::ffff:0:10.0.0.1',
      '3fff:0fff::1',
      '5f00::1',
      '2001:2::1',
      '64:ff9b::a00:1',
      '2002:a00:1::',
      'not-an-ip',
    ]) {
      assert.equal(isPrivateAddress(address), true, address);
    }
  });

  test('public addresses are not', () => {
    for (const address of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', '::ffff:808:808']) {
      assert.equal(isPrivateAddress(address), false, address);
    }
  });
});

describe('isMetadataDocumentUrl', () => {
  test('https with a path; http only in development; no fragment or credentials', () => {
    assert.equal(isMetadataDocumentUrl('https://app.example.com/oauth/client.json', false), true);
    assert.equal(isMetadataDocumentUrl('https://app.example.com/', false), false);
    assert.equal(isMetadataDocumentUrl('http://app.example.com/c.json', false), false);
    assert.equal(isMetadataDocumentUrl('http://app.example.com/c.json', true), true);
    assert.equal(isMetadataDocumentUrl('https://app.example.com/c.json#x', false), false);
    assert.equal(isMetadataDocumentUrl('https://u:p@app.example.com/c.json', false), false);
  });
  test('the id names the host it is fetched from: a look-alike letter or an encoded dot is refused', () => {
    // The consent page shows the id as the client's identity.
    assert.equal(isMetadataDocumentUrl('https://vsc\u043Ede.dev/oauth/client.json', false), false);
    assert.equal(isMetadataDocumentUrl('https://vscode.dev%2eevil.example/client.json', false), false);
    assert.equal(isMetadataDocumentUrl('https://xn--vscde-lye.dev/oauth/client.json', false), true);
  });
  test('no . or .. path segment (CIMD draft 3), however written; a dot inside a name is fine', () => {
    for (const id of [
      'https://app.example.com/trusted-app/../evil.json',
      'https://app.example.com/a/%2E%2E/c.json',
      'https://app.example.com/a/%2e./c.json',
      'https://app.example.com/./c.json',
      'https://app.example.com/a/..',
    ]) {
      assert.equal(isMetadataDocumentUrl(id, false), false, id);
    }
    assert.equal(isMetadataDocumentUrl('https://app.example.com/a/.well-known/c..json', false), true);
  });
});

describe('safeFetchJson', () => {
  let server: Server;
  let base = '';
  before(async () => {
    server = createServer((request, response) => {
      if (request.url === '/big') {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ padding: 'x'.repeat(10_000) }));
      } else if (request.url === '/slow') {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.write('{');
      } else if (request.url === '/as-html' || request.url === '/as-text') {
        response.writeHead(200, { 'content-type': request.url === '/as-html' ? 'text/html' : 'text/plain' });
        response.end('{"client_id":"x"}');
      } else if (request.url === '/as-json-suffix') {
        response.writeHead(200, { 'content-type': 'Application/Vnd.Example+JSON; charset=utf-8' });
        response.end('{"ok":true}');
      } else if (request.url === '/redirect') {
        response.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' }).end();
      } else {
        response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=120' });
        response.end('{"ok":true}');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const refused = async (target: string, options = strict, pattern: RegExp) => {
    await assert.rejects(safeFetchJson(target, options), (error: Error) => {
      assert.ok(error instanceof SafeFetchError, String(error));
      assert.match(error.message, pattern);
      return true;
    });
  };

  test('http is refused outside development', () => refused(`${base}/doc`, strict, /only https/));
  test('a literal private address is refused before connecting', () =>
    refused('https://169.254.169.254/latest', strict, /private/));
  test('a name that resolves to loopback is refused after DNS resolution', () =>
    refused('https://localhost/client.json', strict, /resolves to a private/));
  const dev = { ...strict, allowInsecure: true };
  test('in development, loopback http works and Cache-Control is reported', async () => {
    const { body, cacheControl } = await safeFetchJson(`${base}/doc`, dev);
    assert.deepEqual(body, { ok: true });
    assert.equal(cacheControl, 'max-age=120');
  });
  test('in development too, private ranges other than loopback are refused', async () => {
    await refused('http://169.254.169.254/latest/meta-data', dev, /private/);
    await refused('http://10.0.0.8/client.json', dev, /private/);
    await refused('http://[fd00::1]/client.json', dev, /private/);
  });
  test('isLoopbackAddress: 127/8 and ::1 only', () => {
    for (const address of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) {
      assert.equal(isLoopbackAddress(address), true, address);
    }
    for (const address of ['10.0.0.1', '169.254.169.254', '::', 'fe80::1', '::ffff:10.0.0.1', 'localhost']) {
      assert.equal(isLoopbackAddress(address), false, address);
    }
  });
  test('more than the byte limit is refused', () => refused(`${base}/big`, dev, /exceeds 5120 bytes/));
  test('a document that does not arrive in time is refused', () =>
    refused(`${base}/slow`, { ...dev, timeoutMs: 200 }, /within 200 ms/));
  test('redirects are not followed', () => refused(`${base}/redirect`, dev, /redirects are not followed/));
  describe('names are resolved by asking DNS servers, not through the thread pool', () => {
    let dns: FakeDns;
    before(async () => {
      dns = await startFakeDns({
        'docs.example': { a: ['127.0.0.1'] },
        'internal.example': { a: ['10.0.0.5'] },
        'mixed.example': { a: ['93.184.216.34'], aaaa: ['fd00::1'] },
        ...Object.fromEntries(Array.from({ length: 8 }, (_, index) => [`h${index}.hang.example`, 'silent' as const])),
      });
    });
    after(() => dns.close());
    const through = (options: typeof strict) => ({ ...options, dnsServers: [dns.server] });

    test('the addresses the name server gives are the ones checked and connected to', async () => {
      const port = new URL(base).port;
      assert.deepEqual((await safeFetchJson(`http://docs.example:${port}/doc`, through(dev))).body, { ok: true });
      assert.ok(dns.questions('docs.example') > 0);
      await refused('https://internal.example/client.json', through(strict), /resolves to a private/);
      // One private address among public ones is enough to refuse.
      await refused('https://mixed.example/client.json', through(strict), /resolves to a private/);
      await refused('https://unknown.example/client.json', through(strict), /could not be reached/);
    });

    test("a name server that never answers holds no thread: the process's other lookups go on meanwhile", async () => {
      // getaddrinfo runs on Node's thread pool, at most two slow jobs at once for the whole
      // process: eight names that never resolve used to hold both for the resolver's timeout,
      // and every lookup behind them (the identity provider's, the database's) waited.
      const pending = Array.from({ length: 8 }, (_, index) => {
        const fetched = safeFetchJson(`https://h${index}.hang.example/client.json`, {
          ...through(strict),
          timeoutMs: 2000,
        });
        const state = { settled: false, fetched };
        fetched.then(
          () => (state.settled = true),
          () => (state.settled = true),
        );
        return state;
      });
      await lookup('localhost');
      assert.equal(pending.filter((fetch) => fetch.settled).length, 0, 'looked up while all eight still wait');
      for (const { fetched } of pending) {
        await assert.rejects(fetched, /no complete answer within 2000 ms/);
      }
      assert.ok(dns.questions('h0.hang.example') > 0, 'the name server was asked');
    });
  });

  test('a document served as anything but JSON is refused (CIMD: an error response)', async () => {
    await refused(`${base}/as-html`, dev, /not served as application\/json/);
    await refused(`${base}/as-text`, dev, /not served as application\/json/);
    assert.deepEqual((await safeFetchJson(`${base}/as-json-suffix`, dev)).body, { ok: true });
  });
});
