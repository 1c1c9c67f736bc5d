/**
 * `pnpm bench:layers`: what the official SDK's request handling costs a read
 * (`get_user_expenses`, ten expenses) in CPU time, in one process, with no socket and no
 * database (a repository that answers at once with ten fixed rows). Requests run one after
 * another, so the figures depend far less on the machine's load than requests/s do. It prints
 * figures and asserts nothing (docs/performance.md). In a loaded server the layers cost several
 * times what they cost here, one request at a time: `bench/memory.ts flags` measures that.
 *
 *   tool    the registered tool's own function and the reply's JSON: what no MCP layer can avoid
 *   direct  the same call as the server makes it: mcp-hono's `callToolDirectly` (the SDK's
 *           request and result schemas, the arguments' validation, no `Protocol` dispatch)
 *   sdk     the same call through the SDK (`Protocol` dispatch, the request's zod parses, the
 *           arguments' validation) over this project's MultiplexTransport
 *
 * Variables: LAYERS_ROUNDS (3), LAYERS_REQUESTS (20,000 per measurement, after 3,000 warm-up).
 */
import { createExpensesServer, type ExpenseRepository } from '@mcp-auth-stack/expenses';
import { callToolDirectly, MultiplexTransport } from '@mcp-auth-stack/mcp-hono';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { RegisteredTool } from '@modelcontextprotocol/sdk/server/mcp.js';
import { median } from './median.ts';

const ROUNDS = Number(process.env.LAYERS_ROUNDS ?? 3);
const REQUESTS = Number(process.env.LAYERS_REQUESTS ?? 20_000);

const rows = Array.from({ length: 10 }, (_, i) => ({
  id: `0b7d5a34-6c3e-4f51-9a0e-5d0c2f9e7b${String(10 + i)}`,
  date: `2025-01-${String(10 + i)}`,
  amount: `${12 + i}.50`,
  category: 'food' as const,
  description: 'Pizza',
  payment_method: 'amex' as const,
  created_at: '2025-01-01T00:00:00.000Z',
}));
const repository = { list: async () => ({ expenses: rows, nextCursor: undefined }) } as unknown as ExpenseRepository;
const principal = { userId: '0b7d5a34-6c3e-4f51-9a0e-5d0c2f9e7b11', scopes: ['expenses:read'], method: 'oauth' };
const authInfo: AuthInfo = { token: 'bench', clientId: 'bench', scopes: principal.scopes, extra: { principal } };
const READ = {
  jsonrpc: '2.0' as const,
  id: 1,
  method: 'tools/call',
  params: { name: 'get_user_expenses', arguments: { limit: 10 } },
};

// The tool's handle, as `registerTool` returned it.
const tools = new Map<string, RegisteredTool>();
createExpensesServer(repository, { registeredTools: tools });
const registered = tools.get('get_user_expenses');
if (!registered) throw new Error('createExpensesServer registered no get_user_expenses');
const handler = registered.handler as (args: unknown, extra: unknown) => Promise<unknown>;
const signal = new AbortController().signal;

const transport = new MultiplexTransport();
await createExpensesServer(repository).connect(transport);

const layers: Record<string, () => Promise<string>> = {
  tool: async () => JSON.stringify({ ...READ, result: await handler({ limit: 10 }, { authInfo, signal }) }),
  direct: async () =>
    JSON.stringify({
      ...READ,
      ...(await callToolDirectly(registered, READ, { authInfo, requestInfo: undefined, signal: () => signal })),
    }),
  sdk: async () => JSON.stringify(await transport.request(READ, { authInfo })),
};

for (const [name, call] of Object.entries(layers)) {
  const reply = JSON.parse(await call()) as { result?: { structuredContent?: { count?: number } } };
  if (reply.result?.structuredContent?.count !== 10)
    throw new Error(`${name}: unexpected reply ${JSON.stringify(reply)}`);
}

const results: Record<string, number[]> = {};
for (let round = 1; round <= ROUNDS; round++) {
  for (const [name, call] of Object.entries(layers)) {
    for (let i = 0; i < 3_000; i++) await call();
    const before = process.cpuUsage();
    for (let i = 0; i < REQUESTS; i++) await call();
    const { user, system } = process.cpuUsage(before);
    results[name] ??= [];
    results[name].push(Math.round(((user + system) / REQUESTS) * 10) / 10);
  }
}
console.log(
  `CPU µs per read (median of ${ROUNDS} rounds of ${REQUESTS}), Node ${process.version} ${process.execArgv.join(' ')}`,
);
for (const [name, values] of Object.entries(results)) {
  console.log(`${name.padEnd(9)} ${median(values).toFixed(1).padStart(6)}  (${values.join(', ')})`);
}
const m = (name: string) => median(results[name] ?? []);
console.log(`the SDK's dispatch: ${(m('sdk') - m('tool')).toFixed(1)} µs per read`);
console.log(`the direct path: ${(m('direct') - m('tool')).toFixed(1)} µs per read`);
