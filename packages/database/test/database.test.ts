import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase, tcpRelayTo } from '@mcp-auth-stack/testing';
import pg from 'pg';
import { pgliteOpenError } from '../src/embedded.ts';
import { filesOfAnotherUser, firstOpenError, ownerOnlyFolder } from '../src/embedded-files.ts';
import { ReplyScanner } from '../src/embedded-session.ts';
import {
  type Migration,
  migrate,
  migrateToCurrent,
  onOneConnection,
  openDatabase,
  type RestartEvent,
  redactUrl,
} from '../src/index.ts';

/** Resolves once `condition` holds, looking every 50 ms. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 50));
}

const migrations: Migration[] = [
  { version: 1, name: 'notes', sql: 'CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)' },
  { version: 2, name: 'notes.author', sql: "ALTER TABLE notes ADD COLUMN author text NOT NULL DEFAULT 'nobody'" },
];

/** A program that records every mode the path in its argument has, until SIGTERM; it prints "ready", then them as JSON. */
const WATCH_MODE = `const fs = require('node:fs');
const seen = new Set();
const look = () => { try { seen.add((fs.statSync(process.argv[1]).mode & 0o777).toString(8)); } catch {} };
const timer = setInterval(look, 1);
process.on('SIGTERM', () => { clearInterval(timer); look(); process.stdout.write(JSON.stringify([...seen])); process.exit(0); });
process.stdout.write('ready\\n');`;

