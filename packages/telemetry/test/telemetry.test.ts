import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { serve } from '@hono/node-server';
import { createStatelessMcpEndpoint } from '@mcp-auth-stack/mcp-hono';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Hono } from 'hono';
import { z } from 'zod';
import {
  httpTracing,
  MCP_ATTRIBUTES,
  mcpOutcome,
  mcpSpanName,
  mcpTracing,
  setupTelemetry,
  spanExporterFor,
  TelemetryConfigError,
  telemetryDestination,
  traceMcpRequest,
} from '../src/index.ts';

/**
 * A real MCP server behind the real Hono endpoint, traced into an in-memory exporter, called by
 * the SDK's real client with a bearer token. Then: the spans, their names and attributes, the
 * error outcomes, Postgres spans from a real server, and not one secret in any attribute.
 */
const TOKEN = 'super-secret-bearer-token-value-1234567890';
const SECRET_ARGUMENT = 'card-number-4111111111111111';
const SECRET_QUERY_VALUE = 'secret-query-parameter-value';

// Read here rather than from @mcp-auth-stack/testing: that module imports `pg`, which must load after setup.
const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://mcp_test:mcp_test@127.0.0.1:5432/postgres';
const memory = new InMemorySpanExporter();
const telemetry = setupTelemetry({
  serviceName: 'telemetry-test',
  env: {},
  spanProcessors: [new SimpleSpanProcessor(memory)],
});
// Loaded after setup, as the server's entry module must arrange, so instrumentation-pg sees it.
const { default: pg } = await import('pg');

let url = '';
let close: () => Promise<void> = async () => {};

function spans(): ReadableSpan[] {
  return memory.getFinishedSpans();
}
function named(name: string): ReadableSpan[] {
  return spans().filter((span) => span.name === name);
}

before(async () => {
  const server = new McpServer({ name: 'telemetry-test', version: '1.0.0' });
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });
  server.registerTool(
    'add_expense',
    { description: 'adds', inputSchema: { description: z.string() } },
    async ({ description }) => {
      await pool.query('SELECT $1::text AS echoed', [SECRET_QUERY_VALUE]);
      return { content: [{ type: 'text', text: `added ${description.length}` }] };
    },
  );
  server.registerTool('refuses', { description: 'always fails' }, async () => ({
    isError: true,
    content: [{ type: 'text', text: 'no' }],
  }));
  server.registerTool('throws', { description: 'throws' }, async () => {
    throw new Error('boom');
  });
  const endpoint = await createStatelessMcpEndpoint(server);
  const app = new Hono();
  app.use(httpTracing());
  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.use('/mcp', async (c, next) => {
    if (c.req.header('authorization') !== `Bearer ${TOKEN}`) return c.json({ error: 'unauthorized' }, 401);
    return next();
  });
  app.use('/mcp', mcpTracing());
  app.all('/mcp', (c) => endpoint.handle(c));
  const listener = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
  });
  const address = listener.address();
  url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  close = async () => {
    await endpoint.close();
    await pool.end();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  };

  const client = new Client({ name: 'telemetry-test-client', version: '1.0.0' });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(`${url}/mcp`), {
      requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
    }),
  );
  await client.listTools();
  await client.callTool({ name: 'add_expense', arguments: { description: SECRET_ARGUMENT } });
  await client.callTool({ name: 'add_expense', arguments: { description: 'lunch' } });
  await client.callTool({ name: 'refuses', arguments: {} });
  await client.callTool({ name: 'throws', arguments: {} });
  await client.callTool({ name: 'no_such_tool', arguments: {} }).catch(() => undefined);
  await client.close();
  await fetch(`${url}/health`);
  await fetch(`${url}/mcp?access_token=${TOKEN}`, { method: 'POST', body: '{}' }); // 401, token in the URL
});

after(async () => {
  await close();
  await telemetry.shutdown();
});

