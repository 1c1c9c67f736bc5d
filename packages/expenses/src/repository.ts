import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import {
  amountText,
  type Category,
  DEFAULT_MAX_EXPENSES_PER_USER,
  EXPENSE_LIMIT_SQLSTATE,
  type Expense,
  type ExpenseFilter,
  type ExpensePage,
  groupThousands,
  isCalendarDate,
  MAX_EXPENSES_SETTING,
  MAX_LIST_LIMIT,
  type NewExpense,
  type SpendingSummary,
  type UsageStats,
} from './model.ts';

// Dates and timestamps leave Postgres as text so no time zone ever shifts them.
// The date spelled out: `date::text` follows the session's DateStyle (`SQL, DMY` gives 01/03/2025).
const COLUMNS = `id, to_char(date, 'YYYY-MM-DD') AS date, amount::text AS amount, category, description, payment_method,
  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at`;

export const DEFAULT_LIST_LIMIT = 50;

export interface ExpenseRepositoryOptions {
  /**
   * How many expenses one user may hold (default `DEFAULT_MAX_EXPENSES_PER_USER`): an add past
   * it is an `ExpenseLimitError` and stores nothing. Enforced by the database (migration 3's
   * trigger) for every process: exactly for adds one after another; adds that race at the limit
   * can pass it by `EXPENSE_COUNT_SLOTS` - 1 at most.
   */
  maxExpensesPerUser?: number;
}

/**
 * The columns of an insert, and the limit for the counting trigger set for this statement
 * only (`set_config(…, true)`: the statement is its own transaction): one round trip, and no
 * setting left on a pooled connection. The values are cast: in `INSERT … SELECT` PostgreSQL
 * does not take their types from the columns.
 */
const INSERT_WITH_LIMIT = `WITH expense_limit AS (SELECT set_config('${MAX_EXPENSES_SETTING}', $1::text, true))
  INSERT INTO expenses (user_id, date, amount, category, description, payment_method, idempotency_key)
  SELECT $2::text, $3::date, $4::numeric, $5::text, $6::text, $7::text, $8::text FROM expense_limit`;

const SERIALIZATION_FAILURE = '40001';
/**
 * Tries of a write refused for a concurrent update. Under SERIALIZABLE every add of a user reads
 * the counts the others write: 20 of one user's adds at once over 5 connections took 3 tries at
 * most here; 60 at once over 20 connections sometimes ran out of 10.
 */
const WRITE_ATTEMPTS = 10;

/** Every method takes the user id first: no query here can reach another user's rows. */
export class ExpenseRepository {
  readonly #pool: pg.Pool;
  readonly maxExpensesPerUser: number;

  constructor(pool: pg.Pool, options: ExpenseRepositoryOptions = {}) {
    this.#pool = pool;
    this.maxExpensesPerUser = options.maxExpensesPerUser ?? DEFAULT_MAX_EXPENSES_PER_USER;
    if (!Number.isSafeInteger(this.maxExpensesPerUser) || this.maxExpensesPerUser < 1) {
      throw new RangeError(`maxExpensesPerUser must be a whole number of at least 1, got ${this.maxExpensesPerUser}`);
    }
  }

  /** Adds the expense; an `ExpenseLimitError` when the user already holds the most they may. */
  async add(userId: string, input: NewExpense): Promise<Expense> {
    const { rows } = await this.#insert<Expense>(`${INSERT_WITH_LIMIT} RETURNING ${COLUMNS}`, userId, input, null);
    return rows[0] as Expense;
  }