describe('migrations on a real PostgreSQL server', () => {
  let testDb: TestDatabase;
  before(async () => {
    testDb = await createTestDatabase();
  });
  after(async () => {
    await testDb?.drop();
  });

  test('apply once, in order, and are recorded per namespace', async () => {
    const db = await openDatabase({ url: testDb.url });
    try {
      assert.equal(db.kind, 'postgres');
      assert.deepEqual(await migrate(db.pool, 'notes', migrations), [1, 2]);
      assert.deepEqual(await migrate(db.pool, 'notes', migrations), []);
      const { rows } = await db.pool.query(
        "SELECT version FROM schema_migrations WHERE namespace = 'notes' ORDER BY 1",
      );
      assert.deepEqual(
        rows.map((row) => row.version),
        [1, 2],
      );
      await db.pool.query("INSERT INTO notes (body) VALUES ('hi')");
      assert.equal((await db.pool.query('SELECT author FROM notes')).rows[0].author, 'nobody');
    } finally {
      await db.close();
    }
  });

  test('a migration is one query: a closing comment, a quote in its name and a namespace with a quote are safe', async () => {
    const db = await openDatabase({ url: testDb.url });
    try {
      const odd: Migration[] = [
        {
          version: 1,
          name: "the user's table",
          sql: 'CREATE TABLE quoted_notes (id int) -- no semicolon, then a comment',
        },
      ];
      assert.deepEqual(await migrate(db.pool, "o'clock", odd), [1]);
      const { rows } = await db.pool.query("SELECT name FROM schema_migrations WHERE namespace = 'o''clock'");
      assert.deepEqual(rows, [{ name: "the user's table" }]);
      assert.notEqual((await db.pool.query("SELECT to_regclass('quoted_notes') AS t")).rows[0].t, null);
    } finally {
      await db.close();
    }
  });

  test('migrateToCurrent applies what is pending on the connection it checked with, then only checks', async () => {
    const fresh = await createTestDatabase();
    const db = await openDatabase({ url: fresh.url });
    const holder = new pg.Client({ connectionString: fresh.url });
    try {
      const gauges: Migration[] = [{ version: 1, name: 'gauge', sql: 'CREATE TABLE gauge (n int)' }];
      const first = [
        { namespace: 'notes', migrations: migrations.slice(0, 1) },
        { namespace: 'gauges', migrations: gauges },
      ];
      assert.deepEqual(await migrateToCurrent(db.pool, first), ['notes', 'gauges'], 'a new database: all pending');
      assert.equal(db.pool.totalCount, 1, 'one connection checked and migrated (a new database has no table to check)');
      assert.equal(db.pool.idleCount, 1, 'and it is back in the pool, for requests');
      const later = [
        { namespace: 'notes', migrations },
        { namespace: 'gauges', migrations: gauges },
      ];
      assert.deepEqual(await migrateToCurrent(db.pool, later), ['notes'], 'notes#2 was pending');
      assert.equal(
        (await db.pool.query("SELECT count(*)::int AS n FROM information_schema.columns WHERE column_name = 'author'"))
          .rows[0].n,
        1,
      );

      // Up to date: the check alone, so another replica holding the migration lock does not hold this start.
      await holder.connect();
      await holder.query("SELECT pg_advisory_lock(hashtext('mcp-auth-stack:migrate'))");
      const outcome = await Promise.race([
        migrateToCurrent(db.pool, later),
        new Promise((resolve) => setTimeout(() => resolve('waited for the lock'), 3_000)),
      ]);
      assert.deepEqual(outcome, []);
    } finally {
      await holder.end();
      await db.close();
      await fresh.drop();
    }
  });

  test('replicas running migrateToCurrent together: one reports the namespace it migrated, the others nothing', async () => {
    const fresh = await createTestDatabase();
    const replicas = await Promise.all([1, 2, 3, 4].map(() => openDatabase({ url: fresh.url, maxConnections: 1 })));
    try {
      const sets = [{ namespace: 'together', migrations }];
      const results = await Promise.all(replicas.map((db) => migrateToCurrent(db.pool, sets)));
      assert.deepEqual(results.flat(), ['together'], JSON.stringify(results));
    } finally {
      await Promise.all(replicas.map((db) => db.close()));
      await fresh.drop();
    }
  });

  test('a connection cut while checked out (no word from the server) fails its work; the process lives on', async () => {
    // Unheard, the connection's `error` event would end this test process: pg-pool listens for
    // none while a connection is checked out (a killed backend, a reset, a failover).
    const relay = await tcpRelayTo(testDb.url);
    const pool = new pg.Pool({ connectionString: relay.url, max: 1 });
    try {
      await assert.rejects(
        onOneConnection(pool, async (client) => {
          await client.query('SELECT 1');
          const sleeping = client.query('SELECT pg_sleep(30)');
          await relay.close();
          await sleeping;
        }),
        /Connection terminated unexpectedly|ECONNRESET/,
      );
      assert.equal(pool.totalCount, 0, 'the lost connection is not pooled');
    } finally {
      await pool.end();
    }
  });

  test('a failed run closes its connection, and with it the migration lock', async () => {
    const db = await openDatabase({ url: testDb.url });
    const other = new pg.Client({ connectionString: testDb.url });
    try {
      const broken: Migration[] = [{ version: 1, name: 'bad', sql: 'SELECT no_such_function()' }];
      await assert.rejects(
        migrateToCurrent(db.pool, [{ namespace: 'broken-run', migrations: broken }]),
        /Migration broken-run#1 \(bad\) failed/,
      );
      assert.equal(db.pool.totalCount, 0, 'not returned to the pool');
      await other.connect();
      // The server ends the closed session moments later; its session lock goes with it.
      let free = false;
      for (let attempt = 0; attempt < 100 && !free; attempt++) {
        free = (await other.query("SELECT pg_try_advisory_lock(hashtext('mcp-auth-stack:migrate')) AS free")).rows[0]
          .free;
        if (!free) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(free, true, 'the lock was released');
    } finally {
      await other.end();
      await db.close();
    }
  });

  test('replicas starting together on a new database apply each migration exactly once', async () => {
    // A database of its own: nothing exists yet, not even the table that records migrations.
    const fresh = await createTestDatabase();
    const namespaced: Migration[] = [{ version: 1, name: 'counter', sql: 'CREATE TABLE counter (n int)' }];
    const other: Migration[] = [{ version: 1, name: 'gauge', sql: 'CREATE TABLE gauge (n int)' }];
    const replicas = await Promise.all(
      [1, 2, 3, 4, 5, 6].map(() => openDatabase({ url: fresh.url, maxConnections: 2 })),
    );
    try {
      // Each replica migrates two namespaces at once, as the server does with its packages.
      const results = await Promise.all(
        replicas.map((db) => Promise.all([migrate(db.pool, 'race', namespaced), migrate(db.pool, 'other', other)])),
      );
      assert.deepEqual(
        results.flatMap(([race]) => race),
        [1],
        'one replica applied it, the others found it done',
      );
      assert.deepEqual(
        results.flatMap(([, gauge]) => gauge),
        [1],
      );
    } finally {
      await Promise.all(replicas.map((db) => db.close()));
      await fresh.drop();
    }
  });

  test('a failing migration is rolled back, names itself, and is not recorded', async () => {
    const db = await openDatabase({ url: testDb.url });
    try {
      const broken: Migration[] = [
        { version: 1, name: 'good', sql: 'CREATE TABLE good (id int)' },
        { version: 2, name: 'bad', sql: 'CREATE TABLE half (id int); SELECT no_such_function()' },
      ];
      await assert.rejects(migrate(db.pool, 'broken', broken), /Migration broken#2 \(bad\) failed/);
      const recorded = await db.pool.query("SELECT version FROM schema_migrations WHERE namespace = 'broken'");
      assert.deepEqual(
        recorded.rows.map((row) => row.version),
        [1],
      );
      assert.equal((await db.pool.query("SELECT to_regclass('half') AS t")).rows[0].t, null);
    } finally {
      await db.close();
    }
  });

  test('migrations out of order are refused before touching the database', async () => {
    const db = await openDatabase({ url: testDb.url });
    try {
      await assert.rejects(migrate(db.pool, 'x', [migrations[1], migrations[0]] as Migration[]), /increasing version/);
      // Two with one version: on a database that recorded the first, the second would be skipped for good.
      const twice = [migrations[0], { ...migrations[1], version: migrations[0]?.version }] as Migration[];
      await assert.rejects(migrate(db.pool, 'x', twice), /increasing version order at 1/);
    } finally {
      await db.close();
    }
  });
});

/** A backend message: its type, then its length (which counts itself), then its body. */
const backendMessage = (type: string, body: Buffer) => {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
};
const errorResponse = (fields: Record<string, string>) =>
  backendMessage(
    'E',
    Buffer.concat([
      ...Object.entries(fields).map(([code, value]) => Buffer.from(`${code}${value}\0`)),
      Buffer.from([0]),
    ]),
  );
const dataRow = (value: string) => {
  const bytes = Buffer.from(value);
  const count = Buffer.alloc(6);
  count.writeInt16BE(1, 0);
  count.writeInt32BE(bytes.length, 2);
  return backendMessage('D', Buffer.concat([count, bytes]));
};

describe("the scanner of PGlite's replies for a PANIC or a FATAL", () => {
  const panic = errorResponse({
    S: 'PANIC',
    V: 'PANIC',
    C: '53100',
    M: 'could not write to file "pg_wal/xlogtemp.42"',
  });
  const error = errorResponse({ S: 'ERROR', V: 'ERROR', C: '23505', M: 'duplicate key' });
  const found = { severity: 'PANIC', message: 'could not write to file "pg_wal/xlogtemp.42"' };

  test("finds a PANIC's message in an error response, whole or in chunks of any size", () => {
    const reply = Buffer.concat([dataRow('a row'), panic, backendMessage('Z', Buffer.from('I'))]);
    assert.deepEqual(new ReplyScanner().scan(reply), found);
    for (const size of [1, 2, 5, 7, 64]) {
      const scanner = new ReplyScanner();
      const seen: unknown[] = [];
      for (let offset = 0; offset < reply.length; offset += size) {
        const severe = scanner.scan(reply.subarray(offset, offset + size));
        if (severe) seen.push(severe);
      }
      assert.deepEqual(seen, [found], `chunks of ${size}`);
    }
  });

  test('a FATAL is found too; an error that is neither, and rows that hold their bytes, are not', () => {
    const scanner = new ReplyScanner();
    assert.equal(scanner.scan(error), undefined);
    // A stored value that spells the severity field, with the NUL that ends it.
    assert.equal(scanner.scan(dataRow('VPANIC\0MPANIC\0\0')), undefined);
    assert.equal(scanner.scan(dataRow('VFATAL\0MFATAL\0\0')), undefined);
    assert.deepEqual(scanner.scan(errorResponse({ S: 'FATAL', V: 'FATAL', M: 'VPANIC' })), {
      severity: 'FATAL',
      message: 'VPANIC',
    });
    // A localised severity alone (S) is not read: V is PostgreSQL's own word.
    assert.deepEqual(scanner.scan(errorResponse({ S: 'PANIK', V: 'PANIC', M: 'm' })), {
      severity: 'PANIC',
      message: 'm',
    });
    assert.equal(scanner.scan(errorResponse({ S: 'FATAL', V: 'ERROR', M: 'm' })), undefined);
  });
});

describe('the embedded database (PGlite behind a Unix socket)', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mcp-db-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('persists across restarts, through the same pg code path', async () => {
    const first = await openDatabase({ dataDir: dir });
    assert.equal(first.kind, 'embedded');
    await migrate(first.pool, 'notes', migrations);
    await first.pool.query("INSERT INTO notes (body, author) VALUES ('kept', 'me')");
    await first.close();

    const second = await openDatabase({ dataDir: dir });
    try {
      assert.deepEqual(await migrate(second.pool, 'notes', migrations), []);
      const { rows } = await second.pool.query('SELECT body, author FROM notes');
      assert.deepEqual(rows, [{ body: 'kept', author: 'me' }]);
    } finally {
      await second.close();
    }
  });

  test("a row that holds an error response's PANIC bytes does not restart the database", async () => {
    const restarts: unknown[] = [];
    const db = await openDatabase({ dataDir: dir, embedded: { onRestart: (event) => restarts.push(event) } });
    try {
      // In a row, a value is followed by the next one's length, whose first byte is 0: the
      // reply holds `VPANIC`, NUL, `M…`, the very bytes of an error response's fields.
      const { rows } = await db.pool.query("SELECT 'VPANIC' AS severity, 'MPANIC' AS message, $1::text AS end", ['']);
      assert.deepEqual(rows, [{ severity: 'VPANIC', message: 'MPANIC', end: '' }]);
      assert.deepEqual((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      assert.deepEqual(restarts, []);
    } finally {
      await db.close();
    }
  });

  test('a statement past the limit ends by a restart, but not a migration, which may rightly take long', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-limit-'));
    const restarts: RestartEvent[] = [];
    // The limit is three times the query timeout: 1 s.
    const db = await openDatabase({
      dataDir: folder,
      queryTimeoutMs: 300,
      embedded: { onRestart: (event) => restarts.push(event) },
    });
    try {
      // The migration counts its own table: a count of 4,000,000 rows outside it is a statement
      // that can itself pass the limit on a loaded machine (a run saw it restarted).
      const slow = [
        {
          version: 1,
          name: 'big',
          sql: 'CREATE TABLE big AS SELECT g FROM generate_series(1, 4000000) g; CREATE TABLE big_rows AS SELECT count(*)::int AS n FROM big',
        },
      ];
      assert.deepEqual(await migrate(db.pool, 'slow', slow), [1]);
      assert.equal(restarts.length, 0, JSON.stringify(restarts));
      assert.deepEqual((await db.pool.query('SELECT n FROM big_rows')).rows, [{ n: 4_000_000 }]);

      // A loop, not a generate_series: that spills its rows to temporary files while it runs.
      await assert.rejects(db.pool.query('DO $$ BEGIN LOOP END LOOP; END $$'));
      assert.deepEqual(restarts[0], { type: 'restarting', reason: 'a statement ran for more than 1000 ms' });
      await until(() => restarts.some((event) => event.type === 'restarted'));
      assert.deepEqual((await db.pool.query('SELECT n FROM big_rows')).rows, [{ n: 4_000_000 }]);
      assert.deepEqual((await db.pool.query('SELECT EXISTS (SELECT FROM big) AS kept')).rows, [{ kept: true }]);
    } finally {
      await db.close();
      await rm(folder, { recursive: true, force: true });
    }
  });

  test('a session broken without a PANIC (no ReadyForQuery after a stack overflow in SQL) is opened again', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-broken-'));
    const restarts: RestartEvent[] = [];
    const db = await openDatabase({ dataDir: folder, embedded: { onRestart: (event) => restarts.push(event) } });
    try {
      await db.pool.query(
        'CREATE FUNCTION deep(n int) RETURNS int AS $$ SELECT CASE WHEN n = 0 THEN 0 ELSE deep(n - 1) + 1 END $$ LANGUAGE sql',
      );
      // PGlite sends a row description and then nothing, to this and every later statement.
      await assert.rejects(db.pool.query('SELECT deep(10000)'));
      assert.deepEqual(restarts[0], {
        type: 'restarting',
        reason: "PGlite's reply to a Q message did not end with ReadyForQuery",
      });
      await until(() => restarts.some((event) => event.type === 'restarted'));
      assert.deepEqual((await db.pool.query('SELECT deep(3) AS n')).rows, [{ n: 3 }]);
    } finally {
      await db.close();
      await rm(folder, { recursive: true, force: true });
    }
  });

  test("one owner: a second server is refused, a tool joins the owner's socket", async () => {
    const owner = await openDatabase({ dataDir: dir, embedded: { mustOwn: true } });
    try {
      await assert.rejects(
        openDatabase({ dataDir: dir, embedded: { mustOwn: true, waitForLockMs: 300 } }),
        /is in use by process \d+/,
      );
      const tool = await openDatabase({ dataDir: dir });
      try {
        assert.match(tool.location, /shared with a running process/);
        await tool.pool.query("INSERT INTO notes (body) VALUES ('from the tool')");
      } finally {
        await tool.close();
      }
      // The owner still works after the tool left, and sees the tool's write.
      const { rows } = await owner.pool.query("SELECT count(*)::int AS n FROM notes WHERE body = 'from the tool'");
      assert.equal(rows[0].n, 1);
    } finally {
      await owner.close();
    }
  });

  test('a tool that owns the files serves nobody: another tool waits for it, not cut off when it ends', async () => {
    // Two `pnpm keys` at once with no server running: the first owns the files.
    const first = await openDatabase({ dataDir: dir });
    assert.doesNotMatch(first.location, /shared/);
    let secondOpened = false;
    const second = openDatabase({ dataDir: dir, embedded: { waitForLockMs: 20_000 } }).then((db) => {
      secondOpened = true;
      return db;
    });
    try {
      await first.pool.query('CREATE TABLE IF NOT EXISTS tool_notes (body text)');
      await first.pool.query("INSERT INTO tool_notes (body) VALUES ('first tool')");
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(secondOpened, false, 'the second waits for the lock instead of joining the first');
    } finally {
      await first.close();
    }
    const db = await second;
    try {
      assert.doesNotMatch(db.location, /shared/, 'it owns the files now');
      await db.pool.query("INSERT INTO tool_notes (body) VALUES ('second tool')");
      const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM tool_notes');
      assert.equal(rows[0].n, 2);
    } finally {
      await db.close();
    }
  });

  test('the owner and a tool that joined it migrate a new namespace at once: each migration runs once', async () => {
    // Their connections share PGlite's one session, where the advisory lock stops nobody.
    const owner = await openDatabase({ dataDir: dir, embedded: { mustOwn: true } });
    try {
      const tool = await openDatabase({ dataDir: dir });
      try {
        const shared: Migration[] = [
          { version: 1, name: 'tags', sql: 'CREATE TABLE tags (name text PRIMARY KEY)' },
          { version: 2, name: 'tags.color', sql: 'ALTER TABLE tags ADD COLUMN color text' },
          { version: 3, name: 'tags.seed', sql: "INSERT INTO tags (name) VALUES ('first')" },
        ];
        const [byOwner, byTool] = await Promise.all([
          migrate(owner.pool, 'tags', shared),
          migrate(tool.pool, 'tags', shared),
        ]);
        assert.deepEqual([...byOwner, ...byTool].sort(), [1, 2, 3], 'each applied by one of them');
        const { rows } = await owner.pool.query("SELECT version FROM schema_migrations WHERE namespace = 'tags'");
        assert.deepEqual(rows.map((row) => row.version).sort(), [1, 2, 3]);
        const seeded = await owner.pool.query('SELECT count(*)::int AS n FROM tags');
        assert.equal(seeded.rows[0].n, 1, 'the seed ran once');
      } finally {
        await tool.close();
      }
    } finally {
      await owner.close();
    }
  });

  test('a data directory PGlite cannot open is named in an error that says what it needs', async () => {
    const broken = await mkdtemp(join(tmpdir(), 'mcp-db-broken-'));
    try {
      await writeFile(join(broken, 'pgdata'), 'not a database');
      // Not a folder: said so, not Node's EEXIST from the folder made before PGlite starts (nor,
      // as once, PGlite's `{ name: 'ErrnoError', errno }` with a message of `undefined`).
      await assert.rejects(openDatabase({ dataDir: broken, embedded: { mustOwn: true } }), (error: Error) => {
        assert.match(
          error.message,
          /^PGlite could not open .*pgdata: it is a file, not a folder; it must be a database directory/,
        );
        return true;
      });
    } finally {
      await rm(broken, { recursive: true, force: true });
    }
  });

  test("another user's database folder is refused, its mode untouched", async () => {
    // Root's chmod succeeds on anyone's folder: one `sudo pnpm keys create` on a user's DATA_DIR
    // wrote files that user's server could then not open.
    const me = process.getuid?.() as number;
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-foreign-'));
    try {
      // Root makes a folder of nobody's; anyone else meets one of root's.
      const foreign = me === 0 ? join(folder, 'pgdata') : '/usr/share';
      if (me === 0) {
        await mkdir(foreign, { mode: 0o755 });
        await chown(foreign, 65534, 65534);
      }
      const modeBefore = (await stat(foreign)).mode;
      await assert.rejects(ownerOnlyFolder(foreign), (error: Error) => {
        assert.match(
          error.message,
          new RegExp(`belongs to another user \\(uid \\d+; this process runs as uid ${me}\\)`),
        );
        return true;
      });
      assert.equal((await stat(foreign)).mode, modeBefore, 'its mode was not changed');
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  test("root on another user's DATA_DIR writes nothing there: not the lock, not pgdata", {
    skip: process.getuid?.() !== 0 && 'only root can give a folder to another user',
  }, async () => {
    const base = await mkdtemp(join(tmpdir(), 'mcp-db-foreign-dir-'));
    try {
      // A user's fresh DATA_DIR (no database yet), and one whose pgdata is that user's.
      const fresh = join(base, 'fresh');
      const made = join(base, 'made');
      for (const folder of [fresh, made, join(made, 'pgdata')]) {
        await mkdir(folder, { mode: 0o700 });
        await chown(folder, 65534, 65534);
      }
      for (const dataDir of [fresh, made]) {
        const before = await readdir(dataDir);
        // One opened by mistake is closed, so the test fails at once instead of hanging on it.
        const opening = (options: Parameters<typeof openDatabase>[0]) => openDatabase(options).then((db) => db.close());
        await assert.rejects(
          opening({ dataDir, embedded: { mustOwn: true } }),
          /belongs to another user \(uid 65534; this process runs as uid 0\)/,
        );
        await assert.rejects(opening({ dataDir }), /belongs to another user/, 'a tool (pnpm keys) too');
        assert.deepEqual(await readdir(dataDir), before, `nothing written in ${dataDir}`);
      }
      assert.deepEqual(await readdir(join(made, 'pgdata')), []);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  test('a DATA_DIR of another user that everyone may write (a shared scratch folder) is still allowed', {
    skip: process.getuid?.() !== 0 && 'only root can give a folder to another user',
  }, async () => {
    const base = await mkdtemp(join(tmpdir(), 'mcp-db-shared-dir-'));
    try {
      const shared = join(base, 'shared');
      await mkdir(shared);
      await chown(shared, 65534, 65534);
      await chmod(shared, 0o1777);
      const db = await openDatabase({ dataDir: shared, embedded: { mustOwn: true } });
      try {
        assert.equal((await db.pool.query('SELECT 1 AS one')).rows[0]?.one, 1);
      } finally {
        await db.close();
      }
      assert.equal((await stat(join(shared, 'pgdata'))).uid, 0, "pgdata is this user's own");
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  test('a first open that fails says what to do: chown for files of another user, never "move it away" for a database', async () => {
    const me = process.getuid?.() as number;
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-first-open-'));
    try {
      const db = await openDatabase({ dataDir: folder, embedded: { mustOwn: true } });
      await db.close();
      const pgdata = join(folder, 'pgdata');
      const aborted = new Error('Aborted()');
      assert.equal(await filesOfAnotherUser(pgdata), undefined, 'all mine');
      // As its owner would see the files root left (the uid stands for the other user's).
      const foreign = await filesOfAnotherUser(pgdata, me + 1);
      assert.ok(foreign && foreign.count > 100 && foreign.owner === me, JSON.stringify(foreign));
      const asOwner = (await firstOpenError(pgdata, aborted, me + 1)).message;
      assert.match(asOwner, new RegExp(`files belong to another user \\(uid ${me}; `));
      assert.match(asOwner, /The data is there: give the files back with `chown -R \S+ \S+pgdata`/);
      assert.doesNotMatch(asOwner, /move it away/);
      // A database of this user's that PGlite cannot open: its words, no advice that loses data.
      assert.equal((await firstOpenError(pgdata, aborted)).message, `PGlite could not open ${pgdata}: Aborted().`);
      // A folder that is no database: move it away.
      const stray = join(folder, 'stray');
      await mkdir(stray);
      await writeFile(join(stray, 'notes.txt'), 'mine');
      assert.match((await firstOpenError(stray, aborted)).message, /no PG_VERSION\): move it away/);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  test("PGlite's errno numbers a person can act on are said in words (a full disk was 'must be a database directory')", () => {
    // The shape PGlite throws (above), with WASI's numbers: 51 is what a full tmpfs gave.
    const full = pgliteOpenError('/data/pgdata', { name: 'ErrnoError', errno: 51 });
    assert.equal(full.message, 'PGlite could not open /data/pgdata: no space left on the device (ENOSPC).');
    assert.match(pgliteOpenError('/d', { name: 'ErrnoError', errno: 69 }).message, /read-only \(EROFS\)/);
    assert.match(pgliteOpenError('/d', { name: 'ErrnoError', errno: 2 }).message, /permission denied/);
    assert.match(pgliteOpenError('/d', { name: 'ErrnoError', errno: 44 }).message, /it must be a database directory/);
  });

  test('the database files are kept from other local users, even in a DATA_DIR made 0755 before', async () => {
    // PGlite writes its files 0666 whatever the umask; the WAL holds every row written.
    const shared = await mkdtemp(join(tmpdir(), 'mcp-db-mode-'));
    try {
      await chmod(shared, 0o755);
      // Another process watches pgdata's mode while it is made (this one is busy making it):
      // a file opened while its folder was open stays open after a later chmod.
      const watcher = spawn(process.execPath, ['-e', WATCH_MODE, join(shared, 'pgdata')], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let watched = '';
      watcher.stdout.on('data', (chunk) => (watched += chunk));
      await new Promise<void>((resolve) => watcher.stdout.once('data', () => resolve()));
      const db = await openDatabase({ dataDir: shared, embedded: { mustOwn: true } });
      await db.close();
      const exited = new Promise((resolve) => watcher.once('exit', resolve));
      watcher.kill('SIGTERM');
      await exited;
      const modesSeen = JSON.parse(watched.slice(watched.indexOf('\n') + 1)) as string[];
      assert.deepEqual(modesSeen, ['700'], "every mode pgdata had: its owner's alone from the first moment");
      assert.equal(
        (await stat(shared)).mode & 0o777,
        0o755,
        'DATA_DIR itself, which may hold other things, is left as it was',
      );
    } finally {
      await rm(shared, { recursive: true, force: true });
    }
  });

  test('a first start killed while PGlite makes the database (kill -9, a closed lid): the next start opens it', async () => {
    // PGlite writes PG_VERSION before it has unpacked the rest of a new database, and took such
    // a folder for a finished one: every later start failed until it was removed by hand.
    const index = join(import.meta.dirname, '../src/index.ts');
    for (let round = 0; round < 4; round++) {
      const folder = await mkdtemp(join(tmpdir(), 'mcp-db-first-kill-'));
      try {
        const opening = spawn(
          process.execPath,
          ['-e', `import(${JSON.stringify(index)}).then((m) => m.openDatabase({ dataDir: process.argv[1] }))`, folder],
          { stdio: 'ignore' },
        );
        const exited = new Promise((resolve) => opening.once('exit', resolve));
        const made = [join(folder, 'pgdata', 'PG_VERSION'), join(folder, 'pgdata.partial', 'PG_VERSION')];
        while (!made.some((file) => existsSync(file)) && opening.exitCode === null) {
          await new Promise((resolve) => setImmediate(resolve));
        }
        opening.kill('SIGKILL');
        await exited;
        const db = await openDatabase({ dataDir: folder, embedded: { mustOwn: true } });
        try {
          assert.deepEqual((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }], `round ${round}`);
        } finally {
          await db.close();
        }
      } finally {
        await rm(folder, { recursive: true, force: true });
      }
    }
  });

  test("a tool killed while it owned the files: the next owner removes its socket, and a tool joins the server's", async () => {
    const index = join(import.meta.dirname, '../src/index.ts');
    const tool = spawn(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(index)}).then(async (m) => { await m.openDatabase({ dataDir: process.argv[1] }); console.log('open'); })`,
        dir,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise((resolve) => tool.once('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      tool.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('open') && resolve());
      tool.once('exit', (code) => reject(new Error(`the tool exited (${code}) before it opened the database`)));
    });
    const toolSocket = `.s.PGSQL.${10_000 + ((tool.pid ?? 0) % 50_000)}`;
    assert.ok((await readdir(dir)).includes(toolSocket), 'the tool serves its own socket');
    tool.kill('SIGKILL');
    await exited;
    assert.ok((await readdir(dir)).includes(toolSocket), 'a killed tool leaves its socket');
    // A socket something answers on (a PostgreSQL server sharing the folder) is not the tool's.
    const live = createNetServer();
    await new Promise<void>((resolve) => live.listen(join(dir, '.s.PGSQL.6543'), resolve));

    const server = await openDatabase({ dataDir: dir, embedded: { mustOwn: true } }).catch(async (error: unknown) => {
      await new Promise((resolve) => live.close(resolve));
      throw error;
    });
    try {
      const sockets = (await readdir(dir)).filter((name) => name.startsWith('.s.PGSQL.')).sort();
      assert.deepEqual(
        sockets,
        ['.s.PGSQL.5432', '.s.PGSQL.6543'],
        "the dead tool's socket is gone, the live one kept",
      );
      const joined = await openDatabase({ dataDir: dir });
      try {
        assert.deepEqual((await joined.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      } finally {
        await joined.close();
      }
    } finally {
      await server.close();
      await new Promise((resolve) => live.close(resolve));
    }
  });

  test('another program answering on the server socket (DATA_DIR shared with PostgreSQL): refused, its socket kept', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-shared-'));
    const other = createNetServer();
    await new Promise<void>((resolve) => other.listen(join(folder, '.s.PGSQL.5432'), resolve));
    try {
      const outcome = await openDatabase({ dataDir: folder, embedded: { mustOwn: true } }).catch(
        (error: Error) => error,
      );
      // Opened after all: closed, so that the failure below ends the test instead of holding it.
      if (!(outcome instanceof Error)) await outcome.close();
      assert.match(String(outcome), /Another program answers on .*\.s\.PGSQL\.5432.*Give DATA_DIR a folder of its own/);
      assert.ok((await readdir(folder)).includes('.s.PGSQL.5432'), 'the other program keeps its socket');
    } finally {
      await new Promise((resolve) => other.close(resolve));
      await rm(folder, { recursive: true, force: true });
    }
  });

  test('a lock left by a dead process is taken over', async () => {
    await writeFile(join(dir, 'embedded.lock'), '2147483646');
    const db = await openDatabase({ dataDir: dir, embedded: { mustOwn: true, waitForLockMs: 0 } });
    await db.close();
  });

  test('a relative data directory is found from the working directory, not looked up as a host name', async () => {
    // `pg` takes a host that does not start with "/" for a host name: `.data` used to end in
    // `getaddrinfo ENOTFOUND .data`, the README's default failing on its first command.
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const db = await openDatabase({ dataDir: 'relative/.data' });
      try {
        assert.equal((await db.pool.query('SELECT 1 AS one')).rows[0].one, 1);
        assert.match(db.location, new RegExp(`^${join(dir, 'relative/.data')} `), 'reported as an absolute path');
      } finally {
        await db.close();
      }
    } finally {
      process.chdir(cwd);
    }
  });

  test('a socket path too long for Unix sockets is refused with a clear message, before the folder is made', async () => {
    const tooLong = join(dir, 'x'.repeat(120));
    await assert.rejects(openDatabase({ dataDir: tooLong }), /longer than 107 bytes; choose a shorter DATA_DIR/);
    assert.equal(existsSync(tooLong), false, 'the refused folder was made');
  });

  test("a DATA_DIR where only the server's socket name fits: a tool joins the server, and without one says why not", async () => {
    // `.s.PGSQL.5432` fits, a tool's own `.s.PGSQL.<5 digits>` is one byte too long.
    const base = await mkdtemp(join(tmpdir(), 'mcp-db-'));
    const folder = join(base, 'd'.repeat(107 - Buffer.byteLength(join(base, 'd/.s.PGSQL.5432')) + 1));
    assert.equal(Buffer.byteLength(join(folder, '.s.PGSQL.5432')), 107);
    try {
      const server = await openDatabase({ dataDir: folder, embedded: { mustOwn: true } });
      try {
        const tool = await openDatabase({ dataDir: folder });
        try {
          assert.equal((await tool.pool.query('SELECT 1 AS one')).rows[0].one, 1, 'the tool joined');
        } finally {
          await tool.close();
        }
      } finally {
        await server.close();
      }
      await assert.rejects(openDatabase({ dataDir: folder }), /\.s\.PGSQL\.\d{5} is longer than 107 bytes/);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  test('a DATA_DIR that is a file is named as one', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, '');
    await assert.rejects(openDatabase({ dataDir: file }), /^Error: DATA_DIR .*a-file is a file, not a folder/);
    await assert.rejects(openDatabase({ dataDir: join(file, 'below') }), /is a file, not a folder/);
  });
});

test('redactUrl hides the password', () => {
  assert.equal(redactUrl('postgres://u:secret@h:5432/db'), 'postgres://u:***@h:5432/db');
  assert.equal(redactUrl('not a url'), '(unparseable database URL)');
});

test('redactUrl hides secrets pg reads from the query string and keeps the rest readable', () => {
  assert.equal(
    redactUrl('postgres://app@db.example:5432/expenses?password=hunter2&sslmode=require'),
    'postgres://app@db.example:5432/expenses?password=***&sslmode=require',
  );
  const shown = redactUrl(
    'postgres://u:inline@h/db?sslmode=verify-full&sslpassword=keypass&sslkey=%2Fsecrets%2Fclient.key&PASSWORD=upper&application_name=api&password=one&password=two',
  );
  for (const secret of ['inline', 'keypass', 'client.key', 'upper', 'one', 'two']) {
    assert.doesNotMatch(shown, new RegExp(secret), shown);
  }
  assert.equal(
    shown,
    'postgres://u:***@h/db?sslmode=verify-full&sslpassword=***&sslkey=***&PASSWORD=***&application_name=api&password=***&password=***',
  );
  // A name spelled with percent-escapes is still recognised once decoded, as pg decodes it.
  assert.doesNotMatch(redactUrl('postgres://h/db?pass%77ord=escaped'), /escaped/);
});

test('ownerOnlyFolder takes an existing folder of its owner made 0755 (an older version) back to 0700', async () => {
  const parent = await mkdtemp(join(tmpdir(), 'mcp-db-owner-'));
  try {
    const pgdata = join(parent, 'pgdata');
    await mkdir(pgdata, { mode: 0o755 });
    await chmod(pgdata, 0o755);
    await writeFile(join(pgdata, 'PG_VERSION'), '17\n');
    assert.equal(await ownerOnlyFolder(pgdata), pgdata);
    assert.equal((await stat(pgdata)).mode & 0o777, 0o700, 'other local users are kept out of the files there');
  } finally {
    await rm(parent, { recursive: true, force: true });
  }
});
