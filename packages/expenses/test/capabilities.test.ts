import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type pg from 'pg';
import { createExpensesServer, ExpenseRepository } from '../src/index.ts';

/** An SDK client of the expenses server, in memory. No query runs in these tests: the pool is never used. */
async function withClient(use: (client: Client) => Promise<void>): Promise<void> {
  const server = createExpensesServer(new ExpenseRepository({} as pg.Pool));
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: 'capabilities', version: '1' });
  await client.connect(clientSide);
  try {
    await use(client);
  } finally {
    await client.close();
    await server.close();
  }
}

test('initialize does not promise list-change notifications, which a stateless server never sends', async () => {
  await withClient(async (client) => {
    const capabilities = client.getServerCapabilities();
    assert.ok(capabilities?.tools && capabilities.resources && capabilities.prompts, JSON.stringify(capabilities));
    for (const kind of ['tools', 'resources', 'prompts'] as const) {
      assert.notEqual(capabilities[kind]?.listChanged, true, `${kind}.listChanged`);
    }
  });
});

test('every date argument states the days it takes, so a client can know before it is refused', async () => {
  await withClient(async (client) => {
    const dates: string[] = [];
    for (const tool of (await client.listTools()).tools) {
      const properties = (tool.inputSchema.properties ?? {}) as Record<string, { description?: string }>;
      for (const [name, property] of Object.entries(properties)) {
        if (!/date/.test(name)) continue;
        dates.push(`${tool.name}.${name}`);
        assert.match(property.description ?? '', /YYYY-MM-DD \(1970-01-01 to 2100-12-31\)/, `${tool.name}.${name}`);
      }
    }
    assert.ok(dates.includes('add_user_expense.date') && dates.includes('get_user_expenses.start_date'), dates.join());
  });
});
