import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import {
  type Database,
  isDatabaseContention,
  isDatabaseFull,
  isDatabaseUnavailable,
  type Migration,
  migrate,
  openDatabase,
} from '../src/index.ts';

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
    assert.equal(isDatabaseFull(error), false);
    assert.deepEqual((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
  });

  test("PostgreSQL's disk_full is an outage and a full disk; a wrapped one too", async () => {
    const error = await db.pool
      .query(`DO $$ BEGIN RAISE EXCEPTION 'No space left on device' USING ERRCODE = 'disk_full'; END $$`)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.equal((error as { code?: string }).code, '53100', String(error));
    assert.equal(isDatabaseFull(error), true);
    assert.equal(isDatabaseUnavailable(error), true);
    assert.equal(isDatabaseFull(new Error('while adding', { cause: error })), true);
    assert.equal(isDatabaseFull(Object.assign(new Error('too many connections'), { code: '53300' })), false);
  });

  test('a serialization failure or a deadlock is contention: not an outage, not a full disk', async () => {
    for (const [errcode, code] of [
      ['serialization_failure', '40001'],
      ['deadlock_detected', '40P01'],
    ]) {
      const error = await db.pool
        .query(`DO $$ BEGIN RAISE EXCEPTION 'concurrent' USING ERRCODE = '${errcode}'; END $$`)
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      assert.equal((error as { code?: string }).code, code, String(error));
      assert.equal(isDatabaseContention(error), true);
      assert.equal(isDatabaseContention(new Error('while adding', { cause: error })), true);
      assert.equal(isDatabaseUnavailable(error), false);
      assert.equal(isDatabaseFull(error), false);
    }
    assert.equal(isDatabaseContention(Object.assign(new Error('unique'), { code: '23505' })), false);
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

  test('a migration runs past both timeouts, and its connection keeps them for requests after', async () => {
    // 1.5 s: past statement_timeout (300 ms) and the client's own read timeout (300 + 1,000 ms).
    const slow: Migration[] = [{ version: 1, name: 'slow', sql: 'SELECT pg_sleep(1.5); CREATE TABLE slow (n int)' }];
    assert.deepEqual(await migrate(db.pool, 'slow', slow), [1]);
    assert.equal(db.pool.totalCount, 1, 'the pool of one connection: the one that migrated');
    const error = await db.pool.query('SELECT pg_sleep(5)').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((error as { code?: string }).code, '57014', `the statement timeout applies again: ${error}`);
  });

  test('a wrong statement is not an outage', async () => {
    const error = await db.pool.query('SELECT * FROM no_such_table').then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal((error as { code?: string }).code, '42P01');
    assert.equal(isDatabaseUnavailable(error), false);
  });

  test('a statement cut by the server shutting down or terminating its session (restart, failover) is an outage', async () => {
    const victim = await openDatabase({ url: testDb.url, maxConnections: 1 });
    try {
      const { rows } = await victim.pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      const running = victim.pool.query('SELECT pg_sleep(5)').then(
        () => undefined,
        (e: unknown) => e,
      );
      // What `pg_ctl stop -m fast` sends each session: 57P01, admin_shutdown.
      await new Promise((resolve) => setTimeout(resolve, 200));
      await db.pool.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
      const error = await running;
      assert.equal((error as { code?: string }).code, '57P01', String(error));
      assert.equal(isDatabaseUnavailable(error), true);
    } finally {
      await victim.close();
    }
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
