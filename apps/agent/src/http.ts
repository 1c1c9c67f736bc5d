/**
 * The deployed agent as a small service: `GET /health` for the container's liveness probe,
 * `GET /ready` (200 once connected to its MCP servers) and `POST /chat {"message": …}` →
 * `{"reply": …, "tool_calls": [...]}`, one turn each, with no conversation kept between turns.
 *
 * A call that may delete or overwrite data is put to the caller (`AGENT_DESTRUCTIVE_TOOLS=ask`):
 * the answer is then 202 `{"confirmation": {"id", "name", "args", "expires_in"}, "tool_calls"}`,
 * and the turn waits, in this process, for `POST /chat {"confirmation": id, "approve": true|false}`,
 * whose answer is the turn's reply (or its next question). Text in a tool result can ask the model
 * for such a call; only the caller, who reads the call's arguments, can say yes.
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
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isLoopbackAddress, isLoopbackUrlHost } from '@mcp-auth-stack/loopback';
import { type Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { UnofficialStatusCode } from 'hono/utils/http-status';
import { type ExpensesAgent, NOT_ASKED, type ToolCallRecord } from './agent.ts';
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
/** How long a turn waits for the answer to its question before it is stopped. */
export const DEFAULT_CONFIRMATION_TIMEOUT_MS = 300_000;
/** Turns that may wait for an answer at once; a question beyond them is refused (as with nobody to ask). */
export const DEFAULT_MAX_WAITING_CONFIRMATIONS = 16;

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
  /**
   * `AGENT_DESTRUCTIVE_TOOLS=ask`: a call that may delete or overwrite data is put to the
   * caller (202 with the call; the caller answers with `{"confirmation": id, "approve": …}`).
   * Otherwise the agent's own rule applies (refused, or run unasked).
   */
  askForConfirmation?: boolean;
  /** How long a question waits for its answer (default `DEFAULT_CONFIRMATION_TIMEOUT_MS`). */
  confirmationTimeoutMs?: number;
  /** Questions that may wait at once (default `DEFAULT_MAX_WAITING_CONFIRMATIONS`). */
  maxWaitingConfirmations?: number;
}

type PendingCall = { name: string; args: Record<string, unknown> };

/** What a request of a turn gets: the turn's end, or the question it waits on. */
type TurnOutcome =
  | { kind: 'done'; reply: string }
  | { kind: 'question'; id: string; call: PendingCall }
  | { kind: 'failed'; error: unknown };

interface ChatTurn {
  startedAt: number;
  /** Every call of the turn so far, its results included. */
  toolCalls: ToolCallRecord[];
  /** Ends the turn (its caller went away, its time ran out). */
  stop(): void;
  /** The turn's next outcome; asked for before whatever lets the turn go on. */
  nextOutcome(): Promise<TurnOutcome>;
}

interface WaitingConfirmation {
  turn: ChatTurn;
  call: PendingCall;
  answer(approved: boolean): void;
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
  askForConfirmation = false,
  confirmationTimeoutMs = DEFAULT_CONFIRMATION_TIMEOUT_MS,
  maxWaitingConfirmations = DEFAULT_MAX_WAITING_CONFIRMATIONS,
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

  /** Turns waiting for their caller's answer, by the confirmation's id. */
  const waiting = new Map<string, WaitingConfirmation>();

