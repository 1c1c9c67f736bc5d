import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Principal, toAuthInfo } from '@mcp-auth-stack/auth';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import {
  createExpensesServer,
  EXPENSE_ADMIN_ROLE,
  EXPENSE_SCOPES,
  EXPENSE_TOOL_SCOPES,
  EXPENSES_NAMESPACE,
  ExpenseRepository,
  expensesMigrations,
} from '../src/index.ts';
import { SDK_OUTPUT_CHECK } from '../src/mcp-server.ts';

/**
 * The server does not ask the SDK to check each result against its output schema on every
 * call (a zod parse of the whole result): the results conform by construction. This is the
 * check instead, against the JSON Schema clients see, for every tool, on real PostgreSQL.
 */
let testDb: TestDatabase;
let database: Database;

before(async () => {
  testDb = await createTestDatabase();
  database = await openDatabase({ url: testDb.url });
  await migrate(database.pool, EXPENSES_NAMESPACE, expensesMigrations);
});

after(async () => {
  await database?.close();
  await testDb?.drop();
});

async function connect(
  server: McpServer,
  principal: Principal = { userId: 'schema-user', scopes: Object.values(EXPENSE_SCOPES), method: 'api_key' },
): Promise<Client> {
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  // What the HTTP layer does: every request carries the authenticated caller.
  const authInfo = toAuthInfo(principal);
  const send = clientSide.send.bind(clientSide);
  clientSide.send = (message: JSONRPCMessage, options) => send(message, { ...options, authInfo });
  const client = new Client({ name: 'output-schemas', version: '1' });
  await client.connect(clientSide);
  return client;
}

describe('tool results against their published output schemas', () => {
  test('the SDK hook the server turns off still exists (an SDK upgrade that renames it fails here)', () => {
    assert.equal(typeof (McpServer.prototype as unknown as Record<string, unknown>)[SDK_OUTPUT_CHECK], 'function');
    const server = createExpensesServer(new ExpenseRepository(database.pool));
    const own = Object.getOwnPropertyDescriptor(server, SDK_OUTPUT_CHECK);
    assert.ok(own, 'turned off on the instance');
    const checking = createExpensesServer(new ExpenseRepository(database.pool), { validateOutput: true });
    assert.equal(Object.getOwnPropertyDescriptor(checking, SDK_OUTPUT_CHECK), undefined);
  });

  test('every tool returns text and structuredContent that validates against its outputSchema', async () => {
    const server = createExpensesServer(new ExpenseRepository(database.pool));
    const client = await connect(server);
    try {
      const { tools } = await client.listTools();
      const validator = new AjvJsonSchemaValidator();
      const call = async (name: string, args: Record<string, unknown>) => {
        const tool = tools.find((t) => t.name === name);
        assert.ok(tool?.outputSchema, `${name} publishes an output schema`);
        const result = await client.callTool({ name, arguments: args });
        assert.notEqual(result.isError, true, JSON.stringify(result.content));
        const schema = tool.outputSchema as Parameters<typeof validator.getValidator>[0];
        const check = validator.getValidator(schema)(result.structuredContent);
        assert.ok(check.valid, `${name}: ${check.errorMessage} in ${JSON.stringify(result.structuredContent)}`);
        const content = result.content as { type: string; text?: string }[];
        assert.ok(
          content.some((c) => c.type === 'text' && (c.text ?? '').length > 0),
          `${name} has text`,
        );
        return result.structuredContent as Record<string, unknown>;
      };
      const add = { date: '2025-12-17', amount: 20.5, category: 'food', description: 'Pizza', payment_method: 'amex' };
      const added = (await call('add_user_expense', add)).expense as { id: string };
      await call('add_user_expense', { ...add, amount: 3, idempotency_key: 'schema-1' });
      // A replay answers from what is stored: the same shape.
      await call('add_user_expense', { ...add, amount: 3, idempotency_key: 'schema-1' });
      const listed = await call('get_user_expenses', { limit: 10 });
      assert.equal(listed.count, 2);
      await call('get_user_expenses', { category: 'transport' });
      await call('get_spending_summary', {});
      await call('get_spending_summary', { start_date: '2030-01-01' });
      await call('get_expense_stats', {});
      await call('delete_user_expense', { id: added.id });
    } finally {
      await client.close();
      await server.close();
    }
  });
});

/**
 * The HTTP layer refuses a call that lacks a scope (403 step-up); each tool checks again, so the
 * server refuses it wherever it is mounted. Here without any HTTP layer in front.
 */
