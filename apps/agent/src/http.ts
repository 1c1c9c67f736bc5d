/**
 * The deployed agent as a small service: `GET /health` for the container's liveness probe,
 * `GET /ready` (200 once connected to its MCP servers) and `POST /chat {"message": …}` →
 * `{"reply": …, "tool_calls": [...]}`, one stateless request each.
 *
 * `/chat` acts with the agent's own credential, so who may call it matters:
 * - with `chatToken`, only callers that send it (a web page cannot know it);
 * - without, only callers on this machine that are not web pages: the connection must come from
 *   a loopback address (the `Host` header alone is the caller's to write), carry no forwarding
 *   header (a reverse proxy on this machine would make every caller local), have a loopback
 *   `Host` (a page that rebinds its own domain to 127.0.0.1 still sends that domain) and no
 *   `Origin` (browsers send one with every POST);
 * - with `chatUnauthenticated`, the same but from any address: for a listener the network alone
 *   guards (compose's port, published on 127.0.0.1).
 * Always: `Content-Type: application/json` (a page cannot send it cross-site without a CORS
 * preflight, which this service never grants), a body of at most `MAX_CHAT_BODY_BYTES`, and at
 * most `maxConcurrentChats` turns at once (each may call the model many times).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isLoopbackAddress, isLoopbackUrlHost } from '@mcp-auth-stack/loopback';
import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { UnofficialStatusCode } from 'hono/utils/http-status';
import type { ExpensesAgent } from './agent.ts';
import type { Logger } from './logger.ts';

export const MAX_MESSAGE_LENGTH = 4000;
/** Room for a message of `MAX_MESSAGE_LENGTH` characters even if every one is escaped (`\uXXXX`). */
export const MAX_CHAT_BODY_BYTES = 32 * 1024;
export const DEFAULT_MAX_CONCURRENT_CHATS = 4;
/**
 * How long a stop (serve.ts) waits for connections still busy (a client still sending its
 * request, or reading its answer) before closing them under it: the MCP server's bound (its
 * SHUTDOWN_TIMEOUT_MS default). A container's stop grace must outlast it.
 */
export const SHUTDOWN_TIMEOUT_MS = 10_000;
/** A turn (up to a dozen model calls and their tools) ends with 504 after this long. */
export const DEFAULT_TURN_TIMEOUT_MS = 120_000;

export interface AgentAppOptions {
  /** The agent, once it is connected to its MCP servers; undefined until then. */
  agent: () => ExpensesAgent | undefined;
  /** Why there is no agent yet (the last connection failure); told to authorized `/chat` callers. */
  notReadyReason?: () => string | undefined;
  logger: Logger;
  /** When set, `POST /chat` needs `Authorization: Bearer <chatToken>`. */
  chatToken?: string | undefined;
  /** Without `chatToken`: answer callers from any address, not only loopback connections (above). */
  chatUnauthenticated?: boolean;
  /** Turns run at once; more get 429 (default `DEFAULT_MAX_CONCURRENT_CHATS`). */
  maxConcurrentChats?: number;
  /** How long a turn may run before it is stopped and answered 504 (default `DEFAULT_TURN_TIMEOUT_MS`). */
  turnTimeoutMs?: number;
  /**
   * Aborted when the process stops: running turns end at once and are answered 503, as is any
   * turn asked for after it (a container's stop gives a few seconds, a turn may take minutes).
   */
  shutdown?: AbortSignal;
}

