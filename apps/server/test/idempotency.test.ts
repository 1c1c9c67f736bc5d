import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { connectClient, startTestStack, type TestStack } from './helpers.ts';

type ToolResult = Awaited<ReturnType<Client['callTool']>>;
const text = (result: ToolResult) => (result.content as { text: string }[])[0]?.text ?? '';
const expenseId = (result: ToolResult) => (result.structuredContent as { expense: { id: string } }).expense.id;

/** add_user_expense with an idempotency key, through the real server, SDK client and PostgreSQL. */
describe('idempotent add_user_expense', () => {
  let stack: TestStack;
  let alice: Client;
  let bob: Client;
  const lunch = { date: '2025-05-02', amount: 12.5, category: 'food', description: 'Lunch', payment_method: 'visa' };

  before(async () => {
    stack = await startTestStack();
    alice = await connectClient(stack.mcpUrl, {
      Authorization: `Bearer ${(await stack.keys.create({ userId: 'alice' })).secret}`,
    });
    bob = await connectClient(stack.mcpUrl, {
      Authorization: `Bearer ${(await stack.keys.create({ userId: 'bob' })).secret}`,
    });
  });
  after(async () => {
    await alice?.close();
    await bob?.close();
    await stack?.close();
  });

  const rows = async (userId: string, key: string) =>
    (
      await stack.sql.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM expenses WHERE user_id = $1 AND idempotency_key = $2',
        [userId, key],
      )
    ).rows[0]?.n;

  test('a retry with the same key returns the first result and stores nothing new', async () => {
    const key = randomUUID();
    const first = await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: key } });
    const retry = await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: key } });
    assert.equal(first.isError, undefined, text(first));
    assert.deepEqual(retry, first);
    assert.equal(await rows('alice', key), 1);
  });

  test('the same key with different content is a clear tool error, and nothing is stored', async () => {
    const key = randomUUID();
    const first = await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: key } });
    const other = await alice.callTool({
      name: 'add_user_expense',
      arguments: { ...lunch, amount: 13, idempotency_key: key },
    });
    assert.equal(other.isError, true);
    assert.match(text(other), /idempotency_key .* was already used for a different expense/);
    assert.ok(text(other).includes(expenseId(first)), 'names the expense the key belongs to');
    assert.equal(await rows('alice', key), 1);
    const amounts = await stack.sql.query('SELECT amount::text FROM expenses WHERE idempotency_key = $1', [key]);
    assert.deepEqual(amounts.rows, [{ amount: '12.50' }]);
  });

  test('a write-only credential hears of the conflict without the stored expense', async () => {
    const writer = await connectClient(stack.mcpUrl, {
      Authorization: `Bearer ${(await stack.keys.create({ userId: 'alice', scopes: ['expenses:write'] })).secret}`,
    });
    try {
      const key = randomUUID();
      const secret = { ...lunch, description: 'Therapy session, Dr. K', idempotency_key: key };
      const first = await alice.callTool({ name: 'add_user_expense', arguments: secret });
      const guess = await writer.callTool({
        name: 'add_user_expense',
        arguments: { ...lunch, amount: 0.01, idempotency_key: key },
      });
      assert.equal(guess.isError, true);
      assert.match(text(guess), /was already used for a different expense; nothing was added/);
      assert.ok(!text(guess).includes(expenseId(first)), text(guess));
      assert.ok(!text(guess).includes('Therapy'), text(guess));
      assert.equal(await rows('alice', key), 1);
    } finally {
      await writer.close();
    }
  });

  test('keys belong to their user: the same key of another user is another expense', async () => {
    const key = randomUUID();
    const mine = await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: key } });
    const theirs = await bob.callTool({
      name: 'add_user_expense',
      arguments: { ...lunch, amount: 99, idempotency_key: key },
    });
    assert.equal(theirs.isError, undefined, text(theirs));
    assert.notEqual(expenseId(theirs), expenseId(mine));
    assert.equal(await rows('alice', key), 1);
    assert.equal(await rows('bob', key), 1);
  });

  test("a retry under a key another user also used answers with the caller's own expense, never the other's", async () => {
    const key = randomUUID();
    const hers = await alice.callTool({
      name: 'add_user_expense',
      arguments: { ...lunch, description: 'Alice private lunch', idempotency_key: key },
    });
    const his = await bob.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: key } });
    assert.equal(his.isError, undefined, text(his));
    // Bob's retry is answered from the stored row under his key: his own.
    const retry = await bob.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: key } });
    assert.deepEqual(retry, his);
    // So is the conflict a different expense under the same key reports.
    const other = await bob.callTool({
      name: 'add_user_expense',
      arguments: { ...lunch, amount: 1, idempotency_key: key },
    });
    assert.equal(other.isError, true);
    assert.ok(text(other).includes(expenseId(his)), text(other));
    for (const result of [retry, other]) {
      assert.ok(!JSON.stringify(result).includes(expenseId(hers)), "nothing of Alice's expense reaches Bob");
      assert.doesNotMatch(JSON.stringify(result), /Alice private lunch/);
    }
    assert.equal(await rows('alice', key), 1);
    assert.equal(await rows('bob', key), 1);
  });

  test('concurrent calls with one key store one expense and all get it', async () => {
    const key = randomUUID();
    const results = await Promise.all(
      Array.from({ length: 12 }, () =>
        alice.callTool({
          name: 'add_user_expense',
          arguments: { ...lunch, description: 'Race', idempotency_key: key },
        }),
      ),
    );
    assert.equal(new Set(results.map(expenseId)).size, 1);
    assert.equal(await rows('alice', key), 1);
  });

  test('a malformed key is refused and nothing is stored; without a key every call adds', async () => {
    const before = (await stack.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM expenses')).rows[0]?.n;
    for (const bad of ['', 'has space', 'x'.repeat(256), 'naïve']) {
      const refused = await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, idempotency_key: bad } });
      assert.equal(refused.isError, true, bad);
      assert.match(text(refused), /idempotency_key/, bad);
    }
    await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, description: 'Twice' } });
    await alice.callTool({ name: 'add_user_expense', arguments: { ...lunch, description: 'Twice' } });
    const after = (await stack.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM expenses')).rows[0]?.n;
    assert.equal(after, (before as number) + 2);
  });

  test('the key is recorded by a versioned migration', async () => {
    const { rows: applied } = await stack.sql.query(
      "SELECT version, name FROM schema_migrations WHERE namespace = 'expenses' AND version <= 2 ORDER BY version",
    );
    assert.deepEqual(applied, [
      { version: 1, name: 'create expenses' },
      { version: 2, name: 'idempotency keys of add_user_expense' },
    ]);
  });
});