  async function chat(c: Context) {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: 'the body must be JSON: {"message": "…"}' }, 400);
    }
    const { message, confirmation, approve } = (body ?? {}) as {
      message?: unknown;
      confirmation?: unknown;
      approve?: unknown;
    };
    if (confirmation !== undefined) {
      if (message !== undefined || typeof confirmation !== 'string' || typeof approve !== 'boolean') {
        return c.json(
          {
            error: '"confirmation" must be the id a reply asked about, with "approve": true or false, and no "message"',
          },
          400,
        );
      }
      if (shutdown?.aborted) {
        // Its turn ended with the stop: no retry can answer it (no Retry-After).
        return c.json(
          {
            error: 'shutting_down',
            error_description: 'The agent is stopping; the turn that asked was stopped with it.',
          },
          503,
        );
      }
      const question = waiting.get(confirmation);
      if (question === undefined) {
        return c.json(
          {
            error: 'unknown_confirmation',
            error_description: `No turn waits for this confirmation: it was answered, it expired (after ${confirmationTimeoutMs / 1000} s), or the agent restarted.`,
          },
          404,
        );
      }
      if (turnsRunning >= maxConcurrentChats) return busy(c);
      logger.info('chat confirmation answered', { tool: question.call.name, approved: approve });
      // The turn's next outcome is this request's, taken before the answer lets the turn go on.
      const outcome = question.turn.nextOutcome();
      question.answer(approve);
      return await answerWith(c, question.turn, outcome);
    }
    if (typeof message !== 'string' || !message.trim() || message.length > MAX_MESSAGE_LENGTH) {
      return c.json({ error: `"message" must be a non-empty string of at most ${MAX_MESSAGE_LENGTH} characters` }, 400);
    }
    if (shutdown?.aborted) return stopping(c);
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
    if (turnsRunning >= maxConcurrentChats) return busy(c);
    const turn = startTurn(agent, message.trim());
    return await answerWith(c, turn, turn.nextOutcome());
  }

  function stopping(c: Context) {
    return c.json({ error: 'shutting_down', error_description: 'The agent is stopping; try again.' }, 503, {
      'Retry-After': '10',
    });
  }

  function busy(c: Context) {
    return c.json({ error: 'busy', error_description: `${maxConcurrentChats} turns are running; try again.` }, 429, {
      'Retry-After': '5',
    });
  }

  /**
   * A turn of the agent. It runs on between requests: a call that may delete or overwrite data
   * waits (at most `confirmationTimeoutMs`) for a request that answers its question.
   */
  function startTurn(agent: ExpensesAgent, message: string): ChatTurn {
    const stop = new AbortController();
    const signal = shutdown ? AbortSignal.any([stop.signal, shutdown]) : stop.signal;
    const toolCalls: ToolCallRecord[] = [];
    // An outcome waits here until a request asks for it (the turn may get there first).
    let listener: ((outcome: TurnOutcome) => void) | undefined;
    let unread: TurnOutcome | undefined;
    const report = (outcome: TurnOutcome) => {
      if (listener === undefined) unread = outcome;
      else listener(outcome);
      listener = undefined;
    };
    const turn: ChatTurn = {
      startedAt: Date.now(),
      toolCalls,
      stop: () => stop.abort(),
      nextOutcome: () =>
        new Promise<TurnOutcome>((resolve) => {
          if (unread === undefined) listener = resolve;
          else resolve(unread);
          unread = undefined;
        }),
    };
    const confirmDestructive = askForConfirmation
      ? (call: PendingCall) =>
          new Promise<boolean | typeof NOT_ASKED>((resolve) => {
            // Nobody to ask: the turn is stopping, or too many questions wait already.
            if (signal.aborted || waiting.size >= maxWaitingConfirmations) return resolve(NOT_ASKED);
            const id = randomBytes(16).toString('base64url');
            const forget = () => {
              clearTimeout(expiry);
              signal.removeEventListener('abort', withdraw);
              waiting.delete(id);
            };
            const withdraw = () => {
              forget();
              resolve(NOT_ASKED);
            };
            const expiry = setTimeout(() => {
              logger.warn('chat confirmation expired; the turn was stopped', { tool: call.name });
              withdraw();
              stop.abort();
            }, confirmationTimeoutMs);
            expiry.unref(); // a question left waiting does not keep a stopping process alive
            signal.addEventListener('abort', withdraw, { once: true });
            waiting.set(id, {
              turn,
              call,
              answer: (approved) => {
                forget();
                resolve(approved);
              },
            });
            report({ kind: 'question', id, call });
          })
      : undefined;
    agent
      .run(message, {
        signal,
        events: { onToolResult: (record) => toolCalls.push(record) },
        ...(confirmDestructive ? { confirmDestructive } : {}),
      })
      .then(
        (result) => report({ kind: 'done', reply: result.reply }),
        (error: unknown) => report({ kind: 'failed', error }),
      );
    return turn;
  }

  /**
   * This request's answer: the turn's reply, or the question it waits on (202). The request's
   * own bounds stop the turn: its caller going away, `turnTimeoutMs`, the process stopping.
   */
  async function answerWith(c: Context, turn: ChatTurn, outcome: Promise<TurnOutcome>) {
    turnsRunning++;
    const legStartedAt = Date.now();
    const deadline = AbortSignal.timeout(turnTimeoutMs);
    const bounds = AbortSignal.any([c.req.raw.signal, deadline]);
    bounds.addEventListener('abort', turn.stop, { once: true });
    // A caller gone before the turn got here: an aborted signal never fires its listeners.
    if (bounds.aborted) turn.stop();
    try {
      const result = await outcome;
      const tool_calls = turn.toolCalls.map((call) => ({
        name: call.name,
        args: call.args,
        result: call.result,
        is_error: call.isError,
      }));
      if (result.kind === 'question') {
        logger.info('chat waits for a confirmation', {
          duration_ms: Date.now() - legStartedAt,
          tool: result.call.name,
        });
        return c.json(
          {
            confirmation: {
              id: result.id,
              name: result.call.name,
              args: result.call.args,
              expires_in: confirmationTimeoutMs / 1000,
            },
            tool_calls,
          },
          202,
        );
      }
      if (result.kind === 'done') {
        logger.info('chat', {
          duration_ms: Date.now() - turn.startedAt,
          tools: turn.toolCalls.map((call) => call.name),
          tool_errors: turn.toolCalls.filter((call) => call.isError).length,
        });
        return c.json({ reply: result.reply, tool_calls });
      }
      if (shutdown?.aborted) {
        logger.warn('chat stopped by the shutdown', { duration_ms: Date.now() - legStartedAt });
        return stopping(c);
      }
      if (deadline.aborted) {
        logger.warn('chat timed out', { duration_ms: Date.now() - legStartedAt });
        return c.json(
          { error: 'timeout', error_description: `The turn took longer than ${turnTimeoutMs / 1000} s.` },
          504,
        );
      }
      if (c.req.raw.signal.aborted) {
        // The caller went away (a client's Ctrl-C, a proxy's timeout): nothing failed here, and
        // nobody is left to answer.
        logger.info('chat abandoned: the caller disconnected', { duration_ms: Date.now() - legStartedAt });
        // nginx's "client closed request", for the record only: no one receives it.
        return c.body(null, 499 as UnofficialStatusCode);
      }
      // The model or an MCP server failed; the details go to the log, not to the caller.
      logger.error('chat failed', {
        duration_ms: Date.now() - legStartedAt,
        error: (result.error as Error | undefined)?.message ?? String(result.error),
      });
      return c.json({ error: 'the agent could not complete this request' }, 502);
    } finally {
      bounds.removeEventListener('abort', turn.stop);
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
