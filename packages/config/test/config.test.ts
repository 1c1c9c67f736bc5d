import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  boolean,
  ConfigError,
  createLogger,
  directory,
  hostList,
  httpUrl,
  integer,
  list,
  listenConfigError,
  oneOf,
  optional,
  originList,
  required,
} from '../src/index.ts';

const fails = (fn: () => unknown, message: RegExp) =>
  assert.throws(fn, (error: unknown) => error instanceof ConfigError && message.test(error.message));

test('readers return values and defaults, and name the variable when a value is wrong', () => {
  assert.equal(optional({ A: '  x ' }, 'A'), 'x');
  assert.equal(optional({ A: '   ' }, 'A'), undefined);
  fails(() => required({}, 'A', 'for tests'), /^Invalid configuration: A is required for tests$/);
  assert.equal(integer({}, 'N', 5, 1, 10), 5);
  fails(() => integer({ N: '1.5' }, 'N', 5, 1, 10), /N must be a whole number/);
  fails(() => integer({ N: '11' }, 'N', 5, 1, 10), /N must be between 1 and 10, got 11/);
  assert.equal(boolean({ B: 'TRUE' }, 'B', false), true);
  fails(() => boolean({ B: 'yes' }, 'B', false), /B must be true or false/);
  assert.equal(oneOf({}, 'M', ['a', 'b'] as const, 'a'), 'a');
  fails(() => oneOf({ M: 'c' }, 'M', ['a', 'b'] as const, 'a'), /M must be one of a, b, got "c"/);
  assert.deepEqual(list({ L: ' a, ,b ' }, 'L', []), ['a', 'b']);
  assert.equal(httpUrl({ U: 'https://x.example/p/' }, 'U', undefined), 'https://x.example/p');
  fails(() => httpUrl({}, 'U', undefined, 'in mode x'), /U is required in mode x/);
  fails(() => httpUrl({ U: 'ftp://x' }, 'U', undefined), /U must be http or https/);
  fails(() => httpUrl({ U: 'http://x/?q' }, 'U', undefined), /U must not have a query/);
  fails(() => httpUrl({ U: 'not a url' }, 'U', undefined), /U must be an absolute URL, got "not a url"/);
  // Credentials in a URL: refused, and never quoted back.
  for (const value of [
    'http://svc:P4ss-SECRET@127.0.0.1:1/mcp',
    'https://SECRET@x.example/',
    'http://svc:SECRET@[x/mcp',
  ]) {
    assert.throws(
      () => httpUrl({ U: value }, 'U', undefined),
      (error: unknown) =>
        error instanceof ConfigError &&
        /^Invalid configuration: U must (not carry a user name or password|be an absolute URL)$/.test(error.message),
      value,
    );
  }
});

test('the logger writes one JSON line per event at or above its level', () => {
  const lines: string[] = [];
  const logger = createLogger('warn', (line) => lines.push(line));
  logger.info('dropped');
  logger.warn('kept', { user_id: 'u1' });
  assert.equal(lines.length, 1);
  const entry = JSON.parse(lines[0] as string) as Record<string, unknown>;
  assert.deepEqual([entry.level, entry.msg, entry.user_id], ['warn', 'kept', 'u1']);
  assert.equal(logger.enabled('info'), false);
  assert.equal(logger.enabled('error'), true);
});

test('directory() resolves a relative path against the working directory, once, where the variable is read', () => {
  assert.equal(directory({}, 'D', '.data', '/home/me/project'), '/home/me/project/.data');
  assert.equal(directory({ D: ' data/here/ ' }, 'D', '.data', '/srv'), '/srv/data/here');
  assert.equal(directory({ D: '/var/lib/x' }, 'D', '.data', '/srv'), '/var/lib/x');
  assert.equal(directory({ D: '../up' }, 'D', '.data', '/srv/app'), '/srv/up');
  assert.equal(directory({}, 'D', '.data'), join(process.cwd(), '.data'), 'the process working directory by default');
  fails(() => directory({ D: 'a\0b' }, 'D', '.data'), /D must be a path without NUL characters/);
});

