import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MCP_ATTRIBUTES, setupTelemetry } from '@mcp-auth-stack/telemetry';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

/**
 * The expenses server itself with tracing on, spans kept in memory: what Application Insights
 * would receive from a deployment. Set up before anything loads `pg`, as main.ts does.
 */
const memory = new InMemorySpanExporter();
setupTelemetry({ serviceName: 'server-telemetry-test', env: {}, spanProcessors: [new SimpleSpanProcessor(memory)] });
const { connectClient, postMcp, startTestStack } = await import('./helpers.ts');

let stack: Awaited<ReturnType<typeof startTestStack>>;
let key: string;

before(async () => {
  stack = await startTestStack({}, { tracing: true });
  key = (await stack.keys.create({ userId: 'tracy' })).secret;
  const client = await connectClient(stack.mcpUrl, { Authorization: `Bearer ${key}` });
  await client.callTool({
    name: 'add_user_expense',
    arguments: {
      date: '2025-12-17',
      amount: 20,
      category: 'food',
      description: 'Traced pizza',
      payment_method: 'amex',
    },
  });
  await client.close();
  // A call the scope check refuses at the HTTP layer (the key lacks expenses:admin).
  const refused = await postMcp(
    stack.mcpUrl,
    { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'get_expense_stats', arguments: {} } },
    { authorization: `Bearer ${key}` },
  );
  assert.equal(refused.status, 403);
});

after(async () => {
  await stack?.close();
});

const spans = () => memory.getFinishedSpans();
const named = (name: string) => spans().filter((span) => span.name === name);
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
// The statement text under the older or the newer semantic-convention name.
const statementOf = (span: ReadableSpan) =>
  String(span.attributes['db.statement'] ?? span.attributes['db.query.text'] ?? '');

test('a tool call: HTTP span → `tools/call add_user_expense` span → the INSERT as a Postgres span', () => {
  const [call] = named('tools/call add_user_expense');
  assert.ok(call, `spans: ${spans().map((span) => span.name)}`);
  assert.equal(call.attributes[MCP_ATTRIBUTES.method], 'tools/call');
  assert.equal(call.attributes[MCP_ATTRIBUTES.toolName], 'add_user_expense');
  assert.equal(call.attributes[MCP_ATTRIBUTES.operation], 'execute_tool');
  assert.equal(call.attributes[MCP_ATTRIBUTES.errorType], undefined);
  const http = spans().find((span) => span.spanContext().spanId === parentOf(call));
  assert.equal(http?.name, 'POST /mcp');
  const insert = spans().find(
    // The insert sets its limit for the counting trigger in a CTE first (decision 85).
    (span) => parentOf(span) === call.spanContext().spanId && /\bINSERT INTO expenses\b/.test(statementOf(span)),
  );
  assert.ok(insert, 'the INSERT is a child of the tool call');
  assert.equal(insert.attributes['db.system.name'], 'postgresql');
});

test('a call refused with 403 still has its span, with the refusal as the error', () => {
  const [refused] = named('tools/call get_expense_stats');
  assert.ok(refused, 'the refused call is traced');
  assert.equal(refused.attributes[MCP_ATTRIBUTES.errorType], '403');
});

test('no key, argument value or description in any span', () => {
  const all = JSON.stringify(
    spans().map((span) => ({ name: span.name, attributes: span.attributes, events: span.events })),
  );
  assert.ok(!all.includes(key), 'the key');
  assert.ok(!all.includes(key.slice(5)), 'any part of the key');
  assert.ok(!all.includes('Traced pizza'), 'an argument value');
});
