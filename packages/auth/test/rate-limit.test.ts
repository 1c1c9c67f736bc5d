import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { clientAddress, FixedWindowLimiter } from '../src/rate-limit.ts';

test("a window opens with its first event, not on the clock's minute, and Retry-After counts down to its end", () => {
  mock.timers.enable({ apis: ['Date'], now: 30_000 });
  try {
    const limiter = new FixedWindowLimiter(2, 60_000);
    assert.equal(limiter.allow('a'), true);
    assert.equal(limiter.allow('a'), true);
    assert.equal(limiter.allow('a'), false);
    assert.equal(limiter.retryAfterSeconds(), 60);
    assert.equal(limiter.allow('b'), true, 'each key counts on its own');
    mock.timers.tick(59_000); // 89 s: the clock's minute turned at 60 s, the window did not
    assert.equal(limiter.allow('a'), false);
    assert.equal(limiter.retryAfterSeconds(), 1);
    mock.timers.tick(1_000); // 90 s: the window has closed
    assert.equal(limiter.allow('a'), true);
    assert.equal(limiter.retryAfterSeconds(), 60);
  } finally {
    mock.timers.reset();
  }
});

/** A request as @hono/node-server hands it over: the socket's peer in `env.incoming`. */
const from = (remoteAddress: string, forwardedFor?: string) => ({
  request: new Request('http://localhost/register', {
    headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor },
  }),
  env: { incoming: { socket: { remoteAddress } } },
});

test("clientAddress: the socket's peer, unless a trusted proxy says otherwise; then the entry it appended", () => {
  const direct = from('203.0.113.7', '198.51.100.1');
  assert.equal(clientAddress(direct.request, direct.env), '203.0.113.7', "untrusted: the header is the caller's words");
  const proxied = from('10.0.0.2', '198.51.100.1, 192.0.2.44');
  assert.equal(
    clientAddress(proxied.request, proxied.env, true),
    '192.0.2.44',
    'the last entry, which the proxy wrote',
  );
  // A caller that sends its own X-Forwarded-For cannot pick its key: the proxy appends the real one.
  const forged = [1, 2, 3].map((n) => from('10.0.0.2', `198.51.100.${n}, 192.0.2.44`));
  assert.deepEqual(
    new Set(forged.map(({ request, env }) => clientAddress(request, env, true))),
    new Set(['192.0.2.44']),
  );
  const empty = from('10.0.0.2', ' ');
  assert.equal(clientAddress(empty.request, empty.env, true), '10.0.0.2', 'no entry: the peer');
});

test('clientAddress: an IPv6 caller counts by its /64, an IPv4-mapped one as its IPv4 address', () => {
  const inOneSlash64 = ['2001:db8:1:2::1', '2001:db8:1:2:ffff:0:0:9', '2001:0db8:0001:0002:0:0:0:abcd'];
  const keys = inOneSlash64.map((address) => {
    const { request, env } = from(address);
    return clientAddress(request, env);
  });
  assert.deepEqual(new Set(keys), new Set(['2001:db8:1:2::/64']));
  const next = from('2001:db8:1:3::1');
  assert.equal(clientAddress(next.request, next.env), '2001:db8:1:3::/64', 'the next /64 is another caller');
  const mapped = from('::ffff:192.0.2.9');
  assert.equal(clientAddress(mapped.request, mapped.env), '192.0.2.9');
  const forwarded = from('10.0.0.2', '2001:db8:1:2::77');
  assert.equal(clientAddress(forwarded.request, forwarded.env, true), '2001:db8:1:2::/64');
});

test('clientAddress: a forwarded entry with its port counts as its address, whatever the port', () => {
  // Some proxies (Azure Application Gateway) write the caller's source port too: each new
  // connection would otherwise be a new caller, and the limits would limit nothing.
  const keys = ['198.51.100.9:50001', '198.51.100.9:50002', '198.51.100.9'].map((entry) => {
    const { request, env } = from('10.0.0.2', `203.0.113.1, ${entry}`);
    return clientAddress(request, env, true);
  });
  assert.deepEqual(new Set(keys), new Set(['198.51.100.9']));
  const v6 = ['[2001:db8:1:2::1]:443', '[2001:db8:1:2::2]:444', '[2001:db8:1:2::3]'].map((entry) => {
    const { request, env } = from('10.0.0.2', entry);
    return clientAddress(request, env, true);
  });
  assert.deepEqual(new Set(v6), new Set(['2001:db8:1:2::/64']));
});