describe('every tool checks its own scopes', () => {
  const validArguments: Record<string, Record<string, unknown>> = {
    add_user_expense: { date: '2025-12-17', amount: 5, category: 'food', description: 'Tea', payment_method: 'cash' },
    get_user_expenses: {},
    delete_user_expense: { id: '00000000-0000-4000-8000-000000000000' },
    get_spending_summary: {},
    get_expense_stats: {},
  };
  const textOf = (result: Awaited<ReturnType<Client['callTool']>>) =>
    (result.content as { type: string; text?: string }[]).map((c) => c.text ?? '').join('\n');

  test('every pattern in the published schemas means the same to a regex engine without Unicode mode', async () => {
    // JSON Schema's patterns are ECMA-262 regexes without flags; Python's `re` and many model
    // providers compile them too. `\P{Cc}` is a property only in Unicode mode: elsewhere it is
    // refused (Python) or the letters `P{Cc}` (a JavaScript engine without the `u` flag).
    const client = await connect(createExpensesServer(new ExpenseRepository(database.pool)));
    const { tools } = await client.listTools();
    const patterns: string[] = [];
    const collect = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(collect);
      else if (node && typeof node === 'object') {
        for (const [name, value] of Object.entries(node)) {
          if (name === 'pattern' && typeof value === 'string') patterns.push(value);
          else collect(value);
        }
      }
    };
    for (const tool of tools) collect([tool.inputSchema, tool.outputSchema]);
    assert.ok(patterns.length > 0, 'the schemas have patterns');
    const samples = ['lunch', 'Café ☕ au lait', '2026-12-06', 'a\u0007b', 'a\u0085b', 'tab\there', 'P{Cc}', ''];
    for (const pattern of patterns) {
      const unicode = new RegExp(pattern, 'u');
      const plain = new RegExp(pattern);
      for (const sample of samples) {
        assert.equal(plain.test(sample), unicode.test(sample), `${pattern} on ${JSON.stringify(sample)}`);
      }
    }
    await client.close();
  });

  test('an argument a tool does not take is a tool error naming it, never dropped, and nothing is stored', async () => {
    // A model that guesses a filter (`category` for the summary) or a `user_id` would otherwise
    // get the answer to another question, or add an expense it believes is someone else's.
    const server = createExpensesServer(new ExpenseRepository(database.pool));
    const client = await connect(server, {
      userId: 'strict-user',
      scopes: Object.values(EXPENSE_SCOPES),
      method: 'api_key',
    });
    try {
      const { tools } = await client.listTools();
      for (const tool of tools) assert.equal(tool.inputSchema.additionalProperties, false, tool.name);
      for (const [tool, args] of Object.entries(validArguments)) {
        const result = await client.callTool({ name: tool, arguments: { ...args, user_id: 'someone-else' } });
        assert.equal(result.isError, true, `${tool}: ${textOf(result)}`);
        assert.match(textOf(result), /user_id/, tool);
      }
      const stored = await database.pool.query(
        "SELECT count(*)::int AS n FROM expenses WHERE user_id IN ('strict-user', 'someone-else')",
      );
      assert.equal(stored.rows[0].n, 0);
    } finally {
      await client.close();
      await server.close();
    }
  });

  test('a caller holding every scope but the one a tool needs gets a tool error, and nothing is stored', async () => {
    const server = createExpensesServer(new ExpenseRepository(database.pool));
    try {
      assert.deepEqual(Object.keys(validArguments).sort(), Object.keys(EXPENSE_TOOL_SCOPES).sort());
      for (const [tool, needs] of Object.entries(EXPENSE_TOOL_SCOPES)) {
        const others = Object.values(EXPENSE_SCOPES).filter((scope) => !needs.includes(scope));
        const client = await connect(server, { userId: 'scope-user', scopes: others, method: 'api_key' });
        try {
          const result = await client.callTool({ name: tool, arguments: validArguments[tool] });
          assert.equal(result.isError, true, `${tool}: ${textOf(result)}`);
          assert.match(textOf(result), new RegExp(`needs the scope ${needs.join(' ')}`), tool);
          if (!needs.includes(EXPENSE_SCOPES.read)) continue;
          await assert.rejects(client.readResource({ uri: 'expenses://recent' }), /needs the scope expenses:read/);
        } finally {
          await client.close();
        }
      }
      const stored = await database.pool.query("SELECT count(*)::int AS n FROM expenses WHERE user_id = 'scope-user'");
      assert.equal(stored.rows[0].n, 0);
    } finally {
      await server.close();
    }
  });

  test('the expenses-admin role does not stand for the expenses:admin scope: statistics need the scope', async () => {
    const server = createExpensesServer(new ExpenseRepository(database.pool));
    const user = { userId: 'role-user', method: 'oauth', roles: [EXPENSE_ADMIN_ROLE] } as const;
    try {
      const withRole = await connect(server, { ...user, scopes: [EXPENSE_SCOPES.read, EXPENSE_SCOPES.write] });
      const refused = await withRole.callTool({ name: 'get_expense_stats', arguments: {} });
      await withRole.close();
      assert.equal(refused.isError, true, textOf(refused));
      assert.match(textOf(refused), /needs the scope expenses:admin/);
      const withScope = await connect(server, { ...user, scopes: [EXPENSE_SCOPES.admin] });
      const allowed = await withScope.callTool({ name: 'get_expense_stats', arguments: {} });
      await withScope.close();
      assert.notEqual(allowed.isError, true, textOf(allowed));
    } finally {
      await server.close();
    }
  });
});