  /**
   * Adds the expense unless this user already added one under `key`: then that one is
   * returned (`replayed`), or, when its content differs, `conflict` names it and nothing is
   * stored. Concurrent calls with one key store one row (the unique index decides). A retry of
   * an expense that was stored is replayed even when the user is at the limit.
   */
  async addOnce(
    userId: string,
    input: NewExpense,
    key: string,
  ): Promise<{ expense: Expense; replayed: boolean } | { conflict: Expense }> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const inserted = await this.#insert<Expense>(
        `${INSERT_WITH_LIMIT}
         ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING ${COLUMNS}`,
        userId,
        input,
        key,
      );
      if (inserted.rows[0]) return { expense: inserted.rows[0], replayed: false };
      const existing = await this.#pool.query<Expense & { same: boolean }>({
        text: `SELECT ${COLUMNS},
                 (date = $2::date AND amount = $3::numeric AND category = $4 AND description = $5
                  AND payment_method = $6) AS same
               FROM expenses WHERE user_id = $1 AND idempotency_key = $7`,
        values: [...expenseValues(userId, input), key],
      });
      const row = existing.rows[0];
      // Deleted between the two statements: try the insert once more.
      if (!row) continue;
      const { same, ...expense } = row;
      return same ? { expense, replayed: true } : { conflict: expense };
    }
    throw new Error('The expense under this idempotency key changed twice while it was being added.');
  }

  /**
   * A statement that changes expenses, run again when PostgreSQL refused it for a concurrent
   * update (SQLSTATE 40001). Each one also updates its user's count (migration 3), a row that
   * another of the user's writes may hold: under READ COMMITTED, PostgreSQL's default, the
   * second waits; under REPEATABLE READ or SERIALIZABLE (a database's
   * `default_transaction_isolation`) it is refused, having changed nothing, and is tried again.
   */
  async #write<Row extends pg.QueryResultRow>(query: {
    text: string;
    values: unknown[];
  }): Promise<pg.QueryResult<Row>> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#pool.query<Row>(query);
      } catch (error) {
        if ((error as { code?: unknown }).code !== SERIALIZATION_FAILURE || attempt === WRITE_ATTEMPTS) throw error;
      }
      // Apart in time, so the writes that clashed do not clash again.
      await sleep(Math.random() * 5 * attempt);
    }
  }

  async #insert<Row extends pg.QueryResultRow>(
    text: string,
    userId: string,
    input: NewExpense,
    key: string | null,
  ): Promise<pg.QueryResult<Row>> {
    try {
      return await this.#write<Row>({
        text,
        values: [String(this.maxExpensesPerUser), ...expenseValues(userId, input), key],
      });
    } catch (error) {
      if ((error as { code?: unknown }).code === EXPENSE_LIMIT_SQLSTATE) {
        throw new ExpenseLimitError(this.maxExpensesPerUser, userId);
      }
      throw error;
    }
  }

  /**
   * The user's expenses, newest first, a page of at most `limit`; `nextCursor` when more match,
   * which `cursor` continues from (keyset: what is added or deleted meanwhile moves no other row
   * between pages). The cursor is the last expense's place in the order (its date, stored instant
   * and id), not its id alone, so the page after it still comes when that expense was deleted
   * meanwhile. A cursor this method did not make is an `InvalidCursorError`, and so is one made
   * under other filters (its place would skip, unsaid, what those filters left out); one made for
   * another user pages through the caller's own expenses only, as every query here.
   */
  async list(userId: string, filter: ExpenseFilter = {}): Promise<ExpensePage> {
    const limit = Math.min(filter.limit ?? DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT);
    const filters = filtersOf(filter);
    const after = filter.cursor === undefined ? undefined : decodeCursor(filter.cursor);
    if (after === null) throw new InvalidCursorError();
    if (after !== undefined && after.filters !== filters) throw new InvalidCursorError(OTHER_FILTERS);
    // One row more than the page tells whether more match. After the cursor in this order: an
    // earlier (date, created_at), both descending, or the same and a greater id (`date <=` makes
    // the index's range start at the cursor's date). ORDER BY names the table's columns: bare
    // `date` and `created_at` would be the select list's text (to the millisecond), an order
    // neither the index nor the cursor's comparison follows (two expenses within one
    // millisecond came back in id order, and a page repeated one), and which made PostgreSQL
    // read and sort all the user's rows. For the cursor: `day`, the date as days since
    // 1970-01-01 (exact for every date PostgreSQL has; the text drops a BC, and a cursor naming
    // AD 44 for 44 BC would start the next page above it again), and `place`, the stored instant
    // to the microsecond.
    const { rows } = await this.#pool.query<Expense & { day: number; place: string }>({
      text: `SELECT ${COLUMNS}, ${DAY_OF_DATE} AS day,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS place
             FROM expenses
             WHERE user_id = $1
               AND ($2::date IS NULL OR date >= $2::date)
               AND ($3::date IS NULL OR date <= $3::date)
               AND ($4::text IS NULL OR category = $4::text)
               AND ($6::int IS NULL OR date <= ${DATE_OF_DAY})
               AND ($6::int IS NULL
                 OR (date, created_at) < (${DATE_OF_DAY}, $7::timestamptz)
                 OR ((date, created_at) = (${DATE_OF_DAY}, $7::timestamptz) AND id > $8::uuid))
             ORDER BY expenses.date DESC, expenses.created_at DESC, expenses.id
             LIMIT $5`,
      values: [
        userId,
        filter.start_date ?? null,
        filter.end_date ?? null,
        filter.category ?? null,
        limit + 1,
        after?.day ?? null,
        after?.place ?? null,
        after?.id ?? null,
      ],
    });
    const expenses: Expense[] = [];
    for (const { day: _day, place: _place, ...expense } of rows.slice(0, limit)) expenses.push(expense);
    const last = rows.length > limit ? rows[limit - 1] : undefined;
    return {
      expenses,
      nextCursor: last && encodeCursor({ day: last.day, place: last.place, id: last.id, filters }),
    };
  }

  /** Deletes one of the user's own expenses; another user's id behaves exactly like an unknown one. */
  async delete(userId: string, id: string): Promise<Expense | undefined> {
    const { rows } = await this.#write<Expense>({
      text: `DELETE FROM expenses WHERE user_id = $1 AND id = $2 RETURNING ${COLUMNS}`,
      values: [userId, id],
    });
    return rows[0];
  }

  async summary(userId: string, range: Pick<ExpenseFilter, 'start_date' | 'end_date'> = {}): Promise<SpendingSummary> {
    const { rows } = await this.#pool.query<{
      category: Category | null;
      month: string | null;
      total: string;
      count: number;
    }>({
      // One pass: GROUPING SETS gives the grand total, per category and per month together.
      // sum() of numeric(12, 2) keeps two decimals and has no upper bound: no cast that could overflow.
      text: `SELECT category, to_char(date, 'YYYY-MM') AS month,
                    sum(amount)::text AS total, count(*)::int AS count
             FROM expenses
             WHERE user_id = $1
               AND ($2::date IS NULL OR date >= $2::date)
               AND ($3::date IS NULL OR date <= $3::date)
             GROUP BY GROUPING SETS ((), (category), (to_char(date, 'YYYY-MM')))
             ORDER BY month NULLS FIRST, sum(amount) DESC NULLS LAST, category`,
      values: [userId, range.start_date ?? null, range.end_date ?? null],
    });
    const summary: SpendingSummary = { total: '0.00', count: 0, by_category: [], by_month: [] };
    for (const row of rows) {
      if (row.category === null && row.month === null) {
        if (row.count > 0) summary.total = row.total;
        summary.count = row.count;
      } else if (row.category !== null) {
        summary.by_category.push({ category: row.category, total: row.total, count: row.count });
      } else if (row.month !== null) {
        summary.by_month.push({ month: row.month, total: row.total, count: row.count });
      }
    }
    return summary;
  }

  /** Across all users, for administrators: per-category counts, totals and distinct users. */
  async stats(range: Pick<ExpenseFilter, 'start_date' | 'end_date'> = {}): Promise<UsageStats> {
    const { rows } = await this.#pool.query<{ category: Category | null; total: string; count: number; users: number }>(
      `SELECT category, sum(amount)::text AS total, count(*)::int AS count,
              count(DISTINCT user_id)::int AS users
       FROM expenses
       WHERE ($1::date IS NULL OR date >= $1::date) AND ($2::date IS NULL OR date <= $2::date)
       GROUP BY GROUPING SETS ((), (category))
       ORDER BY category NULLS FIRST`,
      [range.start_date ?? null, range.end_date ?? null],
    );
    const stats: UsageStats = { total: '0.00', count: 0, users: 0, by_category: [] };
    for (const row of rows) {
      if (row.category === null) {
        if (row.count > 0) stats.total = row.total;
        stats.count = row.count;
        stats.users = row.users;
      } else {
        stats.by_category.push({ category: row.category, total: row.total, count: row.count, users: row.users });
      }
    }
    return stats;
  }
}