describe('telemetry', () => {
  test('nothing is exported unless the environment names a destination', () => {
    assert.equal(telemetry.destination, 'none');
    assert.equal(telemetryDestination({}), 'none');
    assert.equal(telemetryDestination({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }), 'otlp');
    assert.equal(
      telemetryDestination({
        APPLICATIONINSIGHTS_CONNECTION_STRING: 'InstrumentationKey=00000000-0000-0000-0000-000000000000',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318',
      }),
      'azure-monitor',
    );
    assert.equal(spanExporterFor('none', {}), null);
    assert.equal(
      spanExporterFor('azure-monitor', {
        APPLICATIONINSIGHTS_CONNECTION_STRING:
          'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/',
      })?.constructor.name,
      'AzureMonitorTraceExporter',
    );
    assert.equal(spanExporterFor('otlp', {})?.constructor.name, 'OTLPTraceExporter');
  });

  test('an OTLP endpoint that is not an http(s) URL is refused, naming the variable', () => {
    for (const [name, value] of [
      ['OTEL_EXPORTER_OTLP_ENDPOINT', 'not a url'],
      ['OTEL_EXPORTER_OTLP_ENDPOINT', 'localhost:4318'],
      ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'grpc://collector:4317'],
    ] as const) {
      assert.throws(
        () => spanExporterFor('otlp', { [name]: value }),
        (error: unknown) =>
          error instanceof TelemetryConfigError && error.message.startsWith(`${name} must be an http(s) URL`),
        `${name}=${value}`,
      );
    }
    assert.equal(
      spanExporterFor('otlp', { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://collector.example.com/v1/traces' })
        ?.constructor.name,
      'OTLPTraceExporter',
    );
  });

  test('with no destination, the SDK and the exporters are never loaded', async () => {
    // A fresh process, with hooks that see every module resolved (import or require).
    const script = `
      import { registerHooks } from 'node:module';
      const seen = [];
      registerHooks({ resolve(specifier, context, next) { seen.push(specifier); return next(specifier, context); } });
      const { telemetry } = await import('@mcp-auth-stack/telemetry/register');
      const loaded = (name) => seen.some((specifier) => specifier.startsWith(name));
      const report = {
        destination: telemetry.destination,
        instrumentsPg: telemetry.instrumentsPg,
        api: loaded('@opentelemetry/api'),
        sdk: loaded('@opentelemetry/sdk-trace'),
        exporters: loaded('@azure/monitor-opentelemetry-exporter') || loaded('@opentelemetry/exporter-trace-otlp-http'),
        pgInstrumentation: loaded('@opentelemetry/instrumentation'),
      };
      // After the probe: the package's index loads the OpenTelemetry API for its middlewares.
      const { activeTelemetry } = await import('@mcp-auth-stack/telemetry');
      process.stdout.write(JSON.stringify({ ...report, same: activeTelemetry() === telemetry }));`;
    const run = (env: Record<string, string>) =>
      JSON.parse(
        execFileSync(process.execPath, ['--input-type=module', '-e', script], {
          cwd: fileURLToPath(new URL('..', import.meta.url)),
          env: { PATH: process.env.PATH ?? '', ...env },
          encoding: 'utf8',
        }),
      );
    assert.deepEqual(run({}), {
      destination: 'none',
      instrumentsPg: false,
      same: true,
      api: false,
      sdk: false,
      exporters: false,
      pgInstrumentation: false,
    });
    // The same probe sees them when spans have somewhere to go.
    assert.deepEqual(run({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' }), {
      destination: 'otlp',
      instrumentsPg: true,
      same: true,
      api: true,
      sdk: true,
      exporters: true,
      pgInstrumentation: true,
    });
  });

  test('a span per tool call, named `tools/call <name>` with the GenAI attributes', () => {
    const calls = named('tools/call add_expense');
    assert.equal(calls.length, 2);
    for (const span of calls) {
      assert.equal(span.kind, SpanKind.SERVER);
      assert.equal(span.attributes[MCP_ATTRIBUTES.method], 'tools/call');
      assert.equal(span.attributes[MCP_ATTRIBUTES.toolName], 'add_expense');
      assert.equal(span.attributes[MCP_ATTRIBUTES.operation], 'execute_tool');
      assert.equal(span.status.code, SpanStatusCode.OK);
      assert.equal(span.attributes[MCP_ATTRIBUTES.errorType], undefined);
      assert.ok(span.attributes[MCP_ATTRIBUTES.requestId] !== undefined);
    }
    const list = named('tools/list');
    assert.equal(list.length, 1);
    assert.equal(list[0]?.attributes[MCP_ATTRIBUTES.operation], undefined);
    assert.equal(named('initialize').length, 1);
    // Notifications (notifications/initialized) are not requests: no span.
    assert.equal(named('notifications/initialized').length, 0);
  });

  test('error outcomes: tool errors, thrown errors and unknown tools', () => {
    const refused = named('tools/call refuses')[0];
    assert.equal(refused?.status.code, SpanStatusCode.ERROR);
    assert.equal(refused?.attributes[MCP_ATTRIBUTES.errorType], 'tool_error');
    const thrown = named('tools/call throws')[0];
    assert.equal(thrown?.status.code, SpanStatusCode.ERROR);
    assert.equal(thrown?.attributes[MCP_ATTRIBUTES.errorType], 'tool_error');
    const unknown = named('tools/call no_such_tool')[0];
    assert.equal(unknown?.status.code, SpanStatusCode.ERROR);
    assert.ok(unknown?.attributes[MCP_ATTRIBUTES.errorType], 'an error type for an unknown tool');
  });

  test('HTTP spans carry method, route and status, and parent the MCP spans', () => {
    const http = named('POST /mcp');
    assert.ok(http.length >= 7, `POST /mcp spans: ${http.length}`);
    const unauthorized = http.find((span) => span.attributes['http.response.status_code'] === 401);
    assert.ok(unauthorized, 'the rejected request has its HTTP span');
    const health = named('GET /health')[0];
    assert.equal(health?.attributes['http.route'], '/health');
    assert.equal(health?.attributes['http.response.status_code'], 200);
    const call = named('tools/call add_expense')[0];
    const parent = http.find((span) => span.spanContext().spanId === call?.parentSpanContext?.spanId);
    assert.ok(parent, 'the tool span is a child of its HTTP span');
    // 401s never reach the MCP span middleware.
    assert.equal(spans().filter((span) => span.name === 'initialize').length, 1);
  });

  test('Postgres queries made by a tool are child spans, without their parameter values', () => {
    const call = named('tools/call add_expense')[0];
    const queries = spans().filter(
      (span) => span.attributes['db.system'] === 'postgresql' || span.attributes['db.system.name'] === 'postgresql',
    );
    assert.ok(queries.length >= 2, `postgres spans: ${spans().map((span) => span.name)}`);
    const ids = new Set(spans().map((span) => span.spanContext().spanId));
    for (const query of queries) assert.ok(ids.has(query.parentSpanContext?.spanId ?? ''), 'a parent in this trace');
    assert.ok(queries.some((query) => query.parentSpanContext?.spanId === call?.spanContext().spanId));
  });

  test('no Authorization header, token, argument or query value in any span', () => {
    assert.ok(spans().length > 10);
    for (const span of spans()) {
      const text = JSON.stringify({
        name: span.name,
        attributes: span.attributes,
        status: span.status,
        events: span.events,
      });
      assert.doesNotMatch(text, /authorization/i, span.name);
      assert.ok(!text.includes(TOKEN), `token in ${span.name}`);
      assert.ok(!text.includes(SECRET_ARGUMENT), `tool argument in ${span.name}`);
      assert.ok(!text.includes(SECRET_QUERY_VALUE), `query parameter in ${span.name}`);
      assert.doesNotMatch(text, /Bearer/, span.name);
    }
  });

  test('traceMcpRequest: a thrown dispatch ends the span in error and rethrows', async () => {
    await assert.rejects(
      traceMcpRequest({ method: 'tools/call', id: 9, params: { name: 'direct' } }, async () => {
        throw new TypeError('kaputt');
      }),
      TypeError,
    );
    const span = named('tools/call direct')[0];
    assert.equal(span?.attributes[MCP_ATTRIBUTES.errorType], 'TypeError');
    assert.equal(span?.status.code, SpanStatusCode.ERROR);
    assert.equal(span?.status.message, 'TypeError');
  });

  test('names and outcomes from plain JSON-RPC messages', () => {
    assert.equal(mcpSpanName({ method: 'tools/call', params: { name: 'x' } }), 'tools/call x');
    assert.equal(mcpSpanName({ method: 'prompts/get', params: { name: 'p' } }), 'prompts/get p');
    assert.equal(mcpSpanName({ method: 'resources/read', params: { uri: 'expenses://me' } }), 'resources/read');
    assert.equal(mcpSpanName({ method: 'tools/call', params: {} }), 'tools/call');
    assert.deepEqual(mcpOutcome({ jsonrpc: '2.0', id: 1, result: { content: [] } }), { ok: true });
    assert.equal(mcpOutcome({ jsonrpc: '2.0', id: 1, result: { isError: true } }).ok, false);
    const error = mcpOutcome({ jsonrpc: '2.0', id: 1, error: { code: -32602, message: 'bad' } });
    assert.deepEqual(error.ok ? null : [error.errorType, error.rpcCode], ['-32602', -32602]);
  });
});

describe('mcpTracing reads the body the endpoint reads', () => {
  /** A traced app: a tool, a handler that reads the body as Hono's handlers do, and the endpoint. */
  async function tracedApp(maxBodyBytes: number, tracingMaxBodyBytes = maxBodyBytes) {
    const server = new McpServer({ name: 'telemetry-body', version: '1.0.0' });
    server.registerTool('echo', { inputSchema: { text: z.string() } }, async ({ text }) => ({
      content: [{ type: 'text', text }],
    }));
    const endpoint = await createStatelessMcpEndpoint(server, { maxBodyBytes });
    const app = new Hono<{ Variables: { seen: unknown } }>();
    app.use('/mcp', mcpTracing({ maxBodyBytes: tracingMaxBodyBytes }));
    app.use('/mcp', async (c, next) => {
      // What a middleware after the span does with Hono's own reader (the scope check, a logger).
      if (c.req.header('x-read-with-hono')) c.set('seen', await c.req.json());
      await next();
      if (c.req.header('x-read-with-hono')) c.header('x-seen', JSON.stringify(c.get('seen')));
    });
    app.all('/mcp', (c) => endpoint.handle(c));
    return { app, close: () => endpoint.close() };
  }
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  /** POSTs `body` in chunks of 100 bytes, without a Content-Length. */
  const postChunked = (app: Hono<{ Variables: { seen: unknown } }>, body: string) => {
    const bytes = new TextEncoder().encode(body);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += 100) controller.enqueue(bytes.slice(at, at + 100));
        controller.close();
      },
    });
    return app.request('/mcp', { method: 'POST', headers, body: stream, duplex: 'half' } as RequestInit);
  };
  const call = (id: number, text: string) =>
    JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text } } });

  test('one JSON.parse of the body for the span and the endpoint together, not one each', async () => {
    const { app, close } = await tracedApp(1 << 20);
    const body = call(31, 'parsed once');
    const parse = JSON.parse;
    let parsesOfBody = 0;
    JSON.parse = function countingParse(this: unknown, text: string, reviver?: Parameters<typeof parse>[1]) {
      if (text === body) parsesOfBody++;
      return parse.call(this, text, reviver);
    } as typeof JSON.parse;
    try {
      const response = await app.request('/mcp', { method: 'POST', headers, body });
      assert.equal(response.status, 200);
      assert.match(await response.text(), /parsed once/);
    } finally {
      JSON.parse = parse;
      await close();
    }
    assert.equal(parsesOfBody, 1);
    assert.equal(named('tools/call echo').length, 1);
  });

  test('a handler after the span still reads the body with Hono', async () => {
    const { app, close } = await tracedApp(1 << 20);
    try {
      const body = call(32, 'read twice');
      const response = await app.request('/mcp', {
        method: 'POST',
        headers: { ...headers, 'x-read-with-hono': '1' },
        body,
      });
      assert.equal(response.status, 200);
      assert.deepEqual(JSON.parse(response.headers.get('x-seen') ?? 'null'), JSON.parse(body));
      assert.match(await response.text(), /read twice/);
    } finally {
      await close();
    }
  });

  test("a chunked body past the span's limit but within the endpoint's: no span, and the call runs", async () => {
    const { app, close } = await tracedApp(4096, 256);
    const before = named('tools/call echo').length;
    try {
      const response = await postChunked(app, call(34, 'y'.repeat(1000)));
      assert.equal(response.status, 200);
      assert.match(await response.text(), /y{1000}/);
    } finally {
      await close();
    }
    assert.equal(named('tools/call echo').length, before, 'a body the span does not read gets no span');
  });

  test('a chunked body past the limit: no span, and the endpoint answers 413, not a used-body error', async () => {
    const { app, close } = await tracedApp(256);
    const before = named('tools/call echo').length;
    try {
      const response = await postChunked(app, call(33, 'x'.repeat(1000)));
      assert.equal(response.status, 413);
      assert.equal(((await response.json()) as { error?: { code?: number } }).error?.code, -32600);
    } finally {
      await close();
    }
    assert.equal(named('tools/call echo').length, before);
  });
});
