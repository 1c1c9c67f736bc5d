/**
 * The deployed agent as a small service: `GET /health` for the container's liveness probe,
 * `GET /ready` (200 once connected to its MCP servers) and `POST /chat {"message": …}` →
 * `{"reply": …, "tool_calls": [...]}`, one stateless request each.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import type { ExpensesAgent } from './agent.ts';
import type { Logger } from './logger.ts';

export const MAX_MESSAGE_LENGTH = 4000;

export interface AgentAppOptions {
  /** The agent, once it is connected to its MCP servers; undefined until then. */
  agent: () => ExpensesAgent | undefined;
  /** Why there is no agent yet (the last connection failure); told to authorized `/chat` callers. */
  notReadyReason?: () => string | undefined;
  logger: Logger;
  /** When set, `POST /chat` needs `Authorization: Bearer <chatToken>`. */
  chatToken?: string | undefined;
}

export function createAgentApp({ agent: current, notReadyReason, logger, chatToken }: AgentAppOptions): Hono {
  const app = new Hono();

  // Alive even while the MCP servers cannot be reached: restarting would not reach them sooner.
  app.get('/health', (c) => {
    const agent = current();
    return c.json({ status: 'ok', ready: agent !== undefined, tools: agent?.toolNames.length ?? 0 });
  });
  app.get('/ready', (c) =>
    current() ? c.json({ status: 'ready' }) : c.json({ status: 'connecting' }, 503, { 'Retry-After': '10' }),
  );

  app.post('/chat', async (c) => {
    if (chatToken !== undefined && !bearerMatches(c.req.header('authorization'), chatToken)) {
      return c.json({ error: 'unauthorized' }, 401, { 'www-authenticate': 'Bearer realm="agent"' });
    }
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: 'the body must be JSON: {"message": "…"}' }, 400);
    }
    const message = (body as { message?: unknown } | null)?.message;
    if (typeof message !== 'string' || !message.trim() || message.length > MAX_MESSAGE_LENGTH) {
      return c.json({ error: `"message" must be a non-empty string of at most ${MAX_MESSAGE_LENGTH} characters` }, 400);
    }
    const agent = current();
    if (agent === undefined) {
      return c.json(
        {
          error: 'not_ready',
          error_description: `The agent is not connected to its MCP servers yet: ${notReadyReason?.() ?? 'connecting'}`,
        },
        503,
        { 'Retry-After': '10' },
      );
    }
    const startedAt = Date.now();
    try {
      const turn = await agent.run(message.trim(), { signal: c.req.raw.signal });
      logger.info('chat', {
        duration_ms: Date.now() - startedAt,
        tools: turn.toolCalls.map((call) => call.name),
        tool_errors: turn.toolCalls.filter((call) => call.isError).length,
      });
      return c.json({
        reply: turn.reply,
        tool_calls: turn.toolCalls.map((call) => ({
          name: call.name,
          args: call.args,
          result: call.result,
          is_error: call.isError,
        })),
      });
    } catch (error) {
      // The model or an MCP server failed; the details go to the log, not to the caller.
      logger.error('chat failed', { duration_ms: Date.now() - startedAt, error: (error as Error).message });
      return c.json({ error: 'the agent could not complete this request' }, 502);
    }
  });

  return app;
}

function bearerMatches(header: string | undefined, expected: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!match?.[1]) return false;
  // Equal-length digests, so the comparison takes the same time whatever the guess.
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(match[1]), digest(expected));
}
