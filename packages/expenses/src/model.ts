import { misleadingTextProblem } from '@mcp-auth-stack/auth';
import { z } from 'zod';

export const CATEGORIES = ['food', 'transport', 'entertainment', 'shopping', 'gadget', 'other'] as const;
export const PAYMENT_METHODS = ['amex', 'visa', 'cash'] as const;
export type Category = (typeof CATEGORIES)[number];
export type PaymentMethod = (typeof PAYMENT_METHODS)[number];

/** Largest amount one expense may carry; numeric(12,2) holds more, a typo should not fit. */
export const MAX_AMOUNT = 1_000_000;
export const MAX_DESCRIPTION_LENGTH = 500;
export const MAX_LIST_LIMIT = 200;
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/**
 * How many expenses one user may hold unless the repository is given another limit: about 27 a
 * day for a year. One user's rows then take about 3 MB, 39 MB when every row is as large as the
 * schema allows (measured), so one credential cannot fill the database's disk.
 */
export const DEFAULT_MAX_EXPENSES_PER_USER = 10_000;
/**
 * A whole number with commas between thousands (10000 → "10,000"). Not `toLocaleString`: its
 * first call loads ICU's number data: 5-8 MB more resident memory for the whole run (measured).
 */
export function groupThousands(value: number): string {
  return String(value).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}
/** The setting through which an insert tells the counting trigger its limit (migration 3). */
export const MAX_EXPENSES_SETTING = 'expenses.max_per_user';
/**
 * How many rows a user's count is kept in (migration 3), one per slot of a database connection
 * (`pg_backend_pid() % 16`): adds from connections on different slots do not wait for each
 * other, and racing adds can pass the limit by one less than this at most.
 */
export const EXPENSE_COUNT_SLOTS = 16;
/** What the counting trigger raises when an insert would pass the limit (a class of its own). */
export const EXPENSE_LIMIT_SQLSTATE = 'EX001';
const EARLIEST_DATE = '1970-01-01';
const LATEST_DATE = '2100-12-31';
/** The days a date argument may name, as tool descriptions state them. */
export const DATE_RANGE = `${EARLIEST_DATE} to ${LATEST_DATE}`;

/**
 * A real calendar date written YYYY-MM-DD (2025-02-29 is not one). Each check stops the ones
 * after it: a timestamp is told its form is wrong, not also that it is no calendar date.
 */
export const calendarDate = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, { message: 'must be a date written YYYY-MM-DD', abort: true })
  .refine(isCalendarDate, { message: 'must be a real calendar date', abort: true })
  .refine(
    (value) => value >= EARLIEST_DATE && value <= LATEST_DATE,
    `must be between ${EARLIEST_DATE} and ${LATEST_DATE}`,
  );

// The C0 and C1 controls (\p{Cc}) spelled as a range: the pattern is published in the tool's
// input schema, and `\P{Cc}` means something only to a regex engine in Unicode mode.
// biome-ignore lint/suspicious/noControlCharactersInRegex: the controls are what it refuses.
const CONTROLS_ONLY_ABSENT = /^[^\u0000-\u001f\u007f-\u009f]*$/;

/**
 * What was bought: one line a person wrote, without control characters (Postgres text refuses
 * NUL) or characters that would make it read as something else, and with something to see
 * (`misleadingTextProblem`).
 */
export const expenseDescription = z
  .string()
  .trim()
  .min(1)
  .max(MAX_DESCRIPTION_LENGTH)
  .regex(CONTROLS_ONLY_ABSENT, 'must not contain control characters')
  .superRefine((text, context) => {
    // Controls are the pattern's to name; told twice, the caller would count two problems.
    if (!CONTROLS_ONLY_ABSENT.test(text)) return;
    const problem = misleadingTextProblem(text);
    if (problem) context.addIssue({ code: 'custom', message: problem });
  });

/**
 * Money arrives as a JSON number and is kept exact from here on: its shortest decimal form
 * (what JSON carried) must have at most two decimals, and it goes to Postgres as that text.
 */
export const amount = z
  .number()
  .positive('must be greater than 0')
  .max(MAX_AMOUNT, `must be at most ${MAX_AMOUNT}`)
  // Only for an amount in range: -5 or 1e21 (`1e+21`) are not a matter of decimals.
  .refine(
    (value) => !(value > 0 && value <= MAX_AMOUNT) || /^\d+(\.\d{1,2})?$/.test(String(value)),
    'must have at most 2 decimal places',
  );

/**
 * A key the client chooses for one expense (a UUID, say): a retry with the same key returns
 * the expense the first call added instead of adding it again.
 */
export const idempotencyKey = z
  .string()
  .min(1)
  .max(MAX_IDEMPOTENCY_KEY_LENGTH)
  .regex(/^[\x21-\x7E]+$/, 'must be printable ASCII without spaces (a UUID, for example)');

/** Money as Postgres numeric text with two decimals ("20.00"): exact, never a binary float. */
export const money = z.string().regex(/^-?\d+\.\d{2}$/);

export const expense = z.object({
  id: z.string().uuid(),
  date: z.string(),
  amount: money,
  category: z.enum(CATEGORIES),
  description: z.string(),
  payment_method: z.enum(PAYMENT_METHODS),
  created_at: z.string(),
});
export type Expense = z.infer<typeof expense>;

export interface NewExpense {
  date: string;
  amount: number;
  category: Category;
  description: string;
  payment_method: PaymentMethod;
}

export interface ExpenseFilter {
  start_date?: string | undefined;
  end_date?: string | undefined;
  category?: Category | undefined;
  limit?: number | undefined;
  /** The `nextCursor` of the page before: the expenses after that one. */
  cursor?: string | undefined;
}

/** One page of a listing, newest first: `nextCursor` when more expenses match. */
export interface ExpensePage {
  expenses: Expense[];
  nextCursor: string | undefined;
}

export interface SpendingSummary {
  total: string;
  count: number;
  by_category: { category: Category; total: string; count: number }[];
  by_month: { month: string; total: string; count: number }[];
}

export interface UsageStats {
  total: string;
  count: number;
  users: number;
  by_category: { category: Category; total: string; count: number; users: number }[];
}

/** A YYYY-MM-DD that names a day of the proleptic Gregorian calendar (any year JavaScript has). */
export function isCalendarDate(value: string): boolean {
  const [year, month, day] = value.split('-').map(Number);
  if (year === undefined || month === undefined || day === undefined) return false;
  const date = new Date(Date.UTC(year, month - 1, day));
  // Date.UTC reads years 0-99 as 1900-1999: set the year itself, so that 0099-01-01 is a real
  // date (refused by the range, with the range's message).
  date.setUTCFullYear(year, month - 1, day);
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

/** The amount as the exact decimal text JSON carried ("20", "19.9", "0.29"). */
export function amountText(value: number): string {
  return String(value);
}
