import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.ts';

test('the database and readiness bounds have defaults and fail fast with the variable named', () => {
  const defaults = loadConfig({});
  assert.deepEqual(
    [
      defaults.databaseConnectTimeoutMs,
      defaults.databaseQueryTimeoutMs,
      defaults.databaseCloseTimeoutMs,
      defaults.readyTimeoutMs,
    ],
    [5_000, 5_000, 2_000, 2_000],
  );
  const set = loadConfig({
    DATABASE_CONNECT_TIMEOUT_MS: '1500',
    DATABASE_QUERY_TIMEOUT_MS: '800',
    DATABASE_CLOSE_TIMEOUT_MS: '0',
    READY_TIMEOUT_MS: '900',
  });
  assert.deepEqual(
    [set.databaseConnectTimeoutMs, set.databaseQueryTimeoutMs, set.databaseCloseTimeoutMs, set.readyTimeoutMs],
    [1_500, 800, 0, 900],
  );
  for (const [name, value, message] of [
    ['DATABASE_CONNECT_TIMEOUT_MS', '5s', /DATABASE_CONNECT_TIMEOUT_MS must be a whole number/],
    ['DATABASE_QUERY_TIMEOUT_MS', '0', /DATABASE_QUERY_TIMEOUT_MS must be between 100 and/],
    ['DATABASE_CLOSE_TIMEOUT_MS', '-1', /DATABASE_CLOSE_TIMEOUT_MS must be a whole number/],
    ['READY_TIMEOUT_MS', '999999', /READY_TIMEOUT_MS must be between 100 and 60000/],
  ] as const) {
    assert.throws(
      () => loadConfig({ [name]: value }),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, message);
        return true;
      },
    );
  }
});

test('MAX_EXPENSES_PER_USER: 10,000 unless set, a whole number of at least 1, named when wrong', () => {
  assert.equal(loadConfig({}).maxExpensesPerUser, 10_000);
  assert.equal(loadConfig({ MAX_EXPENSES_PER_USER: '250000' }).maxExpensesPerUser, 250_000);
  for (const [value, message] of [
    ['0', /MAX_EXPENSES_PER_USER must be between 1 and 100000000/],
    ['10k', /MAX_EXPENSES_PER_USER must be a whole number/],
    ['1.5', /MAX_EXPENSES_PER_USER must be a whole number/],
  ] as const) {
    assert.throws(
      () => loadConfig({ MAX_EXPENSES_PER_USER: value }),
      (error: unknown) => error instanceof ConfigError && message.test(error.message),
    );
  }
});
