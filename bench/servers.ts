/**
 * Reference servers for the benchmark, each run as its own process (so each has its own
 * core and its own peak RSS):
 *   A  a bare Hono JSON route: the ceiling of the HTTP stack
 *   B  the SDK's documented stateless pattern: a new MCP server and transport per request,
 *      with the same key check and the same tools as the real server
 *   D  a bare Hono route running the tool's SQL through the same pool: the database floor
 *   DP the same floor reached as an MCP client reaches this server: `POST /mcp` with the
 *      client's headers and JSON-RPC body (read and parsed), the tool's SQL, and the tool's
 *      JSON-RPC result (its text and `structuredContent`); no authentication, no validation:
 *      what the protocol's HTTP shape costs on its own (`bench/memory.ts flags`, `floor-post`).
 * C, the real server, is `apps/server/src/main.ts` itself.
 */
import { serve } from '@hono/node-server';
import { ApiKeyStore, type AuthVariables, apiKeyProvider, requireAuth, toAuthInfo } from '@mcp-auth-stack/auth';
import { openDatabase } from '@mcp-auth-stack/database';
import {
  createExpensesServer,
  DEFAULT_MAX_EXPENSES_PER_USER,
  describeExpenseList,
  ExpenseRepository,
} from '@mcp-auth-stack/expenses';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { Hono } from 'hono';

const variant = process.env.BENCH_VARIANT;
const port = Number(process.env.PORT ?? 0);
const app = new Hono<{ Variables: AuthVariables }>();

if (variant === 'A') {
  app.get('/', (c) => c.json({ ok: true }));
} else {
  const database = await openDatabase({ url: process.env.DATABASE_URL, maxConnections: 10 });
  // The server's limit, as this server's own rows run it (bench/run.ts sets it).
  const repository = new ExpenseRepository(database.pool, {
    maxExpensesPerUser: Number(process.env.MAX_EXPENSES_PER_USER ?? DEFAULT_MAX_EXPENSES_PER_USER),
  });
  if (variant === 'B') {
    const auth = apiKeyProvider({ store: new ApiKeyStore(database.pool) });
    app.use('/mcp', requireAuth(auth));
    app.post('/mcp', async (c) => {
      const server = createExpensesServer(repository);
      // No session id generator: stateless, as the SDK's stateless example does.
      const transport = new WebStandardStreamableHTTPServerTransport({ enableJsonResponse: true });
      await server.connect(transport);
      const response = await transport.handleRequest(c.req.raw, { authInfo: toAuthInfo(c.get('principal')) });
      void server.close();
      return response;
    });
  } else if (variant === 'D') {
    const userId = process.env.BENCH_USER_ID as string;
    app.get('/read', async (c) => c.json({ expenses: (await repository.list(userId, { limit: 10 })).expenses }));
    app.post('/write', async (c) =>
      c.json({
        expense: await repository.add(process.env.BENCH_WRITER_ID as string, {
          date: '2025-12-17',
          amount: 20,
          category: 'food',
          description: 'Pizza',
          payment_method: 'amex',
        }),
      }),
    );
  } else if (variant === 'DP') {
    const userId = process.env.BENCH_USER_ID as string;
    app.get('/health', (c) => c.json({ status: 'ok' }));
    app.post('/mcp', async (c) => {
      const accept = c.req.header('accept') ?? '';
      if (!accept.includes('application/json') || !c.req.header('content-type')?.startsWith('application/json')) {
        return c.json({ error: 'not_acceptable' }, 406);
      }
      const message = JSON.parse(await c.req.text());
      const { expenses, nextCursor } = await repository.list(userId, { limit: message.params.arguments.limit });
      return c.json({
        jsonrpc: '2.0',
        id: message.id,
        result: {
          // The tool's own reply (packages/expenses), so DP sends what this server sends.
          content: [{ type: 'text', text: describeExpenseList(expenses, nextCursor) }],
          structuredContent: {
            expenses,
            count: expenses.length,
            has_more: nextCursor !== undefined,
            ...(nextCursor === undefined ? {} : { next_cursor: nextCursor }),
          },
        },
      });
    });
  } else {
    throw new Error(`BENCH_VARIANT must be A, B, D or DP, got ${variant}`);
  }
}

const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port }, (info) => {
  process.stdout.write(`{"msg":"listening","url":"http://127.0.0.1:${info.port}"}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
