import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findFreePort, listenForAuthorizationCode, redirectUrlFor } from '../src/auth/loopback.ts';

test('the sign-in callback page, whose URL holds the code, is kept out of caches and Referers and loads nothing', async () => {
  const port = await findFreePort();
  const pending = await listenForAuthorizationCode(port, 'the-state', 10_000);
  const refused = await fetch(`${redirectUrlFor(port)}?code=c&state=another`);
  const answered = await fetch(`${redirectUrlFor(port)}?code=the-code&state=the-state`);
  assert.equal(await pending.code, 'the-code');
  for (const [what, response] of [
    ['refused', refused],
    ['answered', answered],
  ] as const) {
    assert.equal(response.headers.get('cache-control'), 'no-store', what);
    assert.equal(response.headers.get('referrer-policy'), 'no-referrer', what);
    assert.equal(response.headers.get('content-security-policy'), "default-src 'none'", what);
  }
  assert.deepEqual([refused.status, answered.status], [400, 200]);
});
