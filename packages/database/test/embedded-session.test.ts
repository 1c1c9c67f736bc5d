import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { copiesFromClient } from '../src/embedded-session.ts';
import { type Database, openDatabase, type RestartEvent } from '../src/index.ts';
import { frontend, WireConnection } from './wire.ts';

/** Resolves once `condition` holds, looking every 50 ms; fails after `limitMs`. */
async function until(condition: () => boolean, what: string, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${limitMs} ms`);
    await delay(50);
  }
}

describe("the embedded database's one session, taken in turns by its connections", () => {
  let folder: string;
  let db: Database;
  const restarts: RestartEvent[] = [];
  const opened: WireConnection[] = [];
  const connect = async () => {
    const connection = await WireConnection.open(db.pool);
    opened.push(connection);
    return connection;
  };

  before(async () => {
    folder = await mkdtemp(join(tmpdir(), 'mcp-db-turns-'));
    // Room on the socket for the pool and each test's own connections.
    db = await openDatabase({
      dataDir: folder,
      maxConnections: 8,
      embedded: { onRestart: (event) => restarts.push(event) },
    });
    await db.pool.query('CREATE TABLE turns (note text)');
  });
  afterEach(() => {
    for (const connection of opened.splice(0)) connection.socket.destroy();
  });
  after(async () => {
    await db.close();
    await rm(folder, { recursive: true, force: true });
  });

  test("another connection's exchange waits for a Parse's Bind, and cannot take its unnamed statement", async () => {
    const a = await connect();
    const b = await connect();
    a.send(frontend.parse("SELECT 'a ran with ' || $1::text"));
    await delay(100);
    // The same shape: on a session taken message by message, a's Bind would run b's SQL.
    b.send(
      frontend.parse("SELECT 'b ran with ' || $1::text"),
      frontend.bind('b'),
      frontend.describePortal(),
      frontend.execute(),
      frontend.sync(),
    );
    await delay(100);
    assert.equal(b.unread, 0, "b's exchange waits for the end of a's");
    a.send(frontend.bind('a'), frontend.describePortal(), frontend.execute(), frontend.sync());
    assert.deepEqual(await a.reply('Z'), { values: ['a ran with a'], errors: [], types: '12TDCZ' });
    assert.deepEqual((await b.reply('Z')).values, ['b ran with b']);
  });

  test("a cursor keeps its portal between fetches, while another connection's query waits", async () => {
    const a = await connect();
    const b = await connect();
    a.send(
      frontend.parse('SELECT g::text FROM generate_series(1, 3) g'),
      frontend.bind(),
      frontend.describePortal(),
      frontend.execute(1),
      frontend.flush(),
    );
    assert.deepEqual((await a.reply('s')).values, ['1']);
    b.send(frontend.query('SELECT 42'));
    await delay(100);
    assert.equal(b.unread, 0, "b's query waits for the end of a's exchange");
    a.send(frontend.execute(1), frontend.flush());
    assert.deepEqual((await a.reply('s')).values, ['2']);
    a.send(frontend.execute(), frontend.sync());
    assert.deepEqual(await a.reply('Z'), { values: ['3'], errors: [], types: 'DCZ' });
    assert.deepEqual(await b.reply('Z'), { values: ['42'], errors: [], types: 'TDCZ' });
  });

  test('a connection that leaves in its turn has its transaction rolled back and its exchange ended', async () => {
    const a = await connect();
    const b = await connect();
    a.send(frontend.query("BEGIN; INSERT INTO turns VALUES ('left behind')"));
    await a.reply('Z');
    a.send(frontend.parse('SELECT 1'));
    b.send(frontend.query('SELECT count(*) FROM turns'));
    await delay(100);
    assert.equal(b.unread, 0, "b's query waits for the end of a's transaction");
    a.socket.destroy();
    // The unfinished exchange got its Sync, and the transaction its ROLLBACK: b's query runs
    // outside it, and a new transaction can begin.
    assert.deepEqual(await b.reply('Z'), { values: ['0'], errors: [], types: 'TDCZ' });
    b.send(frontend.query("BEGIN; INSERT INTO turns VALUES ('kept'); COMMIT"));
    assert.deepEqual((await b.reply('Z')).errors, []);
    assert.deepEqual((await db.pool.query('SELECT note FROM turns')).rows, [{ note: 'kept' }]);
    assert.deepEqual(restarts, []);
  });

  test('transactions of several pool connections at once each see only their own rows until they commit', async () => {
    await db.pool.query('CREATE TABLE tallies (owner text, n int)');
    const owners = ['one', 'two', 'three', 'four'];
    await Promise.all(
      owners.map(async (owner) => {
        for (let n = 1; n <= 25; n++) {
          const client = await db.pool.connect();
          try {
            await client.query('BEGIN');
            await client.query('INSERT INTO tallies VALUES ($1, $2)', [owner, n]);
            const { rows } = await client.query('SELECT count(*)::int AS rows FROM tallies WHERE owner = $1', [owner]);
            assert.equal(rows[0].rows, n);
            await client.query('COMMIT');
          } finally {
            client.release();
          }
        }
      }),
    );
    const { rows } = await db.pool.query('SELECT owner, count(*)::int AS n FROM tallies GROUP BY owner ORDER BY owner');
    assert.deepEqual(rows, [
      { owner: 'four', n: 25 },
      { owner: 'one', n: 25 },
      { owner: 'three', n: 25 },
      { owner: 'two', n: 25 },
    ]);
  });
});

/** Debian's psql, a client this project did not write, on `pool`'s socket; its stdin is `input`. */
function psql(
  pool: pg.Pool,
  args: string[],
  input = '',
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { host, port } = pool.options as { host: string; port: number };
  const child = spawn('psql', ['-X', '-h', host, '-p', String(port), '-U', 'postgres', '-d', 'postgres', ...args]);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  child.stdin.end(input);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe("what PGlite's one session cannot do, refused or recovered from", () => {
  let folder: string;
  let db: Database;
  const restarts: RestartEvent[] = [];
  before(async () => {
    folder = await mkdtemp(join(tmpdir(), 'mcp-db-psql-'));
    db = await openDatabase({ dataDir: folder, embedded: { onRestart: (event) => restarts.push(event) } });
    await db.pool.query("CREATE TABLE lines (line text); INSERT INTO lines VALUES ('kept')");
  });
  after(async () => {
    await db.close();
    await rm(folder, { recursive: true, force: true });
  });

  test("psql's \\copy from stdin gets PostgreSQL's feature_not_supported, and the session goes on; \\copy to stdout works", async () => {
    // PGlite takes a COPY's rows only in the same call as its query: sent alone, it lost the
    // protocol's thread (FATAL) and answered nobody again.
    const copyIn = await psql(db.pool, ['-c', '\\copy lines from stdin'], 'from psql\n\\.\n');
    assert.equal(copyIn.code, 1, copyIn.stderr);
    assert.match(copyIn.stderr, /ERROR: {2}COPY FROM STDIN is not supported by the embedded database \(PGlite\)/);
    assert.match(copyIn.stderr, /HINT: {2}Insert the rows with INSERT, or set DATABASE_URL/);
    const copyOut = await psql(db.pool, ['-c', '\\copy lines to stdout']);
    assert.equal(copyOut.code, 0, copyOut.stderr);
    assert.equal(copyOut.stdout, 'kept\n');
    assert.deepEqual((await db.pool.query('SELECT count(*)::int AS n FROM lines')).rows, [{ n: 1 }]);
    assert.deepEqual(restarts, []);
  });

  test('a query sent with its Terminate right behind it runs, even while another connection holds the turn', async () => {
    const holder = await WireConnection.open(db.pool);
    const leaver = await WireConnection.open(db.pool);
    try {
      holder.send(frontend.query('BEGIN'));
      await holder.reply('Z');
      leaver.send(frontend.query("INSERT INTO lines VALUES ('said before goodbye')"), frontend.terminate());
      await delay(100);
      holder.send(frontend.query('COMMIT'));
      await holder.reply('Z');
      await until(() => leaver.socket.destroyed, 'the leaver closed');
      const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM lines WHERE line = 'said before goodbye'");
      assert.deepEqual(rows, [{ n: 1 }]);
    } finally {
      holder.socket.destroy();
      leaver.socket.destroy();
    }
  });

  test('a Terminate ends the connection and its turn, even when the client keeps its side of the socket open', async () => {
    const other = await WireConnection.open(db.pool);
    const leaver = await WireConnection.open(db.pool, { allowHalfOpen: true });
    try {
      const ended = once(leaver.socket, 'end');
      leaver.send(frontend.query("BEGIN; INSERT INTO lines VALUES ('never committed')"), frontend.terminate());
      await ended;
      // The transaction was rolled back and the turn freed: the other connection's query runs
      // now, not when the limit on a held turn restarts the database.
      other.send(frontend.query("SELECT count(*) FROM lines WHERE line = 'never committed'"));
      assert.deepEqual((await other.reply('Z')).values, ['0']);
      assert.deepEqual(restarts, []);
    } finally {
      other.socket.destroy();
      leaver.socket.destroy();
    }
  });

  test("a connection's Terminate does not wait for another connection's turn", async () => {
    const holder = await WireConnection.open(db.pool);
    const leaver = await WireConnection.open(db.pool);
    try {
      holder.send(frontend.query('BEGIN'));
      await holder.reply('Z');
      // The holder never ends its turn during this wait: the leaver must close regardless.
      leaver.send(frontend.terminate());
      await until(() => leaver.socket.destroyed, 'the leaver closed while the holder held its turn');
      holder.send(frontend.query('COMMIT'));
      assert.deepEqual((await holder.reply('Z')).errors, []);
    } finally {
      holder.socket.destroy();
      leaver.socket.destroy();
    }
  });

  test("a message that ends PGlite's backend (FATAL: an unknown message type) opens the database again", async () => {
    const garbler = await WireConnection.open(db.pool);
    try {
      garbler.send(Buffer.from([0x7a, 0, 0, 0, 4]));
      await until(() => restarts.some((event) => event.type === 'restarted'), 'a restart');
      assert.deepEqual(restarts[0], {
        type: 'restarting',
        reason: 'PGlite reported a FATAL: invalid frontend message type 122',
      });
      assert.deepEqual((await db.pool.query("SELECT line FROM lines WHERE line = 'kept'")).rows, [{ line: 'kept' }]);
    } finally {
      garbler.socket.destroy();
    }
  });
});

test('COPY FROM STDIN is found outside literals, quoted names and comments only', () => {
  const copies = [
    'COPY lines FROM STDIN',
    "copy lines (line) from stdin with (format csv, delimiter ';')",
    'BEGIN; COPY lines FROM\n  stdin;',
    '/* a comment */ COPY lines FROM STDIN',
    "SELECT ';'; copy lines from stdin",
    // Where PostgreSQL's lexer starts no dollar quote (a `$` inside a name), or starts one this
    // scanner once did not (a non-ASCII or long tag): the review's ways around it.
    'SELECT 1 AS a$$$; COPY lines FROM STDIN; -- $$',
    'SELECT 1 AS \u00e9$$; COPY lines FROM STDIN; -- $$',
    "SELECT $\u00e9$ ' $\u00e9$; COPY lines FROM STDIN; -- '",
    `SELECT $${'t'.repeat(80)}$ ' $${'t'.repeat(80)}$; COPY lines FROM STDIN; -- '`,
    'COPY lines (a$$$) FROM STDIN -- $$',
  ];
  const others = [
    "INSERT INTO lines VALUES ('copy lines from stdin')",
    '-- copy lines from stdin\nSELECT 1',
    '/* copy /* nested */ lines from stdin */ SELECT 1',
    'SELECT $$copy lines from stdin$$, $tag$ copy x from stdin $tag$',
    "SELECT E'it\\' copy lines from stdin'",
    'SELECT "copy lines from stdin" FROM t',
    'COPY lines TO STDOUT',
    "COPY lines FROM '/tmp/stdin'",
    // A column named copy, read from a table named stdin; and that table copied out.
    'SELECT copy FROM stdin',
    'COPY (SELECT * FROM stdin) TO STDOUT',
  ];
  assert.deepEqual(
    copies.filter((sql) => !copiesFromClient(sql)),
    [],
  );
  assert.deepEqual(
    others.filter((sql) => copiesFromClient(sql)),
    [],
  );
});

describe("the embedded database's limits on a turn and on connections", () => {
  test('a turn left with nothing running past the limit ends by a restart, and the database serves again', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-held-'));
    const restarts: RestartEvent[] = [];
    // The limit is three times the query timeout: 1 s.
    const db = await openDatabase({
      dataDir: folder,
      queryTimeoutMs: 300,
      embedded: { onRestart: (event) => restarts.push(event) },
    });
    const stuck = await WireConnection.open(db.pool);
    try {
      // A Parse with no Sync: no transaction, but the exchange holds the session.
      stuck.send(frontend.parse('SELECT 1'));
      await until(() => restarts.some((event) => event.type === 'restarted'), 'a restart');
      assert.deepEqual(restarts[0], {
        type: 'restarting',
        reason:
          'a connection held the session (a transaction open, or a query not finished), with no statement running, for more than 1000 ms',
      });
      assert.deepEqual((await db.pool.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
    } finally {
      stuck.socket.destroy();
      await db.close();
      await rm(folder, { recursive: true, force: true });
    }
  });

  test('the socket is for its owner alone (0600), whatever the umask and the mode of DATA_DIR', async () => {
    // The socket asks no password: in a DATA_DIR of 0755 under umask 0, anyone on the machine
    // could have read and changed every expense through it.
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-mode-'));
    await chmod(folder, 0o755);
    const umask = process.umask(0);
    try {
      const db = await openDatabase({ dataDir: folder, embedded: { mustOwn: true } });
      try {
        const { host, port } = db.pool.options as { host: string; port: number };
        assert.equal((await stat(join(host, `.s.PGSQL.${port}`))).mode & 0o777, 0o600);
        assert.deepEqual((await db.pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      } finally {
        await db.close();
      }
    } finally {
      process.umask(umask);
      await rm(folder, { recursive: true, force: true });
    }
  });

  test("a connection past the socket's limit gets PostgreSQL's FATAL 53300, and a freed place is taken", async () => {
    const folder = await mkdtemp(join(tmpdir(), 'mcp-db-full-'));
    // A pool of one: the socket takes three connections (two more for the keys CLI and the like).
    const db = await openDatabase({ dataDir: folder, maxConnections: 1 });
    const { host, port } = db.pool.options as { host: string; port: number };
    const client = () =>
      new pg.Client({ host, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 5_000 });
    const held = [
      await WireConnection.open(db.pool),
      await WireConnection.open(db.pool),
      await WireConnection.open(db.pool),
    ];
    try {
      const refused = client();
      await assert.rejects(refused.connect(), (error: Error & { code?: string }) => {
        assert.equal(error.message, 'sorry, too many clients already');
        assert.equal(error.code, '53300');
        return true;
      });
      held.pop()?.socket.destroy();
      const admitted = client();
      await delay(100);
      await admitted.connect();
      assert.deepEqual((await admitted.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
      await admitted.end();
    } finally {
      for (const connection of held) connection.socket.destroy();
      await db.close();
      await rm(folder, { recursive: true, force: true });
    }
  });
});