/** An expense's columns as statement values, in the order of the table's columns. */
function expenseValues(userId: string, input: NewExpense): string[] {
  return [userId, input.date, amountText(input.amount), input.category, input.description, input.payment_method];
}

/** An add refused because the user already holds `maxExpensesPerUser` expenses: nothing was stored. */
export class ExpenseLimitError extends Error {
  readonly maxExpensesPerUser: number;
  /** Whose add it was (for the operator's log; the message does not name it). */
  readonly userId: string;

  constructor(maxExpensesPerUser: number, userId: string) {
    super(
      `You have reached the limit of ${groupThousands(maxExpensesPerUser)} ${maxExpensesPerUser === 1 ? 'expense' : 'expenses'} this server keeps for one user: nothing was added. Delete expenses you no longer need (delete_user_expense) to add new ones.`,
    );
    this.name = 'ExpenseLimitError';
    this.maxExpensesPerUser = maxExpensesPerUser;
    this.userId = userId;
  }
}

/** A listing's cursor that `list` did not make (altered, cut short, or something else). */
export class InvalidCursorError extends Error {
  constructor(message = 'The cursor is not one a listing gave (the next_cursor of a page): list again without it.') {
    super(message);
    this.name = 'InvalidCursorError';
  }
}

const OTHER_FILTERS =
  'The cursor is from a listing with other filters (start_date, end_date, category): continue with the filters of that listing, or list again without the cursor.';