test('listenConfigError names the variable behind each listen failure, and nothing else', () => {
  const failure = (code: string) => Object.assign(new Error(`listen ${code}`), { code });
  assert.match(
    String(listenConfigError(failure('EADDRINUSE'), '127.0.0.1', 8000)),
    /PORT 8000 is in use on 127\.0\.0\.1/,
  );
  assert.match(String(listenConfigError(failure('EACCES'), '0.0.0.0', 80)), /PORT 80 needs privileges/);
  assert.match(
    String(listenConfigError(failure('EADDRNOTAVAIL'), '10.9.9.9', 8000)),
    /HOST 10\.9\.9\.9 is not an address/,
  );
  assert.match(String(listenConfigError(failure('ENOTFOUND'), 'nowhere', 8000)), /HOST nowhere is not a host name/);
  assert.equal(listenConfigError(failure('EMFILE'), '127.0.0.1', 8000), undefined);
  assert.equal(listenConfigError(undefined, '127.0.0.1', 8000), undefined);
});

test('originList takes origins as browsers send them and says how to write the rest', () => {
  assert.deepEqual(originList({}, 'O', ['http://localhost:8000']), ['http://localhost:8000']);
  assert.deepEqual(
    originList({ O: 'HTTP://LocalHost:6274, https://app.example.com, chrome-extension://abcdef' }, 'O', []),
    ['http://localhost:6274', 'https://app.example.com', 'chrome-extension://abcdef'],
  );
  fails(() => originList({ O: 'https://app.example.com/' }, 'O', []), /write https:\/\/app\.example\.com$/);
  fails(() => originList({ O: 'https://app.example.com/mcp' }, 'O', []), /write https:\/\/app\.example\.com$/);
  fails(() => originList({ O: 'https://app.example.com:443' }, 'O', []), /write https:\/\/app\.example\.com$/);
  fails(() => originList({ O: 'localhost:6274' }, 'O', []), /O lists "localhost:6274", which is not an origin/);
  fails(() => originList({ O: 'app.example.com' }, 'O', []), /which is not an origin/);
  fails(() => originList({ O: 'null' }, 'O', []), /O lists "null": name each origin/);
  fails(() => originList({ O: '*' }, 'O', []), /O lists "\*": name each origin/);
  // The guard compares text: a pattern would match no request.
  for (const pattern of ['https://*.example.com', 'http://*', 'chrome-extension://*']) {
    fails(() => originList({ O: pattern }, 'O', []), /name each origin a browser may call from, in full/);
  }
  assert.throws(
    () => originList({ O: 'https://user:S3cret@app.example.com' }, 'O', []),
    (error: unknown) => error instanceof ConfigError && !error.message.includes('S3cret'),
  );
  fails(() => originList({ O: ',' }, 'O', ['http://x']), /O lists no origin/);
  // Another scheme's origin carries no user name either: no browser sends one, and it is not quoted.
  fails(
    () => originList({ O: 'chrome-extension://user:S3cret@abcdef' }, 'O', []),
    /O lists an item with a user name, which is not an origin/,
  );
});

test('hostList takes hosts as clients send them in Host and says how to write the rest', () => {
  assert.deepEqual(hostList({}, 'H', ['localhost']), ['localhost']);
  assert.deepEqual(hostList({ H: 'MCP.example.com, localhost:8000, [::1], mcp_server, example.org:80' }, 'H', []), [
    'mcp.example.com',
    'localhost:8000',
    '[::1]',
    'mcp_server',
    'example.org:80',
  ]);
  fails(() => hostList({ H: 'https://mcp.example.com/mcp' }, 'H', []), /a URL: write its host, mcp\.example\.com$/);
  fails(
    () => hostList({ H: 'mcp.example.com/mcp' }, 'H', []),
    /H lists "mcp\.example\.com\/mcp", which is not a host name/,
  );
  fails(() => hostList({ H: 'user@mcp.example.com' }, 'H', []), /which is not a host name/);
  fails(() => hostList({ H: '::1' }, 'H', []), /which is not a host name/);
  fails(() => hostList({ H: '127.1' }, 'H', []), /which clients send as 127\.0\.0\.1: write that/);
  fails(() => hostList({ H: '*' }, 'H', []), /H lists "\*": name each host in full/);
  fails(() => hostList({ H: '*.example.com' }, 'H', []), /name each host in full/);
  fails(() => hostList({ H: '*:8000' }, 'H', []), /name each host in full/);
  assert.throws(
    () => hostList({ H: 'user:S3cret@mcp.example.com' }, 'H', []),
    (error: unknown) => error instanceof ConfigError && !error.message.includes('S3cret'),
  );
  fails(() => hostList({ H: ' , ' }, 'H', ['x']), /H lists no host/);
});
