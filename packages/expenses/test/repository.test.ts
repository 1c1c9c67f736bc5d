import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import type pg from 'pg';
import {
  amount,
  calendarDate,
  DEFAULT_MAX_EXPENSES_PER_USER,
  EXPENSE_COUNT_SLOTS,
  EXPENSES_NAMESPACE,
  ExpenseLimitError,
  ExpenseRepository,
  expensesMigrations,
  MAX_LIST_LIMIT,
  type NewExpense,
} from '../src/index.ts';

const expense = (overrides: Partial<NewExpense> = {}): NewExpense => ({
  date: '2025-04-01',
  amount: 1,
  category: 'food',
  description: 'x',
  payment_method: 'cash',
  ...overrides,
});

describe('ExpenseRepository on a real PostgreSQL server', () => {
  let testDb: TestDatabase;
  let db: Database;
  let repo: ExpenseRepository;
  before(async () => {
    testDb = await createTestDatabase();
    db = await openDatabase({ url: testDb.url });
    await migrate(db.pool, EXPENSES_NAMESPACE, expensesMigrations);
    repo = new ExpenseRepository(db.pool);
  });
  after(async () => {
    await db?.close();
    await testDb?.drop();
  });

  test('money stays exact: 0.1 + 0.2 is 0.30, not 0.30000000000000004', async () => {
    await repo.add('exact', expense({ amount: 0.1 }));
    await repo.add('exact', expense({ amount: 0.2 }));
    const summary = await repo.summary('exact');
    assert.equal(summary.total, '0.30');
    assert.equal(0.1 + 0.2 === 0.3, false, 'binary floating point would have got this wrong');
  });

  test("dates come back as YYYY-MM-DD whatever the database's DateStyle", async () => {
    // A database an administrator set up for another locale.
    const other = await createTestDatabase();
    const admin = await openDatabase({ url: other.url });
    try {
      await admin.pool.query(`ALTER DATABASE "${new URL(other.url).pathname.slice(1)}" SET datestyle = 'SQL, DMY'`);
      await admin.close();
      const db = await openDatabase({ url: other.url });
      try {
        await migrate(db.pool, EXPENSES_NAMESPACE, expensesMigrations);
        const local = new ExpenseRepository(db.pool);
        const added = await local.add('dmy', expense({ date: '2025-03-01' }));
        assert.equal(added.date, '2025-03-01');
        const [listed] = (await local.list('dmy', { limit: 1 })).expenses;
        assert.equal(listed?.date, '2025-03-01');
        const { rows } = await db.pool.query("SELECT '2025-03-01'::date::text AS spelled");
        assert.equal(rows[0].spelled, '01/03/2025', 'the setting applies: date::text would have said this');
      } finally {
        await db.close();
      }
    } finally {
      await admin.close().catch(() => {});
      await other.drop();
    }
  });

  test('an empty summary has a zero total and no groups', async () => {
    assert.deepEqual(await repo.summary('nobody'), { total: '0.00', count: 0, by_category: [], by_month: [] });
  });

  test('summary honours the date range and orders categories by total', async () => {
    await repo.add('sum', expense({ date: '2024-12-31', amount: 1000, category: 'gadget' }));
    await repo.add('sum', expense({ date: '2025-01-01', amount: 5, category: 'food' }));
    await repo.add('sum', expense({ date: '2025-01-15', amount: 7.5, category: 'transport' }));
    await repo.add('sum', expense({ date: '2025-02-01', amount: 2.5, category: 'food' }));
    const summary = await repo.summary('sum', { start_date: '2025-01-01', end_date: '2025-02-28' });
    assert.equal(summary.total, '15.00');
    // Equal totals fall back to the category name.
    assert.deepEqual(summary.by_category, [
      { category: 'food', total: '7.50', count: 2 },
      { category: 'transport', total: '7.50', count: 1 },
    ]);
    assert.deepEqual(summary.by_month, [
      { month: '2025-01', total: '12.50', count: 2 },
      { month: '2025-02', total: '2.50', count: 1 },
    ]);
  });

  test('totals past 999,999,999,999.99 stay exact: a million maximal expenses do not break the summary or the statistics', async () => {
    // What one user could reach through add_user_expense with the limit raised
    // (MAX_EXPENSES_PER_USER): 1,000,000 calls of the largest amount, written here in one statement. Writing and summing a million rows can take longer than
    // the default statement timeout on a busy machine, so this test has its own pool.
    const big = await openDatabase({ url: testDb.url, queryTimeoutMs: 120_000 });
    try {
      await big.pool.query(
        `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
         SELECT 'whale', '2099-01-01', 1000000, 'other', 'x', 'cash' FROM generate_series(1, 1000000)`,
      );
      const bigRepo = new ExpenseRepository(big.pool, { maxExpensesPerUser: 1_000_001 });
      // The cent shows the total keeps its two decimals.
      await bigRepo.add('whale', expense({ date: '2099-01-02', amount: 0.01, category: 'food' }));
      const range = { start_date: '2099-01-01', end_date: '2099-12-31' };

      assert.deepEqual(await bigRepo.summary('whale', range), {
        total: '1000000000000.01',
        count: 1_000_001,
        by_category: [
          { category: 'other', total: '1000000000000.00', count: 1_000_000 },
          { category: 'food', total: '0.01', count: 1 },
        ],
        by_month: [{ month: '2099-01', total: '1000000000000.01', count: 1_000_001 }],
      });
      assert.deepEqual(await bigRepo.stats(range), {
        total: '1000000000000.01',
        count: 1_000_001,
        users: 1,
        by_category: [
          { category: 'food', total: '0.01', count: 1, users: 1 },
          { category: 'other', total: '1000000000000.00', count: 1_000_000, users: 1 },
        ],
      });
    } finally {
      await big.close();
    }
  });

  test('the list limit is capped', async () => {
    assert.equal((await repo.list('nobody', { limit: MAX_LIST_LIMIT * 10 })).expenses.length, 0);
    for (let i = 0; i < 3; i++) await repo.add('many', expense());
    assert.equal((await repo.list('many', { limit: 2 })).expenses.length, 2);
  });

  test('pages: a cursor continues where a page ended, each expense once, in order, whatever is added meanwhile', async () => {
    // Seven on two dates, three of them at one instant (the order's last key, the id, decides).
    for (const date of ['2025-05-02', '2025-05-02', '2025-05-01', '2025-05-01']) {
      await repo.add('pager', expense({ date }));
    }
    await db.pool.query(
      `INSERT INTO expenses (user_id, date, amount, category, description, payment_method, created_at)
       SELECT 'pager', '2025-05-01', 2, 'food', 'same instant', 'cash', '2025-05-01T12:00:00Z' FROM generate_series(1, 3)`,
    );
    const everything = (await repo.list('pager', { limit: MAX_LIST_LIMIT })).expenses.map((e) => e.id);
    assert.equal(everything.length, 7);
    const paged: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await repo.list('pager', { limit: 2, ...(cursor ? { cursor } : {}) });
      paged.push(...page.expenses.map((e) => e.id));
      cursor = page.nextCursor;
      pages++;
      // Added after the listing started, newer than every page: no page shifts.
      if (pages === 1) await repo.add('pager', expense({ date: '2025-06-01' }));
    } while (cursor);
    assert.deepEqual(paged, everything);
    assert.equal(pages, 4);
    // The one added meanwhile and six more: the cursor after the sixth of those listed first.
    const allButOne = await repo.list('pager', { limit: everything.length });
    assert.equal(allButOne.expenses.at(-1)?.id, everything.at(-2));
    const last = await repo.list('pager', { limit: 1, cursor: allButOne.nextCursor as string });
    assert.deepEqual([last.expenses.map((e) => e.id), last.nextCursor], [[everything.at(-1)], undefined], 'no more');
    // Filters apply on every page.
    const secondOfMay = await repo.list('pager', { limit: 2, start_date: '2025-05-02', end_date: '2025-05-02' });
    assert.equal(secondOfMay.expenses.length, 2);
    assert.equal(secondOfMay.nextCursor, undefined, 'the two of 2 May, and nothing more within the filter');
    const mayOnwards = await repo.list('pager', { limit: 2, start_date: '2025-05-02' });
    const rest = await repo.list('pager', { start_date: '2025-05-02', cursor: mayOnwards.nextCursor as string });
    assert.deepEqual(
      [...mayOnwards.expenses, ...rest.expenses].map((e) => e.date),
      ['2025-06-01', '2025-05-02', '2025-05-02'],
      'the one of June first, then the rest within the filter',
    );
    // A cursor continues only the listing that made it: under other filters its place would skip,
    // unsaid, every row those filters add before it.
    for (const other of [{}, { start_date: '2025-05-01' }, { start_date: '2025-05-02', category: 'food' as const }]) {
      await assert.rejects(
        repo.list('pager', { ...other, cursor: mayOnwards.nextCursor as string }),
        { name: 'InvalidCursorError', message: /other filters/ },
        JSON.stringify(other),
      );
    }
    const otherLimit = await repo.list('pager', {
      limit: 1,
      start_date: '2025-05-02',
      cursor: mayOnwards.nextCursor as string,
    });
    assert.equal(otherLimit.expenses.length, 1, 'the limit may change from page to page');
  });

  test('pages: two expenses added within one millisecond keep the order of their stored instants', async () => {
    // `created_at` leaves the query as text to the millisecond; the order and the cursor must both
    // use the stored microseconds, or a page repeats one and loses the other. The ids are ordered
    // against the instants, so a tie broken by id shows.
    const later = 'ffffffff-ffff-4fff-bfff-ffffffffffff';
    const earlier = '00000000-0000-4000-8000-000000000001';
    await db.pool.query(
      `INSERT INTO expenses (id, user_id, date, amount, category, description, payment_method, created_at)
       VALUES ($1, 'same-ms', '2025-05-03', 1, 'food', 'later', 'cash', '2025-05-03T10:00:00.000200Z'),
              ($2, 'same-ms', '2025-05-03', 1, 'food', 'earlier', 'cash', '2025-05-03T10:00:00.000100Z')`,
      [later, earlier],
    );
    const all = await repo.list('same-ms');
    assert.deepEqual(
      all.expenses.map((e) => [e.id, e.created_at]),
      [
        [later, '2025-05-03T10:00:00.000Z'],
        [earlier, '2025-05-03T10:00:00.000Z'],
      ],
    );
    const first = await repo.list('same-ms', { limit: 1 });
    assert.deepEqual(
      first.expenses.map((e) => e.id),
      [later],
    );
    const second = await repo.list('same-ms', { limit: 1, cursor: first.nextCursor as string });
    assert.deepEqual([second.expenses.map((e) => e.id), second.nextCursor], [[earlier], undefined]);
  });

  test('the page after a cursor comes even when the expense it ended on was deleted meanwhile', async () => {
    // Page through and delete as you go (duplicates, say): the cursor is a place, not a row.
    for (const date of ['2025-07-04', '2025-07-03', '2025-07-02', '2025-07-01']) {
      await repo.add('tidier', expense({ date }));
    }
    const first = await repo.list('tidier', { limit: 2 });
    assert.deepEqual(
      first.expenses.map((e) => e.date),
      ['2025-07-04', '2025-07-03'],
    );
    await repo.delete('tidier', first.expenses[1]?.id as string);
    const second = await repo.list('tidier', { limit: 2, cursor: first.nextCursor as string });
    assert.deepEqual(
      [second.expenses.map((e) => e.date), second.nextCursor],
      [['2025-07-02', '2025-07-01'], undefined],
    );
  });

  test("a cursor list() did not make is refused, nothing listed; another user's pages the caller's own only", async () => {
    const mine = await repo.add('cursor-owner', expense({ date: '2025-03-02' }));
    await repo.add('cursor-owner', expense({ date: '2025-03-01' }));
    const made = (await repo.list('cursor-owner', { limit: 1 })).nextCursor as string;
    const text = Buffer.from(made, 'base64url').toString();
    const spell = (value: string) => Buffer.from(value).toString('base64url');
    for (const cursor of [
      mine.id, // an id, as cursors were before
      '',
      `${made}x`,
      `${made.slice(0, 20)}*${made.slice(20)}`, // a character base64 decoding skips: the same text
      spell(text.replace(/^\d+/, '2145042907')), // a day after PostgreSQL's last date and infinity
      spell(text.replace(/^\d+/, '-2440590')), // and one before its first and -infinity
      spell(text.replace(/^\d+/, (day) => `0${day}`)), // another spelling of the day
      spell(text.replace(/^\d+/, '2025-03-02')), // a date, as cursors were before
      spell(text.replace(/T\d{2}/, 'T25')), // no such hour
      spell(text.replace(/\|\d{4}/, '|0000')), // no year 0 in PostgreSQL
      spell(text.replace(/\|[0-9a-f-]{36}\|/, '|not-a-uuid|')),
      spell(`${text}|more`),
      spell(text.replace(/\|[A-Za-z0-9_-]{8}$/, '')), // without its listing's filters, as cursors were before
    ]) {
      await assert.rejects(repo.list('cursor-owner', { cursor }), { name: 'InvalidCursorError' }, cursor);
    }
    // Dates tools refuse but PostgreSQL has (a row written with psql): the cursor after it is taken.
    // Before Christ (its text drops the BC), past year 9999 (five digits) and infinite too.
    for (const date of [
      '2101-01-01',
      '1969-12-31',
      '12000-01-01',
      '0044-03-15 BC',
      '0100-01-01 BC',
      '0005-01-01',
      'infinity',
      '-infinity',
    ]) {
      await db.pool.query(
        `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
         VALUES ('cursor-psql', $1::date, 1, 'food', $1::text, 'cash')`,
        [date],
      );
    }
    await repo.add('cursor-psql', expense({ date: '2025-03-01', description: 'added' }));
    const pages: string[][] = [];
    let next: string | undefined;
    do {
      const page = await repo.list('cursor-psql', { limit: 1, ...(next ? { cursor: next } : {}) });
      pages.push(page.expenses.map((e) => e.description));
      next = page.nextCursor;
    } while (next && pages.length < 20);
    assert.deepEqual(pages, [
      ['infinity'],
      ['12000-01-01'],
      ['2101-01-01'],
      ['added'],
      ['1969-12-31'],
      ['0005-01-01'],
      ['0044-03-15 BC'],
      ['0100-01-01 BC'],
      ['-infinity'],
    ]);
    // Her cursor is a place in his own list: he gets his own expenses older than it, nothing of hers.
    await repo.add('cursor-other', expense({ date: '2025-03-05' }));
    await repo.add('cursor-other', expense({ date: '2025-02-01' }));
    const theirs = await repo.list('cursor-other', { cursor: made });
    assert.deepEqual(
      theirs.expenses.map((e) => e.date),
      ['2025-02-01'],
    );
  });

  test('the database refuses what validation should already have stopped', async () => {
    await assert.rejects(repo.add('u', expense({ amount: -1 })), /check constraint/);
    await assert.rejects(repo.add('u', expense({ category: 'rent' as never })), /check constraint/);
    await assert.rejects(repo.add('u', expense({ description: '' })), /check constraint/);
    assert.equal((await repo.list('u')).expenses.length, 0);
  });

  test('a user holds at most maxExpensesPerUser: the add past it stores nothing, a delete makes room, other users are not held back', async () => {
    assert.equal(repo.maxExpensesPerUser, DEFAULT_MAX_EXPENSES_PER_USER);
    const small = new ExpenseRepository(db.pool, { maxExpensesPerUser: 3 });
    const kept = [];
    for (let i = 1; i <= 3; i++) kept.push(await small.add('capped', expense({ description: `kept ${i}` })));
    await assert.rejects(small.add('capped', expense({ description: 'one too many' })), (error: unknown) => {
      assert.ok(error instanceof ExpenseLimitError);
      assert.equal(error.maxExpensesPerUser, 3);
      assert.match(
        error.message,
        /^You have reached the limit of 3 expenses this server keeps for one user: nothing was added\./,
      );
      return true;
    });
    await assert.rejects(small.addOnce('capped', expense({ description: 'keyed' }), 'new-key'), ExpenseLimitError);
    const listed = await small.list('capped');
    assert.deepEqual(listed.expenses.map((row) => row.description).sort(), ['kept 1', 'kept 2', 'kept 3']);
    // Another user, through the same repository, is not held back by the first one's count.
    await small.add('capped-neighbour', expense());
    // A delete makes room for exactly one more.
    assert.ok(await small.delete('capped', kept[0]?.id as string));
    await small.add('capped', expense({ description: 'after the delete' }));
    await assert.rejects(small.add('capped', expense()), ExpenseLimitError);
    // A repository with a higher limit (another server's setting) adds past this one's.
    await new ExpenseRepository(db.pool, { maxExpensesPerUser: 4 }).add('capped', expense({ description: 'fourth' }));
    assert.equal((await small.summary('capped')).count, 4);
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new ExpenseRepository(db.pool, { maxExpensesPerUser: limit }), RangeError);
    }
  });

  test('racing adds, from two pools at once (two processes), pass the limit by less than EXPENSE_COUNT_SLOTS, and the count stays right', async () => {
    const second = await openDatabase({ url: testDb.url });
    try {
      const repositories = [db.pool, second.pool].map((pool) => new ExpenseRepository(pool, { maxExpensesPerUser: 5 }));
      const outcomes = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) => repositories[i % 2]?.add('racing', expense({ description: `race ${i}` }))),
      );
      const refused = outcomes.filter((outcome) => outcome.status === 'rejected');
      for (const outcome of refused) assert.ok(outcome.reason instanceof ExpenseLimitError, String(outcome.reason));
      const stored = outcomes.length - refused.length;
      assert.ok(stored >= 5 && stored <= 5 + EXPENSE_COUNT_SLOTS - 1, `${stored} stored`);
      const { rows } = await db.pool.query(
        `SELECT (SELECT count(*) FROM expenses WHERE user_id = 'racing')::int AS stored,
                (SELECT sum(expenses) FROM expense_counts WHERE user_id = 'racing')::int AS counted`,
      );
      assert.deepEqual(rows[0], { stored, counted: stored });
      // One after another, the limit is exact: nothing more until the user is under it again.
      await assert.rejects(repositories[0]?.add('racing', expense()) as Promise<unknown>, ExpenseLimitError);
    } finally {
      await second.close();
    }
  });

  test("one user's adds and deletes at once all succeed when the database's default isolation is REPEATABLE READ or SERIALIZABLE", async () => {
    // SERIALIZABLE refuses more (every add reads the counts the others write): a user's adds
    // at once are a handful there, as a person's or an agent's are.
    for (const [isolation, connections, adds] of [
      ['repeatable read', 20, 60],
      ['serializable', 5, 20],
    ] as const) {
      const other = await createTestDatabase();
      const admin = await openDatabase({ url: other.url });
      await admin.pool.query(
        `ALTER DATABASE "${new URL(other.url).pathname.slice(1)}" SET default_transaction_isolation = '${isolation}'`,
      );
      await admin.close();
      const local = await openDatabase({ url: other.url, maxConnections: connections });
      try {
        await migrate(local.pool, EXPENSES_NAMESPACE, expensesMigrations);
        const strict = new ExpenseRepository(local.pool);
        const added = await Promise.all(
          Array.from({ length: adds }, (_, i) => strict.add('busy', expense({ description: `busy ${i}` }))),
        );
        const deleted = await Promise.all(added.slice(0, adds / 2).map((row) => strict.delete('busy', row.id)));
        assert.equal(deleted.filter(Boolean).length, adds / 2, isolation);
        const { rows } = await local.pool.query(
          `SELECT (SELECT count(*) FROM expenses)::int AS stored, (SELECT sum(expenses) FROM expense_counts)::int AS counted`,
        );
        assert.deepEqual(rows[0], { stored: adds / 2, counted: adds / 2 }, isolation);
      } finally {
        await local.close();
        await other.drop();
      }
    }
  });

  test('at the limit, a retry of an expense that was stored is replayed; a conflict is still named', async () => {
    const small = new ExpenseRepository(db.pool, { maxExpensesPerUser: 1 });
    const first = await small.addOnce('replayed', expense({ description: 'once' }), 'key-1');
    assert.ok('expense' in first && !first.replayed);
    const retry = await small.addOnce('replayed', expense({ description: 'once' }), 'key-1');
    assert.ok('expense' in retry && retry.replayed);
    assert.equal(retry.expense.id, first.expense.id);
    const conflict = await small.addOnce('replayed', expense({ description: 'other' }), 'key-1');
    assert.ok('conflict' in conflict);
    await assert.rejects(small.addOnce('replayed', expense(), 'key-2'), ExpenseLimitError);
  });

  test("the counts follow every writer (bulk inserts, deletes, updates that move rows, TRUNCATE); an operator's SQL is counted, not limited", async () => {
    const other = await createTestDatabase();
    const local = await openDatabase({ url: other.url });
    const count = async (user: string) =>
      (await local.pool.query('SELECT sum(expenses)::text AS n FROM expense_counts WHERE user_id = $1', [user])).rows[0]
        ?.n;
    const insert = (user: string, rows: number) =>
      local.pool.query(
        `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
         SELECT $1, '2025-01-01', 1, 'food', 'x', 'cash' FROM generate_series(1, $2::int)`,
        [user, rows],
      );
    try {
      // Rows stored before the counts existed are counted when they are made.
      await migrate(local.pool, EXPENSES_NAMESPACE, expensesMigrations.slice(0, 2));
      await insert('before', 7);
      await migrate(local.pool, EXPENSES_NAMESPACE, expensesMigrations);
      assert.equal(await count('before'), '7');
      const small = new ExpenseRepository(local.pool, { maxExpensesPerUser: 8 });
      await small.add('before', expense());
      await assert.rejects(small.add('before', expense()), ExpenseLimitError);

      // SQL that does not set the limit (an operator's, a bulk import) is counted, not limited.
      await insert('bulk', 20);
      assert.equal(await count('bulk'), '20');
      await assert.rejects(small.add('bulk', expense()), ExpenseLimitError);
      await local.pool.query(
        `DELETE FROM expenses WHERE id IN (SELECT id FROM expenses WHERE user_id = 'bulk' LIMIT 13)`,
      );
      assert.equal(await count('bulk'), '7');
      await small.add('bulk', expense({ description: 'stays' }));
      // Rows moved to another user move their count; an update that moves nothing changes none.
      await local.pool.query(`UPDATE expenses SET user_id = 'moved' WHERE user_id = 'bulk' AND description = 'x'`);
      assert.deepEqual([await count('bulk'), await count('moved')], ['1', '7']);
      await local.pool.query(`UPDATE expenses SET description = 'renamed' WHERE user_id = 'moved'`);
      assert.deepEqual([await count('bulk'), await count('moved')], ['1', '7']);
      // The stored counts are what counting the rows gives.
      const { rows: drift } = await local.pool.query(
        `SELECT user_id FROM (SELECT user_id, count(*) AS stored FROM expenses GROUP BY user_id) AS actual
         FULL JOIN (SELECT user_id, sum(expenses) AS expenses FROM expense_counts GROUP BY user_id) AS counted
           USING (user_id)
         WHERE coalesce(stored, 0) <> coalesce(expenses, 0)`,
      );
      assert.deepEqual(drift, []);
      // A counted row lost by hand never makes a delete fail.
      await local.pool.query(`DELETE FROM expense_counts WHERE user_id = 'moved'`);
      await local.pool.query(`DELETE FROM expenses WHERE user_id = 'moved'`);
      await local.pool.query('TRUNCATE expenses');
      assert.equal((await local.pool.query('SELECT count(*)::int AS n FROM expense_counts')).rows[0].n, 0);
      await small.add('before', expense());
      assert.equal(await count('before'), '1');
    } finally {
      await local.close();
      await other.drop();
    }
  });

  test("the listing's own query reads the index in its order and sorts nothing, with a cursor or without", async () => {
    // list()'s SQL as it is sent, caught by a pool that answers no rows, then EXPLAINed as sent.
    const sent: { text: string; values: unknown[] }[] = [];
    const catching = {
      query: async (config: { text: string; values: unknown[] }) => {
        sent.push(config);
        return { rows: [] };
      },
    };
    const probe = new ExpenseRepository(catching as unknown as pg.Pool);
    await probe.list('sum', { limit: 10 });
    // A cursor list() made: one of a listing with no filters, as the probe's.
    await repo.add('explained', expense({ date: '2025-05-02' }));
    await repo.add('explained', expense({ date: '2025-05-01' }));
    const cursor = (await repo.list('explained', { limit: 1 })).nextCursor as string;
    await probe.list('sum', { limit: 10, cursor });
    const client = await db.pool.connect();
    try {
      // The test's table is small: PostgreSQL would rather read it whole and sort. Ask for the
      // index's order where it can be had; the old order (the select list's text) could not.
      for (const setting of ['enable_seqscan', 'enable_bitmapscan', 'enable_sort']) {
        await client.query(`SET ${setting} = off`);
      }
      for (const query of [sent[0], sent[1]]) {
        assert.ok(query);
        const { rows } = await client.query({ text: `EXPLAIN ${query.text}`, values: query.values });
        const plan = rows.map((row) => row['QUERY PLAN']).join('\n');
        assert.match(plan, /Index Scan using expenses_user_date_idx/, plan);
        // An order the index does not give (the select list's text, before) makes a Sort node.
        assert.doesNotMatch(plan, /Sort/, plan);
      }
    } finally {
      await client.query('RESET ALL');
      client.release();
    }
  });
});

