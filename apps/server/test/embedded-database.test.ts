import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ServerProcess } from '@mcp-auth-stack/testing';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import pg from 'pg';
import { connectClient, spawnServer } from './helpers.ts';

// The default mode (`pnpm start`, no DATABASE_URL): PGlite in the server's process, which runs
// it in a worker thread and opens it again after a PANIC, as PostgreSQL's postmaster would.
describe('the embedded database, as a `pnpm start` user runs it', () => {
  let dataDir: string;
  let server: ServerProcess;
  let client: Client;

  const expense = (description: string) => ({
    name: 'add_user_expense',
    arguments: { date: '2026-12-01', amount: 12.5, category: 'food', description, payment_method: 'visa' },
  });
  const descriptions = async () => {
    const listed = await client.callTool({ name: 'get_user_expenses', arguments: {} });
    assert.equal(listed.isError, undefined, JSON.stringify(listed.content));
    const { expenses } = listed.structuredContent as { expenses: { description: string }[] };
    return expenses.map((row) => row.description).sort();
  };
  /** The server's limit on the size a file may grow to (RLIMIT_FSIZE), set from outside. */
  const limitFileSize = (limit: string) => execFileSync('prlimit', ['--pid', String(server.pid), `--fsize=${limit}:`]);

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mcp-embedded-'));
    server = await spawnServer({ MCP_AUTH_PROVIDER: 'none', DATA_DIR: dataDir, LOCAL_USER_ID: 'me' });
    client = await connectClient(server.mcpUrl, {});
  });
  after(async () => {
    await client?.close();
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  test('the server answers while the embedded database runs a long statement', async () => {
    // Another process on the machine (the keys CLI, psql) joins the server's socket.
    const other = new pg.Client({ host: dataDir, port: 5432, user: 'postgres', database: 'postgres' });
    await other.connect();
    try {
      let finished = false;
      // PGlite's pg_sleep holds its thread for the whole 3 s, whatever the machine's speed.
      const long = other.query('SELECT pg_sleep(3) AS slept').then((result) => {
        finished = true;
        return result;
      });
      // Sent once the statement is on its way; on PGlite's thread, not the server's.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const health = await fetch(`${server.url}/health`);
      assert.equal(health.status, 200);
      assert.equal(finished, false, 'the health check waited for the statement: PGlite ran on the server thread');
      assert.deepEqual((await long).rows, [{ slept: '' }]);
    } finally {
      await other.end();
    }
  });

  test('a PANIC (its WAL could not be written) closes the connections, and the database opens again, with what was committed', async () => {
    const kept = await client.callTool(expense('before the PANIC'));
    assert.equal(kept.isError, undefined, JSON.stringify(kept.content));

    // A WAL file may not grow past 1 KB: the next write fails as a full disk does, PostgreSQL
    // PANICs, and PGlite, which has no postmaster, answered every statement after it with
    // "cannot drop active portal" until the server was restarted.
    limitFileSize('1024');
    const refused = await client.callTool(expense('during the PANIC'));
    assert.equal(refused.isError, true, JSON.stringify(refused.content));
    await server.waitForOutput(
      /"msg":"embedded database restarting: its connections are closed","reason":"PGlite reported a PANIC: .*File too large/,
    );
    // The server itself goes on answering while its database is away.
    assert.equal((await fetch(`${server.url}/health`)).status, 200);

    limitFileSize('unlimited');
    await server.waitForOutput(/"msg":"embedded database restarted","after_ms":\d+/, 45_000);
    assert.deepEqual(await descriptions(), ['before the PANIC']);
    const added = await client.callTool(expense('after the restart'));
    assert.equal(added.isError, undefined, JSON.stringify(added.content));
    assert.deepEqual(await descriptions(), ['after the restart', 'before the PANIC']);
    const ready = await fetch(`${server.url}/ready`);
    assert.equal(ready.status, 200);
  });

  test('a stop closes the restarted database and exits 0', async () => {
    const code = await server.stop();
    assert.equal(code, 0, server.output());
    assert.match(server.output(), /"msg":"stopped"/);
  });
});

/**
 * A server on the embedded database with DATABASE_QUERY_TIMEOUT_MS=500 (so the limit on a
 * statement, or an idle open transaction, is 1.5 s), and what `psql` on its socket would be.
 */
async function serverWithSocketClient(t: { after(fn: () => Promise<void>): void }) {
  const dataDir = await mkdtemp(join(tmpdir(), 'mcp-embedded-limit-'));
  const server = await spawnServer({
    MCP_AUTH_PROVIDER: 'none',
    DATA_DIR: dataDir,
    LOCAL_USER_ID: 'me',
    DATABASE_QUERY_TIMEOUT_MS: '500',
  });
  const socketClient = () => new pg.Client({ host: dataDir, port: 5432, user: 'postgres', database: 'postgres' });
  const other = socketClient();
  t.after(async () => {
    await other.end().catch(() => {});
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  await other.connect();
  other.on('error', () => {});
  return { server, other, socketClient };
}

describe('the embedded database, with a statement that does not end', () => {
  test('PGlite has no statement_timeout: a statement three times past DATABASE_QUERY_TIMEOUT_MS is ended by a restart', {
    timeout: 90_000,
  }, async (t) => {
    const { server, other } = await serverWithSocketClient(t);
    // A statement that never ends, on the thread every connection's statements run on. A loop:
    // counting a generate_series spilled its rows to temporary files, 276 MB in 1.5 s here,
    // and 27 GB was left in /tmp by a run stopped before its cleanup.
    const endless = other.query('DO $$ BEGIN LOOP END LOOP; END $$');
    await assert.rejects(endless, /Connection terminated/);
    await server.waitForOutput(
      /"msg":"embedded database restarting: its connections are closed","reason":"a statement ran for more than 1500 ms"/,
    );
    await server.waitForOutput(/"msg":"embedded database restarted"/, 30_000);
    const client = await connectClient(server.mcpUrl, {});
    const listed = await client.callTool({ name: 'get_user_expenses', arguments: {} });
    assert.equal(listed.isError, undefined, JSON.stringify(listed.content));
    await client.close();
  });
});

describe('the embedded database, with a transaction left open', () => {
  test('one connection idle in a transaction held every other: it is ended after three times DATABASE_QUERY_TIMEOUT_MS', {
    timeout: 90_000,
  }, async (t) => {
    const { server, other, socketClient } = await serverWithSocketClient(t);
    // Its BEGIN left open: PGlite's one session runs only this connection's statements.
    await other.query('BEGIN');
    await other.query('SELECT 1');
    await server.waitForOutput(
      /"msg":"embedded database restarting: its connections are closed","reason":"a connection held the session \(a transaction open, or a query not finished\), with no statement running, for more than 1500 ms"/,
      30_000,
    );
    await server.waitForOutput(/"msg":"embedded database restarted"/, 30_000);
    await assert.rejects(other.query('SELECT 1'));
    const client = await connectClient(server.mcpUrl, {});
    const added = await client.callTool({
      name: 'add_user_expense',
      arguments: { date: '2026-12-01', amount: 3, category: 'food', description: 'after', payment_method: 'cash' },
    });
    assert.equal(added.isError, undefined, JSON.stringify(added.content));
    await client.close();

    // A connection that leaves with its transaction open has it rolled back: nothing to end.
    const leaving = socketClient();
    await leaving.connect();
    await leaving.query('BEGIN');
    await leaving.query('SELECT 1');
    await leaving.end();
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assert.equal(server.output().match(/embedded database restarting/g)?.length, 1, server.output());
  });
});
