import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { toAuthInfo } from '@mcp-auth-stack/auth';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import {
  createExpensesServer,
  EXPENSE_SCOPES,
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

async function connect(server: McpServer): Promise<Client> {
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  // What the HTTP layer does: every request carries the authenticated caller.
  const authInfo = toAuthInfo({
    userId: 'schema-user',
    scopes: Object.values(EXPENSE_SCOPES),
    method: 'api_key',
  });
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
