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
    // The same place to a URL parser, another string on the consent page: exact text but the port.
    'http://127.1:51000/callback',
    'http://0x7f.0.0.1:51000/callback',
    'http://[0:0:0:0:0:0:0:1]:1234/cb',
    'http://127.0.0.1:51000/x/../callback',
    'http://127.0.0.1:51000/./callback',
    'http://127.0.0.1:51000/callback?',
    'http://127.0.0.1:51000/%63allback',
    'HTTP://127.0.0.1:51000/callback',
    // Only the port's digits may differ: a query right after the port is not a port.
    'http://127.0.0.1:1?x/callback',
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
    // A run of wide spaces breaks the name into a line of its own ("Verified publisher: …").
    [`Visual Studio Code${'\u3000'.repeat(40)}Verified publisher: Microsoft`, /a run of wide or no-break spaces/],
    [`Visual Studio Code${'\u2800'.repeat(40)}Verified publisher: Microsoft`, /a run of wide or no-break spaces/],
    ['A\u2003 \u2003B', /a run of wide or no-break spaces/],
    ['A\u00A0\u00A0B', /a run of wide or no-break spaces/],
    [`Visual Studio Code${'\u3000\u0323'.repeat(40)}Verified`, /a run of wide or no-break spaces/],
    [`Visual Studio Code${'\u3000.'.repeat(40)}Verified`, /more than 8 wide or no-break spaces/],
    ['a\u3000'.repeat(9), /more than 8 wide or no-break spaces/], // the bound: nine
    // Stacked marks are drawn over the page below the name.
    [`Visual Studio Code${'\u0323'.repeat(170)}`, /more than eight combining marks/],
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
    'Tiếng Việt',
    'Tie\u0302\u0301ng Vie\u0323\u0302t',
    'काम करो',
    '経費\u3000トラッカー', // a Japanese input method's space
    'Client\u00A0: résumé\u202F!', // French spacing
    'လျှော့', // Burmese: five marks on one letter
    'Visual  Studio   Code', // plain spaces collapse on the page
    'a\u3000'.repeat(8), // eight wide spaces, one between words, are allowed
  ]) {
    assert.equal(register(name), undefined, JSON.stringify(name));
  }
});

test('a redirect URI must show where it leads: look-alike letters, encoded dots and other spellings of a host are refused', () => {
  const register = (uri: string) => checkRegistration({ client_name: 'Client', redirect_uris: [uri] });
  for (const uri of [
    'https://vsc\u043Ede.dev/redirect', // a Cyrillic о: the browser goes to xn--vscde-lye.dev
    'https://vscode.dev%2eevil.example/cb', // the browser goes to vscode.dev.evil.example
    'https://vscode.dev\n.evil.example/cb', // the parser drops the newline
    'https://vscode.dev\t.evil.example/cb',
    'https://evil.example\\@vscode.dev/cb', // the backslash is a slash: evil.example
    'https://vscode.dev/re direct',
    'http://127.1:3000/cb', // 127.0.0.1, written otherwise
    'http://0x7f.0.0.1:3000/cb',
    'https://vscode.dev/caf\u00e9',
  ]) {
    const refused = register(uri);
    assert.equal(refused?.error, 'invalid_redirect_uri', JSON.stringify(uri));
    assert.match(refused?.description ?? '', /printable ASCII/, JSON.stringify(uri));
  }
  for (const uri of [
    'https://vscode.dev/redirect',
    'https://xn--vscde-lye.dev/redirect', // the same host in the form that shows it is not vscode.dev
    'HTTPS://VSCode.dev:443/redirect',
    'http://127.0.0.1:33418/callback',
    'http://[::1]:40000/cb',
    'http://[::1]/cb',
    'http://localhost:6274/oauth/callback',
    'http://127.0.0.1:33418',
    'https://claude.ai/api/mcp/auth_callback?x=%20y',
  ]) {
    assert.equal(register(uri), undefined, uri);
  }
});
