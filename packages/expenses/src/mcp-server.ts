import { type Principal, requirePrincipal } from '@mcp-auth-stack/auth';
import { isDatabaseContention, isDatabaseFull, isDatabaseUnavailable } from '@mcp-auth-stack/database';
import { McpServer, type RegisteredTool } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import { type CallToolResult, ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import {
  amount,
  CATEGORIES,
  calendarDate,
  DATE_RANGE,
  type Expense,
  expense,
  expenseDescription,
  groupThousands,
  idempotencyKey,
  MAX_LIST_LIMIT,
  money,
  PAYMENT_METHODS,
  type SpendingSummary,
} from './model.ts';
import { DEFAULT_LIST_LIMIT, ExpenseLimitError, type ExpenseRepository, InvalidCursorError } from './repository.ts';

// Every tool's input is a strict object (`additionalProperties: false` in its JSON Schema): an
// argument the tool does not take (a `category` for the summary, a `user_id`) is a tool error
// naming it, not dropped, so a guessed filter never returns the answer to another question.

/** The optional date range that the list, the summary and the statistics take. */
const dateRangeInput = {
  start_date: calendarDate.optional().describe(`First day to include, YYYY-MM-DD (${DATE_RANGE})`),
  end_date: calendarDate.optional().describe(`Last day to include, YYYY-MM-DD (${DATE_RANGE})`),
};

export interface ExpensesServerOptions {
  name?: string;
  version?: string;
  /**
   * Called with what the database raised when a tool or resource could not reach it. The
   * caller only gets a plain message: a driver's error names hosts, ports and SQL details.
   */
  onStorageError?: (error: unknown, operation: string) => void;
  /**
   * Called when an add was refused because its user holds `maxExpensesPerUser` expenses (for a
   * log: a credential that keeps hitting the limit may be filling the database on purpose).
   */
  onLimitReached?: (error: ExpenseLimitError) => void;
  /** Called when a tool or resource got its answer from the database (an outage's end, for a log). */
  onStorageSuccess?: (operation: string) => void;
  /**
   * Filled with each tool's handle as it is registered, by name: for an endpoint that runs
   * the tools' calls itself (mcp-hono's `directToolCalls`).
   */
  registeredTools?: Map<string, RegisteredTool>;
  /**
   * Whether the SDK checks every tool result's `structuredContent` against the tool's output
   * schema before sending it (default false). That check parses the whole result with zod again
   * (42.6 µs for a page of ten expenses, measured alone on a loaded 2-core machine). This
   * server's results conform by construction: typed rows from fixed SQL over columns with CHECK
   * constraints; test/output-schemas.test.ts checks every tool's result against the published
   * JSON Schema, as clients do. Turn it on while changing a tool.
   */
  validateOutput?: boolean;
}

/**
 * The SDK's per-call output check (McpServer#validateToolOutput, SDK 1.x): replaced by a no-op
 * on this server when `validateOutput` is false. A test fails if the SDK renames it.
 */
export const SDK_OUTPUT_CHECK = 'validateToolOutput';

/** What a caller reads when the database was unreachable, overloaded or too slow: nothing internal. */
export const STORAGE_ERROR_MESSAGE = 'The expenses database did not answer. Try again in a moment.';

/**
 * What a caller reads when the database's disk is full: PostgreSQL refused the statement and
 * rolled it back (SQLSTATE 53100), so nothing changed, and a retry works once space is freed.
 */
export const STORAGE_FULL_MESSAGE =
  'The expenses database is out of disk space: this request was not carried out and nothing was changed. Try again later; the server logs it for its operator.';

/**
 * What a caller reads when the database answered with an error (a bug or a broken schema, not an
 * outage): a retry would fail the same way, so it does not suggest one. Nothing internal either.
 */
export const STORAGE_FAILURE_MESSAGE =
  'The expenses database could not carry out this request because of an error on the server; trying again will not help. The error is logged for the server operator.';

/**
 * What a caller reads when PostgreSQL refused the statement for a concurrent one (a
 * serialization failure or a deadlock, after the repository's own tries): it was rolled back,
 * so nothing changed, and trying again is what helps.
 */
export const STORAGE_BUSY_MESSAGE =
  'The expenses database refused this request because of concurrent changes; nothing was changed. Try again.';

/** What a failed write adds to the message, for an outage and for any other error. */
interface WriteHints {
  unavailable: string;
  failed: string;
}

/**
 * A write that failed on the way back may have been stored: say how to retry without a double;
 * after any other error, say how to find out instead of suggesting a retry.
 */
const ADD_HINTS: WriteHints = {
  unavailable:
    ' The expense may or may not have been added: retry with the same idempotency_key (it will not be added twice), or check get_user_expenses before retrying without one.',
  failed: ' Check get_user_expenses to see whether the expense was added.',
};

const RECENT_RESOURCE_LIMIT = 20;

/** The OAuth scopes of this server's tools (also the API-key scopes `pnpm keys` grants). */
export const EXPENSE_SCOPES = {
  read: 'expenses:read',
  write: 'expenses:write',
  /** Cross-user statistics; Keycloak grants it only to members of the `expenses-admin` role. */
  admin: 'expenses:admin',
} as const;
export const EXPENSE_ADMIN_ROLE = 'expenses-admin';
/** What an ordinary user's credential carries: their own expenses, read and write. */
export const EXPENSE_USER_SCOPES: readonly string[] = [EXPENSE_SCOPES.read, EXPENSE_SCOPES.write];

/** What each tool needs, checked at the HTTP layer (403 step-up) and again inside the tool. */
export const EXPENSE_TOOL_SCOPES: Readonly<Record<string, readonly string[]>> = {
  add_user_expense: [EXPENSE_SCOPES.write],
  get_user_expenses: [EXPENSE_SCOPES.read],
  delete_user_expense: [EXPENSE_SCOPES.write],
  get_spending_summary: [EXPENSE_SCOPES.read],
  get_expense_stats: [EXPENSE_SCOPES.admin],
};
/**
 * What other MCP methods need: `resources/read` of the caller's expenses, and `prompts/get` of
 * the one prompt, which sends the model to the reading tools.
 */
export const EXPENSE_METHOD_SCOPES: Readonly<Record<string, readonly string[]>> = {
  'resources/read': [EXPENSE_SCOPES.read],
  'prompts/get': [EXPENSE_SCOPES.read],
};

type Extra = RequestHandlerExtra<never, never>;

/** The caller of a tool, after checking it holds what the tool needs. */
function caller(extra: Pick<Extra, 'authInfo'>, needs: readonly string[]): Principal {
  const principal = requirePrincipal(extra.authInfo);
  const missing = needs.filter((scope) => !holds(principal, scope));
  if (missing.length > 0) throw new Error(`This needs the scope ${missing.join(' ')}, which the credential lacks.`);
  return principal;
}

/**
 * A principal holds a scope when its credential grants it, and only then: the admin right has
 * one source, the `expenses:admin` scope, which the identity provider grants to administrators
 * only (Keycloak through the role scope mapping, the proxy and `pnpm keys` themselves). Roles
 * do not count: in Keycloak mode a role claim is what a protocol mapper could write.
 */
export function holds(principal: Principal, scope: string): boolean {
  if (principal.method === 'none') return true;
  return principal.scopes.includes(scope);
}

const scopesMeta = (tool: string) => ({ 'mcp-auth-stack/required-scopes': EXPENSE_TOOL_SCOPES[tool] });

/**
 * The expenses tracker as an MCP server. Built once per process and shared by every request:
 * the caller comes from the request's authentication (`extra.authInfo`), never from a tool
 * argument, and every query is scoped to that caller.
 */
export function createExpensesServer(repository: ExpenseRepository, options: ExpensesServerOptions = {}): McpServer {
  const stored = async <T>(
    operation: string,
    work: () => Promise<T>,
    hints: WriteHints = { unavailable: '', failed: '' },
  ): Promise<T> => {
    let outcome: T;
    try {
      outcome = await work();
    } catch (error) {
      // The database answered and refused for the user's own reason: theirs to read, not a fault.
      if (error instanceof ExpenseLimitError) {
        options.onLimitReached?.(error);
        throw error;
      }
      options.onStorageError?.(error, operation);
      // The database answered, and refused: the write is known not to have happened.
      if (isDatabaseFull(error)) throw new Error(STORAGE_FULL_MESSAGE);
      if (isDatabaseContention(error)) throw new Error(STORAGE_BUSY_MESSAGE);
      // Only an outage is worth retrying; "did not answer" for a failing statement would send
      // the caller into retries that can never succeed.
      if (isDatabaseUnavailable(error)) throw new Error(STORAGE_ERROR_MESSAGE + hints.unavailable);
      throw new Error(STORAGE_FAILURE_MESSAGE + hints.failed);
    }
    options.onStorageSuccess?.(operation);
    return outcome;
  };
  const server = new McpServer(
    { name: options.name ?? 'expenses-tracker', version: options.version ?? '0.1.0', title: 'Expenses Tracker' },
    {
      instructions:
        "Tracks the signed-in user's expenses. Dates are YYYY-MM-DD; amounts are in the user's currency with at most two decimals.",
    },
  );
  if (!options.validateOutput) {
    Object.defineProperty(server, SDK_OUTPUT_CHECK, { value: async () => {}, writable: true, configurable: true });
  }
  const registerTool: McpServer['registerTool'] = (name, config, handler) => {
    const tool = server.registerTool(name, config, handler);
    options.registeredTools?.set(name, tool);
    return tool;
  };

  registerTool(
    'add_user_expense',
    {
      title: 'Add expense',
      description: `Record one expense for the signed-in user, who may keep up to ${groupThousands(repository.maxExpensesPerUser)} expenses. Pass an idempotency_key to make retries safe: a call that timed out or failed may still have added the expense, and a retry with the same key returns that expense instead of adding it twice.`,
      inputSchema: z.strictObject({
        date: calendarDate.describe(`Day of the expense, YYYY-MM-DD (${DATE_RANGE})`),
        amount: amount.describe('Amount spent, greater than 0, at most 2 decimals'),
        category: z.enum(CATEGORIES).describe('What kind of expense'),
        description: expenseDescription.describe('What was bought'),
        payment_method: z.enum(PAYMENT_METHODS).describe('How it was paid'),
        idempotency_key: idempotencyKey
          .optional()
          .describe(
            'Optional: a key of your choice (a UUID) for this one expense, unique per user; reuse it only to retry the same expense (once that expense is deleted, the key adds it again)',
          ),
      }),
      outputSchema: { expense },
      _meta: scopesMeta('add_user_expense'),
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    async ({ idempotency_key: key, ...input }, extra) => {
      const principal = caller(extra, EXPENSE_TOOL_SCOPES.add_user_expense ?? []);
      const { userId } = principal;
      if (key === undefined) {
        const added = await stored('add_user_expense', () => repository.add(userId, input), ADD_HINTS);
        return result(`Added expense ${added.id}: ${describeExpense(added)}`, { expense: added });
      }
      const outcome = await stored('add_user_expense', () => repository.addOnce(userId, input, key), ADD_HINTS);
      if ('conflict' in outcome) {
        // The stored expense is shown only to a caller who may read expenses: a write-only
        // credential that guessed a key (a receipt number) would read it otherwise.
        const mayRead = (EXPENSE_TOOL_SCOPES.get_user_expenses ?? []).every((scope) => holds(principal, scope));
        const which = mayRead ? ` (${outcome.conflict.id}: ${describeExpense(outcome.conflict)})` : '';
        return toolError(
          `The idempotency_key ${JSON.stringify(key)} was already used for a different expense${which}; nothing was added. Use a new key for a new expense.`,
        );
      }
      // A retry gets exactly what the first call got.
      return result(`Added expense ${outcome.expense.id}: ${describeExpense(outcome.expense)}`, {
        expense: outcome.expense,
      });
    },
  );

  registerTool(
    'get_user_expenses',
    {
      title: 'List expenses',
      description: `The signed-in user's expenses, newest first, optionally filtered by date range and category, a page at a time (at most ${MAX_LIST_LIMIT}); when more match, has_more is true and next_cursor continues the listing.`,
      inputSchema: z.strictObject({
        ...dateRangeInput,
        category: z.enum(CATEGORIES).optional(),
        limit: z.number().int().min(1).max(MAX_LIST_LIMIT).optional().describe(`Default ${DEFAULT_LIST_LIMIT}`),
        cursor: z
          .string()
          .max(200)
          .regex(/^[A-Za-z0-9_-]+$/, 'must be the next_cursor of a page')
          .optional()
          .describe('next_cursor of the page before, with the same filters: the page after it'),
      }),
      outputSchema: {
        expenses: z.array(expense),
        count: z.number().int().describe('Expenses on this page'),
        has_more: z.boolean().describe('More expenses match than this page holds'),
        next_cursor: z.string().optional().describe('When has_more: the cursor of the next page'),
      },
      _meta: scopesMeta('get_user_expenses'),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async (filter, extra) => {
      const { userId } = caller(extra, EXPENSE_TOOL_SCOPES.get_user_expenses ?? []);
      assertRange(filter.start_date, filter.end_date);
      const page = await stored('get_user_expenses', () =>
        repository.list(userId, filter).catch((error: unknown) => {
          if (error instanceof InvalidCursorError) return error;
          throw error;
        }),
      );
      if (page instanceof InvalidCursorError) return toolError(page.message);
      const { expenses, nextCursor } = page;
      return result(describeExpenseList(expenses, nextCursor), {
        expenses,
        count: expenses.length,
        has_more: nextCursor !== undefined,
        ...(nextCursor === undefined ? {} : { next_cursor: nextCursor }),
      });
    },
  );

  registerTool(
    'delete_user_expense',
    {
      title: 'Delete expense',
      description: "Delete one of the signed-in user's expenses by its id.",
      inputSchema: z.strictObject({ id: z.string().uuid('must be an expense id (a UUID)') }),
      outputSchema: { deleted: expense },
      _meta: scopesMeta('delete_user_expense'),
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    },
    async ({ id }, extra) => {
      const { userId } = caller(extra, EXPENSE_TOOL_SCOPES.delete_user_expense ?? []);
      const deleted = await stored('delete_user_expense', () => repository.delete(userId, id));
      // Another user's expense looks exactly like one that does not exist. A retried delete
      // (the annotations call it idempotent) must not read as a failure.
      if (!deleted) return toolError(`No expense with id ${id}: it does not exist, or it was already deleted.`);
      return result(`Deleted expense ${deleted.id}: ${describeExpense(deleted)}`, { deleted });
    },
  );

  registerTool(
    'get_spending_summary',
    {
      title: 'Spending summary',
      description:
        "Totals of the signed-in user's expenses per category and per month, optionally within a date range.",
      inputSchema: z.strictObject(dateRangeInput),
      outputSchema: {
        total: money,
        count: z.number().int(),
        by_category: z.array(z.object({ category: z.enum(CATEGORIES), total: money, count: z.number().int() })),
        by_month: z.array(z.object({ month: z.string(), total: money, count: z.number().int() })),
      },
      _meta: scopesMeta('get_spending_summary'),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async (range, extra) => {
      const { userId } = caller(extra, EXPENSE_TOOL_SCOPES.get_spending_summary ?? []);
      assertRange(range.start_date, range.end_date);
      const summary = await stored('get_spending_summary', () => repository.summary(userId, range));
      return result(describeSummary(summary), { ...summary });
    },
  );

  registerTool(
    'get_expense_stats',
    {
      title: 'Expense statistics (admin)',
      description:
        'Per-category counts and totals across all users, optionally within a date range. Needs the expenses:admin scope.',
      inputSchema: z.strictObject(dateRangeInput),
      outputSchema: {
        total: money,
        count: z.number().int(),
        users: z.number().int(),
        by_category: z.array(
          z.object({ category: z.enum(CATEGORIES), total: money, count: z.number().int(), users: z.number().int() }),
        ),
      },
      _meta: scopesMeta('get_expense_stats'),
      annotations: { readOnlyHint: true, openWorldHint: false },
    },
    async (range, extra) => {
      caller(extra, EXPENSE_TOOL_SCOPES.get_expense_stats ?? []);
      assertRange(range.start_date, range.end_date);
      const stats = await stored('get_expense_stats', () => repository.stats(range));
      const text =
        stats.count === 0
          ? 'No expenses in this period.'
          : [
              `${stats.count} expense(s) by ${stats.users} user(s), total ${stats.total}.`,
              ...stats.by_category.map(
                (row) => `- ${row.category}: ${row.count} by ${row.users} user(s), ${row.total}`,
              ),
            ].join('\n');
      return result(text, { ...stats });
    },
  );

  server.registerResource(
    'recent-expenses',
    'expenses://recent',
    {
      title: 'Recent expenses',
      description: `The signed-in user's ${RECENT_RESOURCE_LIMIT} most recent expenses`,
      mimeType: 'application/json',
    },
    async (uri, extra) => {
      const { userId } = caller(extra, EXPENSE_METHOD_SCOPES['resources/read'] ?? []);
      const { expenses } = await stored('expenses://recent', () =>
        repository.list(userId, { limit: RECENT_RESOURCE_LIMIT }),
      );
      return { contents: [{ uri: uri.href, mimeType: 'application/json', text: JSON.stringify({ expenses }) }] };
    },
  );

  server.registerPrompt(
    'analyze_spending',
    {
      title: 'Analyze spending',
      description: "Ask the assistant to analyze the user's spending, optionally for one category or period.",
      argsSchema: {
        category: z
          .enum(CATEGORIES)
          .optional()
          .describe(`One category to look at: ${CATEGORIES.join(', ')}`),
        start_date: calendarDate.optional().describe(`First day to include, YYYY-MM-DD (${DATE_RANGE})`),
        end_date: calendarDate.optional().describe(`Last day to include, YYYY-MM-DD (${DATE_RANGE})`),
      },
    },
    ({ category, start_date, end_date }, extra) => {
      caller(extra, EXPENSE_METHOD_SCOPES['prompts/get'] ?? []);
      // The tools it leads to would each refuse this range.
      if (start_date && end_date && start_date > end_date) {
        throw new McpError(ErrorCode.InvalidParams, `start_date ${start_date} is after end_date ${end_date}.`);
      }
      const scope = [
        category ? `in the category "${category}"` : 'across all categories',
        start_date ? `from ${start_date}` : undefined,
        end_date ? `until ${end_date}` : undefined,
      ]
        .filter(Boolean)
        .join(' ');
      return {
        messages: [
          {
            role: 'user',
            content: {
              type: 'text',
              text: `Analyze my spending ${scope}. Use get_spending_summary for the totals and get_user_expenses for the details, then tell me where the money goes, what stands out, and one concrete way to spend less.`,
            },
          },
        ],
      };
    },
  );

  // The SDK announces `listChanged: true` as soon as a tool, resource or prompt is registered.
  // This server is stateless (no session, no stream to notify on) and its lists never change at
  // run time, so it promises no notifications.
  server.server.registerCapabilities({
    tools: { listChanged: false },
    resources: { listChanged: false },
    prompts: { listChanged: false },
  });
  return server;
}

function result(text: string, structuredContent: Record<string, unknown>): CallToolResult {
  return { content: [{ type: 'text', text }], structuredContent };
}

function toolError(text: string): CallToolResult {
  return { content: [{ type: 'text', text }], isError: true };
}

function assertRange(start: string | undefined, end: string | undefined): void {
  if (start && end && start > end) throw new Error(`start_date ${start} is after end_date ${end}.`);
}

/** The text `get_user_expenses` answers with beside its `structuredContent`: a line per expense. */
/** A page as text; with `nextCursor`, a last line saying that more match, and how to get them. */
export function describeExpenseList(expenses: readonly Expense[], nextCursor?: string): string {
  if (expenses.length === 0) return 'No expenses found.';
  return [
    `${expenses.length} expense(s), newest first:`,
    ...expenses.map((e) => `- ${describeExpense(e)} [${e.id}]`),
    ...(nextCursor === undefined
      ? []
      : [
          `More expenses match than these: call again with the same filters and cursor "${nextCursor}" for the next page.`,
        ]),
  ].join('\n');
}

function describeExpense(e: Expense): string {
  return `${e.date} ${e.category} ${e.amount} (${e.payment_method}) ${e.description}`;
}

function describeSummary(summary: SpendingSummary): string {
  if (summary.count === 0) return 'No expenses in this period.';
  return [
    `Total ${summary.total} over ${summary.count} expense(s).`,
    'By category:',
    ...summary.by_category.map((row) => `- ${row.category}: ${row.total} (${row.count})`),
    'By month:',
    ...summary.by_month.map((row) => `- ${row.month}: ${row.total} (${row.count})`),
  ].join('\n');
}