export function createAgentApp({
  agent: current,
  notReadyReason,
  logger,
  chatToken,
  chatUnauthenticated = false,
  maxConcurrentChats = DEFAULT_MAX_CONCURRENT_CHATS,
  turnTimeoutMs = DEFAULT_TURN_TIMEOUT_MS,
  shutdown,
}: AgentAppOptions): Hono {
  const app = new Hono();
  let turnsRunning = 0;

  // Alive even while the MCP servers cannot be reached: restarting would not reach them sooner.
  app.get('/health', (c) => {
    const agent = current();
    return c.json({ status: 'ok', ready: agent !== undefined, tools: agent?.toolNames.length ?? 0 });
  });
  app.get('/ready', (c) =>
    current() ? c.json({ status: 'ready' }) : c.json({ status: 'connecting' }, 503, { 'Retry-After': '10' }),
  );

  app.post(
    '/chat',
    async (c, next) => {
      if (chatToken !== undefined) {
        if (!bearerMatches(c.req.header('authorization'), chatToken)) {
          return c.json({ error: 'unauthorized' }, 401, { 'www-authenticate': 'Bearer realm="agent"' });
        }
      } else if (
        !isLoopbackUrlHost(hostnameOf(c.req.header('host'))) ||
        c.req.header('origin') !== undefined ||
        (!chatUnauthenticated &&
          (!isLoopbackAddress(peerAddress(c)) || FORWARDING_HEADERS.some((h) => c.req.header(h))))
      ) {
        return c.json(
          { error: 'forbidden', error_description: 'Without AGENT_CHAT_TOKEN, /chat answers local callers only.' },
          403,
        );
      }
      if (!/^application\/json\s*(;|$)/i.test(c.req.header('content-type') ?? '')) {
        return c.json({ error: 'the body must be JSON (Content-Type: application/json)' }, 415);
      }
      await next();
    },
    bodyLimit({
      maxSize: MAX_CHAT_BODY_BYTES,
      onError: (c) => c.json({ error: `the body may be at most ${MAX_CHAT_BODY_BYTES} bytes` }, 413),
    }),
    chat,
  );

  async function chat(c: Context) {
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
    const stopping = () =>
      c.json({ error: 'shutting_down', error_description: 'The agent is stopping; try again.' }, 503, {
        'Retry-After': '10',
      });
    if (shutdown?.aborted) return stopping();
    const agent = current();
    if (agent === undefined) {
      // The reason names internal URLs and errors: for callers who proved who they are.
      const reason = chatToken === undefined ? 'connecting (the log says why)' : (notReadyReason?.() ?? 'connecting');
      return c.json(
        { error: 'not_ready', error_description: `The agent is not connected to its MCP servers yet: ${reason}` },
        503,
        { 'Retry-After': '10' },
      );
    }
    if (turnsRunning >= maxConcurrentChats) {
      return c.json({ error: 'busy', error_description: `${maxConcurrentChats} turns are running; try again.` }, 429, {
        'Retry-After': '5',
      });
    }
    turnsRunning++;
    const startedAt = Date.now();
    // Stopped when the caller goes away, the turn runs out of time or the process stops.
    const deadline = AbortSignal.timeout(turnTimeoutMs);
    const signals = [c.req.raw.signal, deadline, ...(shutdown ? [shutdown] : [])];
    try {
      const turn = await agent.run(message.trim(), { signal: AbortSignal.any(signals) });
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
      if (shutdown?.aborted) {
        logger.warn('chat stopped by the shutdown', { duration_ms: Date.now() - startedAt });
        return stopping();
      }
      if (deadline.aborted) {
        logger.warn('chat timed out', { duration_ms: Date.now() - startedAt });
        return c.json(
          { error: 'timeout', error_description: `The turn took longer than ${turnTimeoutMs / 1000} s.` },
          504,
        );
      }
      if (c.req.raw.signal.aborted) {
        // The caller went away (a client's Ctrl-C, a proxy's timeout): nothing failed here, and
        // nobody is left to answer.
        logger.info('chat abandoned: the caller disconnected', { duration_ms: Date.now() - startedAt });
        // nginx's "client closed request", for the record only: no one receives it.
        return c.body(null, 499 as UnofficialStatusCode);
      }
      // The model or an MCP server failed; the details go to the log, not to the caller.
      logger.error('chat failed', { duration_ms: Date.now() - startedAt, error: (error as Error).message });
      return c.json({ error: 'the agent could not complete this request' }, 502);
    } finally {
      turnsRunning--;
    }
  }

  return app;
}

/** What a reverse proxy adds; a request that went through one did not start on this machine. */
const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'];

/** The connection's remote address (@hono/node-server); empty when unknown, which is not loopback. */
function peerAddress(c: Context): string {
  return (
    (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress ?? ''
  );
}

/** `Host` without its port (`[::1]:8001` → `[::1]`); empty when there is none. */
function hostnameOf(host: string | undefined): string {
  // Only what a browser puts in Host (no user info, no path): URL parsing alone would read
  // `evil.example@127.0.0.1` as 127.0.0.1.
  if (!host || !/^[A-Za-z0-9.-]+(:\d+)?$|^\[[0-9A-Fa-f:.]+\](:\d+)?$/.test(host)) return '';
  try {
    return new URL(`http://${host}`).hostname;
  } catch {
    return '';
  }
}

function bearerMatches(header: string | undefined, expected: string): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!match?.[1]) return false;
  // Equal-length digests, so the comparison takes the same time whatever the guess.
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(match[1]), digest(expected));
}
