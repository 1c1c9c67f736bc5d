import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type pg from 'pg';
import { createExpensesServer, ExpenseRepository } from '../src/index.ts';

test('initialize does not promise list-change notifications, which a stateless server never sends', async () => {
  // No query runs during initialize: the pool is never used.
  const server = createExpensesServer(new ExpenseRepository({} as pg.Pool));
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: 'capabilities', version: '1' });
  await client.connect(clientSide);
  try {
    const capabilities = client.getServerCapabilities();
    assert.ok(capabilities?.tools && capabilities.resources && capabilities.prompts, JSON.stringify(capabilities));
    for (const kind of ['tools', 'resources', 'prompts'] as const) {
      assert.notEqual(capabilities[kind]?.listChanged, true, `${kind}.listChanged`);
    }
  } finally {
    await client.close();
    await server.close();
  }
});
