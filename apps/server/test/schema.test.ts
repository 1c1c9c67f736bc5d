import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import pg from 'pg';
import { loadConfig, type ServerConfig } from '../src/config.ts';
import { openAppDatabase } from '../src/database.ts';
import { createLogger } from '../src/logger.ts';
import { startServer } from '../src/start-server.ts';

const databases: TestDatabase[] = [];
after(async () => {
  for (const database of databases) await database.drop();
});

/** Opens the app's database as a process of `authMode` would, then lists what the schema records. */
async function open(url: string, authMode: ServerConfig['authMode'], role: 'server' | 'tool' = 'server') {
  const database = await openAppDatabase(
    {
      authMode,
      databaseUrl: url,
      dataDir: '',
      databasePoolSize: 2,
      databaseConnectTimeoutMs: 5_000,
      databaseQueryTimeoutMs: 5_000,
    },
    role,
  );
  await database.close();
  const namespaces = await query<{ namespace: string }>(
    url,
    'SELECT DISTINCT namespace FROM schema_migrations ORDER BY namespace',
  );
  const tables = await query<{ name: string }>(
    url,
    "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' ORDER BY 1",
  );
  return { namespaces: namespaces.map((row) => row.namespace), tables: tables.map((row) => row.name) };
}

/** One statement on its own connection to the database at `url`. */
async function query<Row extends pg.QueryResultRow>(url: string, sql: string): Promise<Row[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<Row>(sql)).rows;
  } finally {
    await client.end();
  }
}

async function emptyDatabase() {
  const database = await createTestDatabase();
  databases.push(database);
  return database.url;
}

test('a first start creates the tables its mode uses, and only those', async () => {
  const expected: [ServerConfig['authMode'], 'server' | 'tool', string[]][] = [
    ['keycloak', 'server', ['expenses']],
    ['none', 'server', ['expenses']],
    ['key', 'server', ['api_keys', 'expenses']],
    ['oauth_proxy', 'server', ['expenses', 'oauth_proxy']],
    ['entra_proxy', 'server', ['expenses', 'oauth_proxy']],
    ['keycloak', 'tool', ['api_keys', 'expenses']],
  ];
  for (const [mode, role, namespaces] of expected) {
    const schema = await open(await emptyDatabase(), mode, role);
    assert.deepEqual(schema.namespaces, namespaces, `${mode} (${role})`);
    if (!namespaces.includes('api_keys')) assert.ok(!schema.tables.includes('api_keys'), `${mode}: no api_keys table`);
    if (!namespaces.includes('oauth_proxy')) {
      assert.deepEqual(
        schema.tables.filter((name) => name.startsWith('oauth_proxy')),
        [],
        `${mode}: no proxy tables`,
      );
    }
  }
});

test("a database first used by one mode gets another mode's tables when that mode starts on it", async () => {
  const url = await emptyDatabase();
  assert.deepEqual((await open(url, 'keycloak')).namespaces, ['expenses']);
  assert.deepEqual((await open(url, 'oauth_proxy')).namespaces, ['expenses', 'oauth_proxy']);
  const keyMode = await open(url, 'key');
  assert.deepEqual(keyMode.namespaces, ['api_keys', 'expenses', 'oauth_proxy']);
  assert.ok(keyMode.tables.includes('api_keys'));
  // And back: nothing is dropped or redone.
  assert.deepEqual((await open(url, 'keycloak')).namespaces, ['api_keys', 'expenses', 'oauth_proxy']);
});

/** The server in this process, `none` mode on loopback, on the database at `url`; its log lines in `lines`. */
function startOn(url: string, lines: string[] = []) {
  const config = loadConfig({
    PORT: '0',
    HOST: '127.0.0.1',
    MCP_AUTH_PROVIDER: 'none',
    DATABASE_URL: url,
    LOG_LEVEL: 'warn',
  });
  return startServer(
    config,
    createLogger(config.logLevel, (line) => lines.push(line)),
  );
}

/** How many connections the server's pool (application_name mcp-expenses-server) holds on `url`'s database. */
async function serverConnections(url: string): Promise<number> {
  const [row] = await query<{ n: number }>(
    url,
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'mcp-expenses-server'",
  );
  return row?.n ?? -1;
}

test('the server is made while its schema migrates, and listens only once it has', async () => {
  const url = await emptyDatabase();
  // Another replica migrating: the migration lock held by another session.
  const replica = new pg.Client({ connectionString: url });
  await replica.connect();
  await replica.query("SELECT pg_advisory_lock(hashtext('mcp-auth-stack:migrate'))");
  let started = false;
  const starting = startOn(url).then((server) => {
    started = true;
    return server;
  });
  let startedWhileLocked: boolean;
  try {
    await new Promise((resolve) => setTimeout(resolve, 500));
    startedWhileLocked = started;
  } finally {
    await replica.query("SELECT pg_advisory_unlock(hashtext('mcp-auth-stack:migrate'))");
    await replica.end();
  }
  const server = await starting;
  try {
    assert.equal(
      startedWhileLocked,
      false,
      'startServer resolved (and listened) while the migration waited for its lock',
    );
    const response = await fetch(`${server.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'get_user_expenses', arguments: { limit: 1 } },
      }),
    });
    const reply = (await response.json()) as { result?: { isError?: boolean; structuredContent?: unknown } };
    assert.equal(response.status, 200);
    assert.equal(reply.result?.isError, undefined, JSON.stringify(reply));
    assert.deepEqual(reply.result?.structuredContent, { expenses: [], count: 0, has_more: false });
  } finally {
    await server.close();
  }
});

test('a migration that fails stops the start with its reason, and the database is closed', async () => {
  const url = await emptyDatabase();
  // A table of the same name that is not this server's: the first expenses migration fails.
  await query(url, 'CREATE TABLE expenses (id integer)');
  const lines: string[] = [];
  await assert.rejects(startOn(url, lines), /Migration expenses#1 \(.*\) failed: relation "expenses" already exists/);
  assert.equal(await serverConnections(url), 0);
  // The caller reports it (main.ts: "The server could not start: …"); not logged twice.
  assert.deepEqual(
    lines.filter((line) => line.includes('start-up failed')),
    [],
  );
});

test('a SIGTERM while the start waits for the migration lock ends the process at once (as PID 1 too)', async () => {
  const url = await emptyDatabase();
  const replica = new pg.Client({ connectionString: url });
  await replica.connect();
  await replica.query("SELECT pg_advisory_lock(hashtext('mcp-auth-stack:migrate'))");
  const child = spawn(process.execPath, [fileURLToPath(new URL('../src/main.ts', import.meta.url))], {
    env: { ...process.env, MCP_AUTH_PROVIDER: 'key', DATABASE_URL: url, PORT: '0', HOST: '127.0.0.1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('exit', (code, signal) => resolve([code, signal])),
  );
  try {
    // Until its migration waits for the lock the replica holds.
    for (let waited = 0; ; waited += 50) {
      const { rows } = await replica.query(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
      );
      if (rows.length > 0) break;
      assert.ok(waited < 30_000, `the start never waited for the lock: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    child.kill('SIGTERM');
    // A handler's exit, not the signal's default action: in a container, node is PID 1, where a
    // signal without a handler does nothing and the start would wait for the lock regardless.
    assert.deepEqual(await exited, [143, null], stderr);
    assert.match(stderr, /stopped \(SIGTERM\) while starting/);
  } finally {
    child.kill('SIGKILL');
    await replica.end();
  }
});
