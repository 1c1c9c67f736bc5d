/**
 * What each row of `pnpm bench` must be answered with. Requests/s mean nothing if the replies
 * were errors: a 200 carrying a JSON-RPC error or a tool error (`isError`) is as fast as it is
 * wrong, and autocannon counts only transport errors and non-2xx statuses.
 *
 * So a row first sends its request once and checks the reply for what the row claims to
 * measure (ten of the bench user's expenses, the tool list, an added expense); a reply that is
 * not that stops the bench. Then every reply of the row is held to it: a read must come back
 * byte for byte as the checked reply (the data does not change under a read; 32 connections
 * at once would show a reply that mixed requests up), a write must carry the expense it added.
 * A reply that fails is counted in the row's errors.
 */

export interface Expected {
  /** What the reply is, for messages. */
  what: string;
  /** Why this reply is not what the row measures; undefined when it is. */
  problem(status: number, body: string): string | undefined;
  /** Every later reply: byte-identical to the checked one (a read), or passing this test (a write). */
  every: 'identical' | ((body: string) => boolean);
}

/** The newest of the bench user's expenses (the data `bench/run.ts` seeds: a year, every third day). */
export const NEWEST_DATE = '2025-12-30';
/** The description every bench write sends. */
export const WRITTEN_DESCRIPTION = 'Pizza';

type Json = Record<string, unknown>;

function parse(status: number, body: string): { value?: Json; problem?: string } {
  if (status !== 200) return { problem: `HTTP ${status}` };
  try {
    const value = JSON.parse(body) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return { problem: 'not a JSON object' };
    return { value: value as Json };
  } catch {
    return { problem: 'not JSON (an event stream where JSON was asked for?)' };
  }
}

/** The `result` of a JSON-RPC reply to the bench's request (id 1), or why there is none. */
function rpcResult(status: number, body: string): { result?: Json; problem?: string | undefined } {
  const { value, problem } = parse(status, body);
  if (!value) return { problem };
  if (value.jsonrpc !== '2.0' || value.id !== 1) return { problem: 'not a JSON-RPC reply to id 1' };
  if (value.error) return { problem: `JSON-RPC error ${JSON.stringify(value.error)}` };
  const result = value.result as Json | undefined;
  if (typeof result !== 'object' || result === null) return { problem: 'no result' };
  return { result };
}

/** A tool's result, not a tool error. */
function toolResult(status: number, body: string): { result?: Json; problem?: string | undefined } {
  const { result, problem } = rpcResult(status, body);
  if (!result) return { problem };
  if (result.isError === true) return { problem: `a tool error: ${JSON.stringify(result.content)}` };
  return { result };
}

const textOf = (result: Json) =>
  (result.content as { type?: string; text?: string }[] | undefined)
    ?.filter((part) => part.type === 'text')
    .map((part) => part.text ?? '')
    .join('\n') ?? '';

function listProblem(expenses: unknown, count: number): string | undefined {
  if (!Array.isArray(expenses)) return 'no list of expenses';
  if (expenses.length !== count) return `${expenses.length} expenses, not ${count}`;
  const newest = (expenses[0] as { date?: unknown } | undefined)?.date;
  if (newest !== NEWEST_DATE) return `the newest expense is dated ${String(newest)}, not ${NEWEST_DATE}`;
  return undefined;
}

/** Bare Hono's `{ ok: true }` (row A). */
export const helloReply: Expected = {
  what: '{"ok":true}',
  problem(status, body) {
    const { value, problem } = parse(status, body);
    return problem ?? (value?.ok === true ? undefined : 'not {"ok":true}');
  },
  every: 'identical',
};

/** The floor's read: `{ expenses }`, the bench user's newest `count` (row D, D′). */
export const floorListReply = (count: number): Expected => ({
  what: `the bench user's ${count} newest expenses`,
  problem(status, body) {
    const { value, problem } = parse(status, body);
    return problem ?? listProblem(value?.expenses, count);
  },
  every: 'identical',
});

/** The floor's write: `{ expense }`, the one it added. */
export const floorWriteReply: Expected = {
  what: 'the expense added',
  problem(status, body) {
    const { value, problem } = parse(status, body);
    if (!value) return problem;
    const expense = value.expense as Json | undefined;
    return expense?.description === WRITTEN_DESCRIPTION ? undefined : 'no added expense';
  },
  every: (body) => body.includes(`"description":"${WRITTEN_DESCRIPTION}"`),
};

/** `tools/list` listing at least these tools. */
const toolListReply = (names: string[]): Expected => ({
  what: `a tool list with ${names.join(', ')}`,
  problem(status, body) {
    const { result, problem } = rpcResult(status, body);
    if (!result) return problem;
    const listed = new Set((result.tools as { name?: string }[] | undefined)?.map((tool) => tool.name));
    const missing = names.filter((name) => !listed.has(name));
    return missing.length > 0 ? `no ${missing.join(', ')} in the list` : undefined;
  },
  every: 'identical',
});

/** The bench's `tools/list` (this server's, the reference's, a cold start's first): the two tools it calls. */
export const expensesToolListReply = toolListReply(['get_user_expenses', 'add_user_expense']);

/**
 * `get_user_expenses`: the bench user's newest `count`, as `structuredContent` (and text), or,
 * for a server that answers in text only (the reference as the talk ships it), as `count` lines
 * of text starting with the newest date.
 */
export const toolReadReply = (count: number, output: 'structured' | 'text' = 'structured'): Expected => ({
  what: `get_user_expenses with the bench user's ${count} newest expenses${output === 'text' ? ' as text' : ''}`,
  problem(status, body) {
    const { result, problem } = toolResult(status, body);
    if (!result) return problem;
    const text = textOf(result);
    if (output === 'text') {
      const lines = text.split('\n').filter((line) => line.trim() !== '');
      if (lines.length !== count) return `${lines.length} lines of text, not ${count}`;
      return lines[0]?.includes(NEWEST_DATE) ? undefined : `the first line is not dated ${NEWEST_DATE}`;
    }
    if (text === '') return 'no text content';
    return listProblem((result.structuredContent as Json | undefined)?.expenses, count);
  },
  every: 'identical',
});

/** `add_user_expense`: the expense added, not an error. */
export const toolWriteReply: Expected = {
  what: 'add_user_expense with the expense added',
  problem(status, body) {
    const { result, problem } = toolResult(status, body);
    if (!result) return problem;
    return JSON.stringify(result).includes(WRITTEN_DESCRIPTION) ? undefined : 'no added expense in the result';
  },
  // String tests, not a parse: cheap enough for the load generator to run on every reply.
  every: (body) =>
    body.includes('"result"') && body.includes(WRITTEN_DESCRIPTION) && !/"isError"\s*:\s*true/.test(body),
};

/** A request as the bench sends it. */
export interface BenchRequest {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
}

/**
 * The request sent once and its reply checked (an error naming `name` when the reply is not
 * what is expected), then the test for every later reply, as autocannon's `verifyBody` takes it.
 */
export async function checkedReplies(
  name: string,
  request: BenchRequest,
  expected: Expected,
): Promise<(body: string) => boolean> {
  const response = await fetch(request.url, {
    method: request.method ?? 'GET',
    ...(request.headers ? { headers: request.headers } : {}),
    ...(request.body ? { body: request.body } : {}),
  });
  const first = await response.text();
  const problem = expected.problem(response.status, first);
  if (problem) {
    throw new Error(
      `${name}: the reply is not ${expected.what} (${problem}), so the load would measure something else: ${first.slice(0, 500)}`,
    );
  }
  const every = expected.every;
  return every === 'identical' ? (body) => body === first : every;
}
