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
