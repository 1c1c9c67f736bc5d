import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isRegisteredRedirectUri } from '../src/client-metadata.ts';

// The pass-through itself runs against real Keycloak in apps/server/test/mcp-remote.test.ts;
// this is the redirect URI rule alone.
test('a redirect URI matches exactly, or on a loopback IP literal in all but the port (RFC 8252)', () => {
  const registered = ['http://127.0.0.1:33418/callback', 'http://[::1]:40000/cb', 'http://localhost:5000/cb'];
  for (const uri of [
    'http://127.0.0.1:33418/callback',
    'http://127.0.0.1:51000/callback',
    'http://127.0.0.1/callback',
    'http://[::1]:1234/cb',
    'http://localhost:5000/cb',
  ]) {
    assert.equal(isRegisteredRedirectUri(registered, uri), true, uri);
  }
  for (const uri of [
    'http://localhost:5001/cb', // localhost is a name, not an IP literal: exact match only
    'http://127.0.0.1:51000/callback/more',
    'http://127.0.0.1:51000/callback?x=1',
    'http://127.0.0.1:51000/callback#x',
    'http://user@127.0.0.1:51000/callback',
    'https://127.0.0.1:33418/callback',
    'http://127.0.0.2:33418/callback',
    'http://[::1]:1234/callback',
    'not a url',
  ]) {
    assert.equal(isRegisteredRedirectUri(registered, uri), false, uri);
  }
});
