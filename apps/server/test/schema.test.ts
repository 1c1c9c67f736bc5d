import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import pg from 'pg';
import type { ServerConfig } from '../src/config.ts';
import { openAppDatabase } from '../src/database.ts';

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
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ namespace: string }>(
      'SELECT DISTINCT namespace FROM schema_migrations ORDER BY namespace',
    );
    const tables = await client.query<{ name: string }>(
      "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' ORDER BY 1",
    );
    return { namespaces: rows.map((row) => row.namespace), tables: tables.rows.map((row) => row.name) };
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
