/**
 * The server judged by the official MCP conformance suite, acting as a client of
 * `node apps/server/src/main.ts` in `none` mode on loopback (the suite's server scenarios send
 * no credentials). The scenarios here are those that apply to any MCP server: initialization,
 * ping, the tool list and DNS-rebinding protection, reached by both loopback names a user types.
 * The suite's other server scenarios test the fixtures of its own reference server (tools named
 * `test_image_content`, prompts, resources, sampling, elicitation) or the 2026-07-28 protocol,
 * which the MCP SDK does not yet speak.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, freePort, type ServerProcess, type TestDatabase } from '@mcp-auth-stack/testing';
import { runConformance, unsuccessful } from '@mcp-auth-stack/testing/conformance';
import { spawnServer } from './helpers.ts';

describe('the server under the official MCP conformance suite (server scenarios)', () => {
  let database: TestDatabase;
  let server: ServerProcess;
  let port: number;

  before(async () => {
    database = await createTestDatabase();
    port = await freePort();
    server = await spawnServer({ MCP_AUTH_PROVIDER: 'none', PORT: String(port), DATABASE_URL: database.url });
  });
  after(async () => {
    await server?.stop();
    await database?.drop();
  });

  const scenarios = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection'];
  for (const host of ['localhost', '127.0.0.1']) {
    for (const scenario of scenarios) {
      test(`${scenario} at http://${host}:<port>/mcp`, async () => {
        const run = await runConformance(scenario, { server: `http://${host}:${port}/mcp` });
        assert.ok(run.checks.length > 0, run.output);
        assert.deepEqual(unsuccessful(run), [], `${run.output}\n${server.output()}`);
      });
    }
  }

  test('the suite can tell: a scenario the server does not offer fails', async () => {
    // logging/setLevel: the server declares no logging capability and answers -32601.
    const run = await runConformance('logging-set-level', { server: `http://localhost:${port}/mcp` });
    assert.deepEqual(unsuccessful(run), ['logging-set-level FAILURE'], run.output);
  });
});
