import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createTestDatabase, run, type TestDatabase } from '@mcp-auth-stack/testing';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { connectClient, postMcp, spawnServer } from './helpers.ts';

/**
 * The production entry (`node apps/server/build.ts` → `dist/main.cjs`, which runs the bundle
 * `dist/server.cjs`) as its own process:
 * the same server as the sources, in the ways a deployment runs it (PostgreSQL by URL, the
 * embedded database, an OTLP exporter whose SDK is loaded from outside the bundle).
 */
const BUILD = fileURLToPath(new URL('../build.ts', import.meta.url));
let outDir: string;
let entry: string;
let database: TestDatabase;
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

before(async () => {
  outDir = await mkdtemp(join(tmpdir(), 'mcp-bundle-'));
  const built = await run(process.execPath, [BUILD, '--out-dir', outDir]);
  assert.equal(built.code, 0, built.stderr + built.stdout);
  entry = join(outDir, 'main.cjs');
  database = await createTestDatabase();
});

after(async () => {
  await database?.drop();
  await rm(outDir, { recursive: true, force: true });
});

describe('the bundled production entry', () => {
  test('is one JavaScript file that loads no TypeScript but the embedded database, and no module with import()', async () => {
    const code = await readFile(join(outDir, 'server.cjs'), 'utf8');
    assert.equal(await exists(join(outDir, 'keys-cli.mjs')), true, 'the keys CLI for the image');
    // `from "x.ts"`, or a call with the file alone: import("x.ts"), require("x.ts").
    const tsLoads = [...code.matchAll(/from\s*["']([^"']+\.ts)["']|\(\s*["']([^"']+\.ts)["']\s*\)/g)].map(
      (m) => m[1] ?? m[2],
    );
    assert.equal(tsLoads.length, 1, JSON.stringify(tsLoads));
    assert.match(tsLoads[0] ?? '', /packages\/database\/src\/embedded\.ts$/);
    // A vm script's import() would need Node's experimental loader for scripts.
    const imports = code.split('\n').filter((line) => /\bimport\(/.test(line) && !/^\s*(\*|\/\/|\/\*)/.test(line));
    assert.deepEqual(imports, []);
  });

  test('--warm-up makes the app and answers in-process with nothing started, then writes the code cache a start uses', async () => {
    const cache = join(outDir, 'server.cjs.code-cache');
    const flags = ['--max-semi-space-size=2', '--max-old-space-size=256'];
    // No configuration at all: without --warm-up this would start on the embedded database.
    const warmed = await run(process.execPath, [...flags, entry, '--warm-up'], { NODE_DEBUG: 'code-cache' });
    assert.equal(warmed.code, 0, warmed.stderr);
    assert.equal(warmed.stdout, '', 'no log line, no listening, no PGlite');
    assert.match(warmed.stderr, /no code cache at \S+server\.cjs\.code-cache/);
    assert.match(warmed.stderr, /code cache written to \S+server\.cjs\.code-cache/);
    // Holds the functions the warm-up ran: a cache of the top level alone is about 380 KB.
    const withFunctions = (await readFile(cache)).length;
    const again = await run(process.execPath, [...flags, entry, '--warm-up'], { NODE_DEBUG: 'code-cache' });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /code cache \S+server\.cjs\.code-cache accepted/);
    assert.doesNotMatch(again.stderr, /written/, 'a cache V8 took is kept as it is');
    // Other V8 flags: V8 refuses the cache and the bundle is compiled as usual.
    const otherFlags = await run(process.execPath, [entry, '--warm-up'], { NODE_DEBUG: 'code-cache' });
    assert.equal(otherFlags.code, 0, otherFlags.stderr);
    assert.match(otherFlags.stderr, /code cache \S+server\.cjs\.code-cache rejected/);
    assert.ok(withFunctions > 600_000, `code cache of ${withFunctions} bytes`);
  });

  test('runs its own copy of pg, and pg from its package only when Postgres spans are recorded', async () => {
    // Reports every `pg` that Node resolves: the instrumentation can patch only a pg loaded so.
    const hook = join(outDir, 'report-pg.mjs');
    await writeFile(
      hook,
      `import { registerHooks } from 'node:module';
registerHooks({
  resolve(specifier, context, nextResolve) {
    const resolved = nextResolve(specifier, context);
    if (specifier === 'pg') process.stderr.write('pg resolved to ' + resolved.url + '\\n');
    return resolved;
  },
});
`,
    );
    const env = { NODE_OPTIONS: `--import ${pathToFileURL(hook).href}` };
    const own = await run(process.execPath, [entry, '--warm-up'], env);
    assert.equal(own.code, 0, own.stderr);
    assert.doesNotMatch(own.stderr, /pg resolved/);
    const traced = await run(process.execPath, [entry, '--warm-up'], {
      ...env,
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9',
    });
    assert.equal(traced.code, 0, traced.stderr);
    assert.match(traced.stderr, /pg resolved to file:\S+\/node_modules\/pg\/lib\/index\.js/);
  });

  test('serves key mode on PostgreSQL (migrated by it): tools, a write and a read, with a key from the bundled CLI', async () => {
    const server = await spawnServer({ DATABASE_URL: database.url, MCP_AUTH_PROVIDER: 'key' }, entry);
    try {
      const created = await run(process.execPath, [join(outDir, 'keys-cli.mjs'), 'create', '--user', 'bundle-user'], {
        DATABASE_URL: database.url,
      });
      assert.equal(created.code, 0, created.stderr);
      const key = created.stdout.trim().split('\n').at(-1) ?? '';
      assert.match(key, /^mcpk_/);
      const client = await connectClient(server.mcpUrl, { Authorization: `Bearer ${key}` });
      const { tools } = await client.listTools();
      assert.ok(tools.some((tool) => tool.name === 'get_user_expenses'));
      const args = { date: '2025-12-17', amount: 20, category: 'food', description: 'Pizza', payment_method: 'amex' };
      const added = (await client.callTool({ name: 'add_user_expense', arguments: args })) as CallToolResult;
      assert.notEqual(added.isError, true, JSON.stringify(added.content));
      const listed = (await client.callTool({ name: 'get_user_expenses', arguments: {} })) as CallToolResult;
      assert.equal((listed.structuredContent as { count: number }).count, 1);
      await client.close();
      await server.waitForOutput(/api key cache: listening for revocations/);
      const refused = await postMcp(server.mcpUrl, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
      assert.equal(refused.status, 401);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  test('runs on the embedded database (PGlite loaded from outside the bundle), which keeps the per-user limit', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-bundle-data-'));
    const server = await spawnServer(
      { DATA_DIR: dataDir, MCP_AUTH_PROVIDER: 'none', MAX_EXPENSES_PER_USER: '1' },
      entry,
    );
    const callTool = async (name: string, args: Record<string, unknown>) => {
      const response = await postMcp(server.mcpUrl, {
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name, arguments: args },
      });
      assert.equal(response.status, 200);
      return ((await response.json()) as { result: CallToolResult }).result;
    };
    try {
      assert.equal(((await callTool('get_user_expenses', {})).structuredContent as { count: number }).count, 0);
      await server.waitForOutput(/embedded PGlite/);
      // PGlite runs the counting trigger and takes the statement's limit as PostgreSQL does.
      const expense = { date: '2025-01-01', amount: 3, category: 'food', description: 'Tea', payment_method: 'cash' };
      assert.equal((await callTool('add_user_expense', expense)).isError, undefined);
      const refused = await callTool('add_user_expense', expense);
      assert.equal(refused.isError, true);
      assert.match(JSON.stringify(refused.content), /You have reached the limit of 1 expense this server keeps/);
      assert.equal(((await callTool('get_user_expenses', {})).structuredContent as { count: number }).count, 1);
    } finally {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('exports spans over OTLP, Postgres spans too (the SDK is required from the telemetry package, pg loaded by Node)', async () => {
    const received: { url: string; body: string }[] = [];
    const collector = createServer((request: IncomingMessage, response) => {
      let body = '';
      request.setEncoding('utf8');
      request.on('data', (chunk) => (body += chunk));
      request.on('end', () => {
        received.push({ url: request.url ?? '', body });
        response.end('{}');
      });
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
      const response = await postMcp(server.mcpUrl, {
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'get_user_expenses', arguments: {} },
      });
      assert.equal(response.status, 200);
    } finally {
      // SIGTERM flushes the spans before the exit.
      assert.equal(await server.stop(), 0);
      collector.close();
    }
    const traces = received.filter((r) => r.url === '/v1/traces');
    assert.ok(traces.length > 0, `the collector received ${JSON.stringify(received.map((r) => r.url))}`);
    // The OTLP/HTTP JSON export: the query's span carries db.system.name "postgresql".
    assert.match(traces.map((r) => r.body).join('\n'), /"postgresql"/, 'a Postgres span from the bundle');
  });
});
