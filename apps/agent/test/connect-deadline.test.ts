/**
 * The start's deadline for connecting and listing tools, on Node's mocked clock: it waits for a
 * sign-in the listing met, and gives a whole window after one.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';
import { deadlineBesideSignIns } from '../src/runtime.ts';

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
afterEach(() => mock.timers.reset());

/** Whether `promise` has settled, once the microtasks queued so far have run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(() => (done = true));
  for (let turn = 0; turn < 10; turn += 1) await Promise.resolve();
  return done;
}

test('without sign-ins it passes at its timeout, not before', async () => {
  const deadline = deadlineBesideSignIns(60_000, undefined);
  mock.timers.tick(59_999);
  assert.equal(await settled(deadline.passed), false);
  mock.timers.tick(1);
  assert.equal(await settled(deadline.passed), true);
});

test('a sign-in under way holds it; after the sign-in the work gets a whole window again', async () => {
  const signIns = { signingIn: true, signInEndedAt: undefined as number | undefined };
  const deadline = deadlineBesideSignIns(60_000, signIns);
  mock.timers.tick(60_000 + 4 * 60_000); // the person takes four minutes past it at the browser
  assert.equal(await settled(deadline.passed), false);
  signIns.signingIn = false;
  signIns.signInEndedAt = Date.now();
  mock.timers.tick(1_000); // the next check finds the sign-in over
  assert.equal(await settled(deadline.passed), false);
  mock.timers.tick(58_999);
  assert.equal(await settled(deadline.passed), false, 'within the window after the sign-in');
  mock.timers.tick(1);
  assert.equal(await settled(deadline.passed), true);
});

test('a sign-in that ended before the timeout gives the window from its end', async () => {
  const signIns = { signingIn: false, signInEndedAt: undefined as number | undefined };
  const deadline = deadlineBesideSignIns(60_000, signIns);
  mock.timers.tick(50_000);
  signIns.signInEndedAt = Date.now();
  mock.timers.tick(10_000);
  assert.equal(await settled(deadline.passed), false);
  mock.timers.tick(50_000);
  assert.equal(await settled(deadline.passed), true);
});

test('cleared, it never passes', async () => {
  const deadline = deadlineBesideSignIns(1_000, undefined);
  deadline.clear();
  mock.timers.tick(10_000);
  assert.equal(await settled(deadline.passed), false);
});
