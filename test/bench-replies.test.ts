import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  expensesToolListReply,
  floorListReply,
  NEWEST_DATE,
  toolReadReply,
  toolWriteReply,
  WRITTEN_DESCRIPTION,
} from '../bench/replies.ts';

/** `count` expenses, newest first from `newest`, as this server and the floor list them. */
const expenses = (count: number, newest = NEWEST_DATE) =>
  Array.from({ length: count }, (_, i) => ({
    id: `e${i}`,
    date: i === 0 ? newest : '2025-01-01',
    amount: '1.00',
    category: 'food',
    description: WRITTEN_DESCRIPTION,
    payment_method: 'amex',
  }));
const rpc = (payload: Record<string, unknown>) => JSON.stringify({ jsonrpc: '2.0', id: 1, ...payload });
const read = (list: unknown[]) =>
  rpc({ result: { content: [{ type: 'text', text: 'a line each' }], structuredContent: { expenses: list } } });

describe("the bench's reply checks (bench/replies.ts)", () => {
  const check = toolReadReply(10);

  test('a read with the ten newest expenses passes; every later reply must be the same bytes', () => {
    assert.equal(check.problem(200, read(expenses(10))), undefined);
    assert.equal(check.every, 'identical');
  });

  test('what a fast wrong answer looks like is refused, each with its reason', () => {
    const refused: [number, string, RegExp][] = [
      [401, '{"error":"invalid_token"}', /HTTP 401/],
      [200, rpc({ error: { code: -32602, message: 'Invalid params' } }), /JSON-RPC error/],
      [200, rpc({ result: { content: [{ type: 'text', text: 'no' }], isError: true } }), /a tool error/],
      [200, `event: message\ndata: ${read(expenses(10))}\n\n`, /not JSON/],
      [200, read(expenses(9)), /9 expenses, not 10/],
      [200, read(expenses(10, '2025-12-29')), /dated 2025-12-29/],
      [200, JSON.stringify({ jsonrpc: '2.0', id: 2, result: {} }), /not a JSON-RPC reply to id 1/],
    ];
    for (const [status, body, reason] of refused) assert.match(check.problem(status, body) ?? 'passed', reason, body);
  });

  test('the reference as shipped answers in text: ten lines, the newest first', () => {
    const text = (lines: string[]) => rpc({ result: { content: [{ type: 'text', text: lines.join('\n') }] } });
    const lines = [`${NEWEST_DATE}: 1.00 food (amex) Pizza`, ...Array(9).fill('2025-01-01: 1.00 food (amex) Pizza')];
    assert.equal(toolReadReply(10, 'text').problem(200, text(lines)), undefined);
    assert.match(toolReadReply(10, 'text').problem(200, text(lines.slice(1))) ?? '', /9 lines/);
  });

  test('the floor and the tool list', () => {
    assert.equal(floorListReply(10).problem(200, JSON.stringify({ expenses: expenses(10) })), undefined);
    assert.match(floorListReply(10).problem(200, '{"expenses":[]}') ?? '', /0 expenses/);
    const list = (names: string[]) => rpc({ result: { tools: names.map((name) => ({ name })) } });
    const tools = expensesToolListReply;
    assert.equal(tools.problem(200, list(['add_user_expense', 'get_user_expenses', 'delete_user_expense'])), undefined);
    assert.match(tools.problem(200, list(['get_user_expenses'])) ?? '', /no add_user_expense/);
  });

  test("a write's replies differ (a new id each), so each one is tested for the expense it added", () => {
    const added = rpc({
      result: {
        content: [{ type: 'text', text: `Added expense e1: ${WRITTEN_DESCRIPTION}` }],
        structuredContent: { expense: expenses(1)[0] },
      },
    });
    const failed = rpc({ result: { content: [{ type: 'text', text: WRITTEN_DESCRIPTION }], isError: true } });
    assert.equal(toolWriteReply.problem(200, added), undefined);
    assert.match(toolWriteReply.problem(200, failed) ?? '', /a tool error/);
    const every = toolWriteReply.every;
    assert.ok(typeof every === 'function');
    assert.equal(every(added), true);
    assert.equal(every(failed), false);
    assert.equal(every(rpc({ error: { code: -32603, message: WRITTEN_DESCRIPTION } })), false);
  });
});
