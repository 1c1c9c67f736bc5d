import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, openMcpPost, type ServerProcess, type TestDatabase } from '@mcp-auth-stack/testing';
import { type OwnPostgres, startOwnPostgres, until } from '@mcp-auth-stack/testing-stack/faults';
import pg from 'pg';
import { keysCli, postMcp, spawnServer } from './helpers.ts';

/**
 * Key mode on PostgreSQL keeps verified keys in memory (ApiKeyCache). What must hold: a key
 * revoked from another process is refused by every replica within REVOCATION_BOUND_MS of the
 * revocation's commit (README, decision 38). Real server processes, real PostgreSQL, the real CLI.
 */
const REVOCATION_BOUND_MS = 1_000;
const listing = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
const status = async (server: ServerProcess, key: string) =>
  (await postMcp(server.mcpUrl, listing, { authorization: `Bearer ${key}` })).status;

async function createKey(env: Record<string, string>, user: string): Promise<{ id: string; secret: string }> {
  const created = await keysCli(['create', '--user', user], env);
  assert.equal(created.code, 0, created.stderr);
  const id = /Created (key_[0-9a-f]+)/.exec(created.stderr)?.[1] as string;
  return { id, secret: created.stdout.trim().split('\n').at(-1) as string };
}

/**
 * Polls each server from the moment the revocation committed; every request sent at or after the
 * bound must be refused. Returns when each server has refused one sent after the bound.
 */
async function assertRefusedWithinBound(servers: ServerProcess[], key: string, committedAt: number) {
  for (const server of servers) {
    for (;;) {
      const sentAfterMs = performance.now() - committedAt;
      const code = await status(server, key);
      if (sentAfterMs >= REVOCATION_BOUND_MS) {
        assert.equal(code, 401, `${server.url} accepted the key ${Math.round(sentAfterMs)} ms after its revocation`);
        break;
      }
      assert.ok(code === 200 || code === 401, `unexpected ${code}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

describe('key mode with the key cache, two server processes on one PostgreSQL', () => {
  let database: TestDatabase;
  let servers: ServerProcess[] = [];
  let env: Record<string, string>;
  before(async () => {
    database = await createTestDatabase();
    env = { DATABASE_URL: database.url, MCP_AUTH_PROVIDER: 'key' };
    servers = await Promise.all([spawnServer(env), spawnServer(env)]);
  });
  after(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await database?.drop();
  });

  test('each replica listens for revocations', async () => {
    for (const server of servers) await server.waitForOutput(/api key cache: listening for revocations/);
  });

  test('keys are served from memory: a revocation nobody announces goes unseen', async () => {
    const { id, secret } = await createKey(env, 'carol');
    for (const server of servers) assert.equal(await status(server, secret), 200);
    const sql = new pg.Client({ connectionString: database.url });
    await sql.connect();
    try {
      await sql.query('ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed');
      await sql.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [id]);
      await sql.query('ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed');
      await new Promise((resolve) => setTimeout(resolve, REVOCATION_BOUND_MS * 1.5));
      for (const server of servers) assert.equal(await status(server, secret), 200, 'still cached');
      // What the trigger would have sent.
      await sql.query(`SELECT pg_notify('api_keys_changed', $1)`, [id]);
      const committedAt = performance.now();
      await assertRefusedWithinBound(servers, secret, committedAt);
    } finally {
      await sql.end();
    }
  });

  test('`pnpm keys revoke` in a third process: both replicas refuse the key within the bound', async () => {
    const { id, secret } = await createKey(env, 'alice');
    const other = await createKey(env, 'bob');
    for (const server of servers) {
      assert.equal(await status(server, secret), 200);
      assert.equal(await status(server, secret), 200);
    }
    const revoked = await keysCli(['revoke', id], env);
    const committedAt = performance.now();
    assert.equal(revoked.code, 0, revoked.stderr);
    await assertRefusedWithinBound(servers, secret, committedAt);
    for (const server of servers) assert.equal(await status(server, other.secret), 200, 'other keys still work');
  });
  test('a key revoked while its request body is still on the way: the call does not run', async () => {
    const { id, secret } = await createKey(env, 'dave');
    const server = servers[0] as ServerProcess;
    const call = JSON.stringify({
      jsonrpc: '2.0',
      id: 7,
      method: 'tools/call',
      params: {
        name: 'add_user_expense',
        arguments: {
          date: '2026-12-01',
          amount: 9.5,
          category: 'food',
          description: 'sent after the revocation',
          payment_method: 'cash',
        },
      },
    });
    // The headers and the first bytes now, as a slow (or deliberately slow) client sends them.
    const request = openMcpPost(server.mcpUrl, secret, { headers: { 'content-length': String(call.length) } });
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      request.on('response', (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => {
          body += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      request.on('error', reject);
    });
    request.write(call.slice(0, 10));
    const sql = new pg.Client({ connectionString: database.url });
    await sql.connect();
    try {
      // The headers are in and the key verified: its first use is recorded (last_used_at).
      const deadline = Date.now() + 10_000;
      const used = async () =>
        (await sql.query('SELECT last_used_at IS NOT NULL AS used FROM api_keys WHERE id = $1', [id])).rows[0].used;
      while (!(await used())) {
        assert.ok(Date.now() < deadline, 'the key was not verified within 10 s of the headers');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const revoked = await keysCli(['revoke', id], env);
      assert.equal(revoked.code, 0, revoked.stderr);
      await new Promise((resolve) => setTimeout(resolve, REVOCATION_BOUND_MS));
      request.end(call.slice(10));
      const { status, body } = await answered;
      assert.equal(status, 401, body);
      assert.match(body, /invalid_token/);
      const stored = await sql.query(
        `SELECT count(*)::int AS n FROM expenses WHERE description = 'sent after the revocation'`,
      );
      assert.equal(stored.rows[0].n, 0, 'the expense was written');
    } finally {
      await sql.end();
    }
  });
});

describe('key mode with the key cache across a PostgreSQL restart', () => {
  let postgres: OwnPostgres;
  let server: ServerProcess | undefined;
  before(async () => {
    postgres = await startOwnPostgres();
  });
  after(async () => {
    await server?.stop();
    await postgres?.destroy();
  });

  test('the listener reconnects after the restart, and revocation is prompt again', async () => {
    const env = { DATABASE_URL: postgres.url, MCP_AUTH_PROVIDER: 'key' };
    server = await spawnServer(env);
    const running = server;
    const { id, secret } = await createKey(env, 'dana');
    assert.equal(await status(running, secret), 200);
    await postgres.stop();
    await until(() => /api key cache: listener lost/.test(running.output()), 10_000, 'the loss to be logged');
    await postgres.start();
    const listening = () => running.output().match(/api key cache: listening for revocations/g)?.length ?? 0;
    await until(() => listening() >= 2, 30_000, 'the listener to reconnect');
    // The pool's connections died with the restart; the first requests may find them dead (503).
    let code = 0;
    for (let i = 0; i < 50 && code !== 200; i++) {
      code = await status(running, secret);
      if (code !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(code, 200);
    const revoked = await keysCli(['revoke', id], env);
    const committedAt = performance.now();
    assert.equal(revoked.code, 0, revoked.stderr);
    await assertRefusedWithinBound([running], secret, committedAt);
  });
});
