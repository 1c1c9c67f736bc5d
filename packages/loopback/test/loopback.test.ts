import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  isLoopbackAddress,
  isLoopbackBindAddress,
  isLoopbackRedirectHost,
  isLoopbackUrlHost,
  LOOPBACK_URL_HOSTS,
  redirectPortMayVary,
} from '../src/loopback.ts';

/** `URL.hostname` of a URL with this host, as the predicates on URL hosts receive it. */
const hostname = (host: string) => new URL(`http://${host}:8000/`).hostname;

function check(predicate: (value: string) => boolean, yes: string[], no: string[]) {
  for (const value of yes) assert.equal(predicate(value), true, value);
  for (const value of no) assert.equal(predicate(value), false, value);
}

describe('isLoopbackBindAddress', () => {
  test('localhost, ::1 and 127.0.0.0/8; not the wildcard, not a bracketed or public address', () =>
    check(
      isLoopbackBindAddress,
      ['localhost', '::1', '127.0.0.1', '127.8.9.10'],
      ['0.0.0.0', '::', '[::1]', '10.0.0.1', '192.168.1.2', 'example.com', '127.0.0.1.example.com', '127.300.0.1'],
    ));
});

describe('isLoopbackUrlHost', () => {
  test('localhost, [::1] and 127.0.0.0/8 as URL.hostname gives them, however they were written', () =>
    check(
      isLoopbackUrlHost,
      ['localhost', 'LOCALHOST', '127.0.0.1', '127.1', '0x7f.0.0.1', '127.8.9.10', '[::1]', '[0:0:0:0:0:0:0:1]'].map(
        hostname,
      ),
      ['0.0.0.0', '[::]', 'example.com', 'localhost.example.com', '127.0.0.1.nip.io', '10.0.0.1'].map(hostname),
    ));
  test('an unbracketed ::1 is a bind address, not a URL host', () => assert.equal(isLoopbackUrlHost('::1'), false));
});

describe('isLoopbackRedirectHost', () => {
  test('the two loopback IP literals and localhost only (RFC 8252 7.3, 8.3)', () =>
    check(
      isLoopbackRedirectHost,
      ['127.0.0.1', '[::1]', 'localhost'].map(hostname),
      ['127.0.0.2', '0.0.0.0', 'example.com', 'localhost.example.com'].map(hostname),
    ));
  test('are the names of LOOPBACK_URL_HOSTS', () =>
    assert.deepEqual([...LOOPBACK_URL_HOSTS].sort(), ['127.0.0.1', '[::1]', 'localhost']));
});

describe('redirectPortMayVary', () => {
  test('only for the loopback IP literals, not for localhost', () =>
    check(redirectPortMayVary, ['127.0.0.1', '[::1]'].map(hostname), ['localhost', '127.0.0.2', 'example.com']));
});

describe('isLoopbackAddress', () => {
  test('127.0.0.0/8 and ::1 in every spelling a lookup can return; no names, no other private range', () =>
    check(
      isLoopbackAddress,
      [
        '127.0.0.1',
        '127.8.9.10',
        '::1',
        '::ffff:127.0.0.1',
        '0:0:0:0:0:0:0:1',
        '0000:0000:0000:0000:0000:0000:0000:0001',
      ],
      ['10.0.0.1', '169.254.169.254', '::', 'fe80::1', '::ffff:10.0.0.1', 'localhost', '[::1]', '128.0.0.1'],
    ));
});
