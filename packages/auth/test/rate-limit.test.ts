import assert from 'node:assert/strict';
import { mock, test } from 'node:test';
import { FixedWindowLimiter } from '../src/rate-limit.ts';

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