describe('input schemas', () => {
  test('calendar dates', () => {
    for (const good of ['2024-02-29', '2025-12-31', '1970-01-01'])
      assert.ok(calendarDate.safeParse(good).success, good);
    for (const bad of [
      '2025-02-29',
      '2025-13-01',
      '2025-04-31',
      '2025-1-1',
      '20250101',
      '1969-12-31',
      '2101-01-01',
      '',
    ])
      assert.equal(calendarDate.safeParse(bad).success, false, bad);
    // A real date out of range says so (Date.UTC reads year 99 as 1999), and a year that is no
    // leap year has no February 29 even before 100.
    const early = calendarDate.safeParse('0099-01-01');
    assert.deepEqual(
      early.error?.issues.map((issue) => issue.message),
      ['must be between 1970-01-01 and 2100-12-31'],
    );
    // Year 0 is a leap year in the proleptic Gregorian calendar.
    assert.deepEqual(
      calendarDate.safeParse('0000-02-29').error?.issues.map((issue) => issue.message),
      ['must be between 1970-01-01 and 2100-12-31'],
    );
    // One problem told, the first: what follows a failed check is not checked.
    const told = (value: string) => calendarDate.safeParse(value).error?.issues.map((issue) => issue.message);
    assert.deepEqual(told('0097-02-29'), ['must be a real calendar date']);
    assert.deepEqual(told('2024-02-29T00:00:00Z'), ['must be a date written YYYY-MM-DD']);
    assert.deepEqual(told('２０２４-01-01'), ['must be a date written YYYY-MM-DD']);
  });
  test('amounts', () => {
    for (const good of [0.01, 1, 19.9, 0.29, 1_000_000]) assert.ok(amount.safeParse(good).success, String(good));
    for (const bad of [0, -1, 0.001, 1.005, 1_000_000.01, Number.NaN, Number.POSITIVE_INFINITY, 1e21])
      assert.equal(amount.safeParse(bad).success, false, String(bad));
  });
});
