import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, run, type TestDatabase } from '@mcp-auth-stack/testing';
import { createKeys } from '@mcp-auth-stack/testing/faults';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { connectClient, postMcp, spawnServer } from './helpers.ts';

/**
 * The production entry (`node apps/server/build.ts` → `dist/main.mjs`) as its own process:
 * the same server as the sources, in the ways a deployment runs it (PostgreSQL by URL, the
 * embedded database, an OTLP exporter whose SDK is loaded from outside the bundle).
 */
const BUILD = fileURLToPath(new URL('../build.ts', import.meta.url));
let outDir: string;
let entry: string;
let database: TestDatabase;

before(async () => {
  outDir = await mkdtemp(join(tmpdir(), 'mcp-bundle-'));
  const built = await run(process.execPath, [BUILD, '--out-dir', outDir]);
  assert.equal(built.code, 0, built.stderr + built.stdout);
  entry = join(outDir, 'main.mjs');
  database = await createTestDatabase();
});

after(async () => {
  await database?.drop();
  await rm(outDir, { recursive: true, force: true });
});

describe('the bundled production entry', () => {
  test('is one JavaScript file that imports no TypeScript but the embedded database', async () => {
    const code = await readFile(entry, 'utf8');
    const tsImports = [...code.matchAll(/(?:from|import\()\s*["']([^"']+\.ts)["']/g)].map((m) => m[1]);
    assert.equal(tsImports.length, 1, JSON.stringify(tsImports));
    assert.match(tsImports[0] ?? '', /packages\/database\/src\/embedded\.ts$/);
  });

  test('serves key mode on PostgreSQL: tools, a write and a read', async () => {
    const server = await spawnServer({ DATABASE_URL: database.url, MCP_AUTH_PROVIDER: 'key' }, entry);
    try {
      const keys = await createKeys(database.url, ['bundle-user']);
      const client = await connectClient(server.mcpUrl, { Authorization: `Bearer ${keys.get('bundle-user')}` });
      const { tools } = await client.listTools();
      assert.ok(tools.some((tool) => tool.name === 'get_user_expenses'));
      const args = { date: '2025-12-17', amount: 20, category: 'food', description: 'Pizza', payment_method: 'amex' };
      const added = (await client.callTool({ name: 'add_user_expense', arguments: args })) as CallToolResult;
      assert.notEqual(added.isError, true, JSON.stringify(added.content));
      const listed = (await client.callTool({ name: 'get_user_expenses', arguments: {} })) as CallToolResult;
      assert.equal((listed.structuredContent as { count: number }).count, 1);
      await client.close();
      assert.match(server.output(), /api key cache: listening for revocations/);
      const refused = await postMcp(server.mcpUrl, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
      assert.equal(refused.status, 401);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('runs on the embedded database (PGlite loaded from outside the bundle)', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-bundle-data-'));
    const server = await spawnServer({ DATA_DIR: dataDir, MCP_AUTH_PROVIDER: 'none' }, entry);
    try {
      const response = await postMcp(server.mcpUrl, {
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'get_user_expenses', arguments: {} },
      });
      assert.equal(response.status, 200);
      const body = (await response.json()) as { result: CallToolResult };
      assert.equal((body.result.structuredContent as { count: number }).count, 0);
      assert.match(server.output(), /embedded PGlite/);
    } finally {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('exports spans over OTLP (the SDK is required from the telemetry package)', async () => {
    const received: string[] = [];
    const collector = createServer((request: IncomingMessage, response) => {
      received.push(request.url ?? '');
      request.resume();
      request.on('end', () => response.end('{}'));
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const port = (collector.address() as AddressInfo).port;
    const server = await spawnServer(
      {
        DATABASE_URL: database.url,
        MCP_AUTH_PROVIDER: 'none',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      },
      entry,
    );
    try {
      const response = await postMcp(server.mcpUrl, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
      assert.equal(response.status, 200);
    } finally {
      // SIGTERM flushes the spans before the exit.
      assert.equal(await server.stop(), 0);
      collector.close();
    }
    assert.ok(received.includes('/v1/traces'), `the collector received ${JSON.stringify(received)}`);
  });
});