interface CursorPlace {
  /** The expense's date, as days since 1970-01-01 (negative before it). */
  day: number;
  /** `created_at` to the microsecond, in UTC. */
  place: string;
  id: string;
  /** The listing's filters (`filtersOf`): a page after this place is the same listing's only. */
  filters: string;
}

/**
 * The filters a listing ran with, in a few characters: a cursor names them, so that it continues
 * only the listing that made it (not `limit`, which may change from page to page).
 */
function filtersOf(filter: ExpenseFilter): string {
  const text = `${filter.start_date ?? ''}|${filter.end_date ?? ''}|${filter.category ?? ''}`;
  return createHash('sha256').update(text).digest('base64url').slice(0, 8);
}

const CURSOR_TEXT =
  /^(-?\d{1,10})\|(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z)\|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\|([A-Za-z0-9_-]{8})$/;

function encodeCursor(cursor: CursorPlace): string {
  return Buffer.from(`${cursor.day}|${cursor.place}|${cursor.id}|${cursor.filters}`).toString('base64url');
}

/**
 * The days since 1970-01-01 of PostgreSQL's first and last dates (4714-11-24 BC, 5874897-12-31),
 * and one more on each side for `-infinity` and `infinity`, which a date column also takes.
 */
const FIRST_DAY = -2_440_588 - 1;
const LAST_DAY = 2_145_042_905 + 1;
/** A row's date as its cursor's day (`infinity` has no difference from 1970-01-01 to take). */
const DAY_OF_DATE = `CASE expenses.date WHEN 'infinity' THEN ${LAST_DAY} WHEN '-infinity' THEN ${FIRST_DAY}
  ELSE expenses.date - DATE '1970-01-01' END`;
/** The cursor's day ($6) as a date again; with the parameter known, the planner folds it to one. */
const DATE_OF_DAY = `(CASE $6::int WHEN ${LAST_DAY} THEN 'infinity'::date WHEN ${FIRST_DAY} THEN '-infinity'::date
  ELSE DATE '1970-01-01' + $6::int END)`;

/** The place a cursor names, or null when `list` did not make it (checked before SQL sees it). */
function decodeCursor(cursor: string): CursorPlace | null {
  const match = CURSOR_TEXT.exec(Buffer.from(cursor, 'base64url').toString('latin1'));
  if (!match) return null;
  const [, dayText, place, id, filters] = match as unknown as [string, string, string, string, string];
  const day = Number(dayText);
  // Base64 decoding skips what is not base64, and "-0" or "007" are other spellings of a day:
  // only the cursor's own spelling is taken.
  if (encodeCursor({ day, place, id, filters }) !== cursor) return null;
  // A date or instant that does not exist would be PostgreSQL's error, not the caller's: the day
  // is one PostgreSQL has (not only the years tools take: a row written by other means, psql or
  // an import, ends a page too, and the cursor after it must be taken back); the instant's day
  // is a real one (no year 0, which JavaScript's dates take), and its time exists.
  if (day < FIRST_DAY || day > LAST_DAY) return null;
  if (!isCalendarDate(place.slice(0, 10)) || place.startsWith('0000')) return null;
  const instant = new Date(`${place.slice(0, 23)}Z`);
  if (Number.isNaN(instant.getTime()) || instant.toISOString().slice(0, 23) !== place.slice(0, 23)) return null;
  return { day, place, id, filters };
}
