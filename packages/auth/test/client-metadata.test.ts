import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkRegistration, isRegisteredRedirectUri } from '../src/client-metadata.ts';

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

test('client_name follows the plain-text rule: controls, hidden text and blank names are refused, naming the problem', () => {
  const register = (clientName: string) =>
    checkRegistration({ client_name: clientName, redirect_uris: ['http://127.0.0.1:3000/cb'] });
  for (const [name, problem] of [
    ['Good\u001b[2JClient', /^client_name must not contain control characters\.$/],
    ['Good\rClient', /^client_name must not contain control characters\.$/],
    ['Good\u0000Client', /^client_name must not contain control characters\.$/],
    ['Good\u0085Client', /^client_name must not contain control characters\.$/],
    ['Good\u202Eexe.txt', /^client_name must not contain bidirectional controls, invisible characters/],
    ['Good\uFE00\uFE01\uFE02', /invisible characters/],
    ['Good\u200D', /invisible characters/],
    ['\u2800', /^client_name must contain at least one visible character\.$/],
  ] as const) {
    const refused = register(name);
    assert.equal(refused?.error, 'invalid_client_metadata', JSON.stringify(name));
    assert.match(refused?.description ?? '', problem, JSON.stringify(name));
  }
  for (const name of [
    'Visual Studio Code',
    'Family \u{1F468}\u200D\u{1F469}\u200D\u{1F467}',
    'می\u200Cخواهم',
    '1\uFE0F\u20E3',
  ]) {
    assert.equal(register(name), undefined, JSON.stringify(name));
  }
});
