import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { type Database, isDatabaseUnavailable, openDatabase } from '../src/index.ts';

describe('bounded waits on a real PostgreSQL server', () => {
  let testDb: TestDatabase;
  let db: Database;
  before(async () => {
    testDb = await createTestDatabase();
    db = await openDatabase({ url: testDb.url, maxConnections: 1, connectTimeoutMs: 300, queryTimeoutMs: 300 });
  });
  after(async () => {
    await db?.close();
    await testDb?.drop();
  });

  test('a statement longer than queryTimeoutMs is cancelled by the server, and the connection is reusable', async () => {
    const error = await db.pool.query('SELECT pg_sleep(5)').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((error as { code?: string }).code, '57014', String(error));
    assert.equal(isDatabaseUnavailable(error), true);
    assert.deepEqual((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
  });

  test('waiting for a free connection is bounded by connectTimeoutMs', async () => {
    const held = await db.pool.connect();
    try {
      const error = await db.pool.query('SELECT 1').then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.match(String(error), /timeout exceeded when trying to connect/);
      assert.equal(isDatabaseUnavailable(error), true);
    } finally {
      held.release();
    }
  });

  test('withoutTimeouts runs what may rightly take longer (migrations)', async () => {
    const rows = await db.withoutTimeouts(async (pool) => (await pool.query('SELECT pg_sleep(0.5), 1 AS one')).rows);
    assert.equal(rows[0]?.one, 1);
  });

  test('a wrong statement is not an outage', async () => {
    const error = await db.pool.query('SELECT * FROM no_such_table').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((error as { code?: string }).code, '42P01');
    assert.equal(isDatabaseUnavailable(error), false);
  });

  test('a refused connection is an outage', async () => {
    const nowhere = await openDatabase({ url: 'postgres://x:y@127.0.0.1:1/none', connectTimeoutMs: 500 });
    try {
      const error = await nowhere.pool.query('SELECT 1').then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.equal(isDatabaseUnavailable(error), true, String(error));
    } finally {
      await nowhere.close();
    }
  });
});
