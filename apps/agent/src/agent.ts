/**
 * The expenses assistant: a LangChain v1 agent (`createAgent`) whose tools come from MCP
 * servers through `@langchain/mcp-adapters`. The agent loop, the model client and the MCP
 * client are the libraries' own; this module only wires them and reports what happened.
 */
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import { AIMessage, AIMessageChunk, type BaseMessage, HumanMessage, ToolMessage } from '@langchain/core/messages';
import type { StructuredToolInterface } from '@langchain/core/tools';
import { MultiServerMCPClient } from '@langchain/mcp-adapters';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { createAgent, createMiddleware, dynamicSystemPromptMiddleware } from 'langchain';
import { mcpConnectionFetch } from './mcp-fetch.ts';
import { withoutUrlSecrets } from './url-secrets.ts';

export interface McpServerConnection {
  name: string;
  url: string;
  headers?: Record<string, string>;
  authProvider?: OAuthClientProvider;
  /** How long a tool call may take; unset: the MCP SDK's request timeout (60 s). */
  toolTimeoutMs?: number;
}

/** One tool call of a turn, as the CLI prints it and `POST /chat` returns it. */
export interface ToolCallRecord {
  id: string;
  name: string;
  args: Record<string, unknown>;
  /** The tool's text result, shortened (the model got it whole, up to MAX_TOOL_RESULT_CHARACTERS). */
  result: string;
  isError: boolean;
}

export interface TurnResult {
  reply: string;
  toolCalls: ToolCallRecord[];
  /** The conversation after this turn, to pass back for the next one (system prompt excluded). */
  history: BaseMessage[];
}

export interface TurnEvents {
  /** Text of the answer as the model streams it (only with `stream: true`). */
  onText?(text: string): void;
  onToolCall?(call: { id: string; name: string; args: Record<string, unknown> }): void;
  onToolResult?(record: ToolCallRecord): void;
}

export interface AgentOptions {
  model: BaseChatModel;
  tools: StructuredToolInterface[];
  /** The clock the system prompt reads; tests pin it. */
  now?: () => Date;
  /**
   * Counts completed interactive authorizations (OAuth step-up). A tool call that failed while
   * this number moved is retried once, now with the token that has the new scope.
   */
  authorizationEpoch?: () => number;
  /**
   * How a failed tool call's text is written before the model and the turn's record see it:
   * `withoutUrlSecrets` unless given (the runtime adds the configuration's own secrets).
   */
  hideSecrets?: (text: string) => string;
  /**
   * Asked before each call of a tool that may delete or overwrite data (`isDestructive`): the
   * call runs only when it resolves true. Unset: such calls run unasked (a turn's own
   * `confirmDestructive` is not asked either).
   */
  confirmDestructive?: ConfirmDestructive;
}

/**
 * What a confirmation resolves to when nobody could be asked: the call does not run either.
 * Falsy, so that `if (await confirm(call))` can only ever run a confirmed call.
 */
export const NOT_ASKED = null;

/**
 * Asks about a call of a tool that may delete or overwrite data: true when the person confirms
 * it, false when they refuse it, `NOT_ASKED` when nobody could be asked (no terminal, too many
 * questions waiting). Only a refusal is remembered for the rest of the turn.
 */
export type ConfirmDestructive = (call: {
  name: string;
  args: Record<string, unknown>;
}) => Promise<boolean | typeof NOT_ASKED>;

/**
 * How a turn's question about one call ended: `refused-before` when the person already said no
 * to this very call (same tool, same arguments) in this turn, and was not asked again.
 */
type Answer = 'yes' | 'no' | 'refused-before';

/** What a turn hands its tool-call middleware (LangGraph's run context: one per `run`). */
interface TurnContext {
  ask?: (call: { name: string; args: Record<string, unknown> }) => Promise<Answer>;
}

/**
 * Set in a tool's metadata when its server's annotations are not believed (an extra server not
 * marked `trustAnnotations`): each of its calls is treated as one that may delete or overwrite.
 */
export const UNTRUSTED_ANNOTATIONS = 'mcpAuthStackUntrustedAnnotations';

/**
 * A call that may delete or overwrite data, by its MCP annotations as the specification reads
 * them: `destructiveHint` defaults to true for a tool that is not `readOnlyHint` (a tool without
 * annotations counts). Annotations are the server's word (MCP: untrusted unless the server is):
 * believed only from the expenses server and extra servers marked `trustAnnotations`, and only
 * to ask less.
 */
export function isDestructive(tool: { metadata?: Record<string, unknown> }): boolean {
  if (tool.metadata?.[UNTRUSTED_ANNOTATIONS] === true) return true;
  const annotations = tool.metadata?.annotations as { readOnlyHint?: boolean; destructiveHint?: boolean } | undefined;
  if (annotations?.readOnlyHint === true) return false;
  return annotations?.destructiveHint !== false;
}

const RESULT_SUMMARY_LENGTH = 240;

/**
 * Rebuilt for every model call, so a long-running agent (serve mode) never believes it is still
 * the day it started: "yesterday" must mean the day before the request.
 */
export function systemPrompt(now: Date): string {
  const date = localDate(now);
  const weekday = now.toLocaleDateString('en-US', { weekday: 'long' });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return [
    'You are an expenses assistant. You record and look up the user’s expenses with the tools you have.',
    `Today is ${weekday}, ${date} (time zone ${zone}). Resolve relative dates such as "yesterday" or "last Friday" against today and pass dates to tools as YYYY-MM-DD.`,
    'Categories: food, transport, entertainment, shopping, gadget, other. Payment methods: amex, visa, cash.',
    'If a detail the tools need is missing and cannot be inferred sensibly, ask for it instead of guessing.',
    'After using a tool, say briefly what you did, using the tool’s result.',
  ].join('\n');
}

/** YYYY-MM-DD in the local time zone (`TZ`), not UTC: a user's "today". */
export function localDate(now: Date): string {
  const pad = (value: number) => String(value).padStart(2, '0');
  return `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())}`;
}

/** The MCP client for all configured servers; tools keep their own names (no server prefix). */
export function createMcpClient(servers: McpServerConnection[]): MultiServerMCPClient {
  const mcpServers = Object.fromEntries(
    servers.map((server) => [
      server.name,
      {
        transport: 'http' as const,
        url: server.url,
        ...(server.headers ? { headers: server.headers } : {}),
        ...(server.authProvider ? { authProvider: server.authProvider } : {}),
        ...(server.toolTimeoutMs ? { defaultToolTimeout: server.toolTimeoutMs } : {}),
        // Bounded responses, no listening stream (patches/ passes it to the SDK's transport).
        fetch: mcpConnectionFetch(server.url),
        // Stateless HTTP servers need no reconnecting SSE stream; failures surface at once.
        reconnect: { enabled: false },
        // Streamable HTTP only: a refused credential should not be retried on the legacy SSE endpoints.
        automaticSSEFallback: false,
      },
    ]),
  );
  return new MultiServerMCPClient({
    mcpServers,
    throwOnLoadError: true,
    prefixToolNameWithServerName: false,
    useStandardContentBlocks: false,
    afterToolCall: ({ result: [content, artifacts] }) => boundedToolResult(content, artifacts),
  });
}

/**
 * How much of a tool's result the model reads, in characters. This server's largest answer, a
 * page of 200 expenses with 500-character descriptions, is about 118,000; any server's answer
 * goes to the model whole up to this, and is kept in the conversation for the turns after it.
 */
export const MAX_TOOL_RESULT_CHARACTERS = 131_072;

/**
 * What the model gets of a tool's result. A result with structuredContent arrives as one text
 * block that also carries the structured copy; the model would read that as JSON, every value
 * twice, so it gets the text, which the specification's text block is for. A result larger than
 * MAX_TOOL_RESULT_CHARACTERS (a server gone wrong, or text planted to run up the model's bill
 * and the agent's memory) is cut, and says so; past the limit, content that is not text
 * (images, resources) is left out. `undefined`: the result as it came.
 */
export function boundedToolResult(content: unknown, artifacts: unknown): { result: string } | undefined {
  const blocks: unknown[] = Array.isArray(content) ? content : [];
  const [block] = blocks;
  const onlyText =
    typeof content === 'string' ? content : blocks.length === 1 && isTextBlock(block) ? block.text : undefined;
  if (onlyText !== undefined) {
    return typeof content === 'string' && onlyText.length <= MAX_TOOL_RESULT_CHARACTERS
      ? undefined
      : { result: cutToLimit(onlyText, '') };
  }
  if (JSON.stringify([content, artifacts ?? []]).length <= MAX_TOOL_RESULT_CHARACTERS) return undefined;
  const texts = blocks.filter(isTextBlock).map((text) => text.text);
  const left = blocks.length - texts.length + (Array.isArray(artifacts) ? artifacts.length : 0);
  return { result: cutToLimit(texts.join('\n'), left > 0 ? ` ${left} part(s) that are not text were left out.` : '') };
}

function isTextBlock(block: unknown): block is { type: 'text'; text: string } {
  return (
    typeof block === 'object' &&
    block !== null &&
    (block as { type?: unknown }).type === 'text' &&
    typeof (block as { text?: unknown }).text === 'string'
  );
}

function cutToLimit(text: string, more: string): string {
  if (text.length <= MAX_TOOL_RESULT_CHARACTERS && more === '') return text;
  let shown = text.slice(0, MAX_TOOL_RESULT_CHARACTERS);
  // Not half of a character written as two UTF-16 units.
  if (/[\ud800-\udbff]$/.test(shown)) shown = shown.slice(0, -1);
  const cut =
    shown.length < text.length ? ` The text was cut after ${shown.length} of its ${text.length} characters.` : '';
  return `${shown}\n[This tool result was too large to show whole.${cut}${more} Ask the tool for less, if it can: a smaller page, a narrower range.]`;
}

export class ExpensesAgent {
  readonly #agent;
  readonly #toolNames: string[];
  readonly #confirmDestructive: ConfirmDestructive | undefined;

  constructor(options: AgentOptions) {
    const now = options.now ?? (() => new Date());
    const epoch = options.authorizationEpoch;
    this.#confirmDestructive = options.confirmDestructive;
    const middleware = [
      // Outermost: a call retried after a sign-in is not asked about twice.
      ...(options.confirmDestructive ? [confirmDestructiveCalls()] : []),
      dynamicSystemPromptMiddleware(() => systemPrompt(now())),
      toolErrorsWithoutSecrets(options.hideSecrets ?? withoutUrlSecrets),
    ];
    if (epoch) middleware.push(retryAfterAuthorization(epoch) as never);
    this.#agent = createAgent({ model: options.model, tools: options.tools, middleware });
    this.#toolNames = options.tools.map((tool) => tool.name);
  }

  get toolNames(): string[] {
    return [...this.#toolNames];
  }

  /**
   * Runs one user message through the agent loop. With `stream`, the model is called in
   * streaming mode and text arrives through `onText` as it is generated; tool calls and results
   * are reported either way. `confirmDestructive` asks this turn's person instead of the
   * agent's (HTTP mode: the caller of this turn), when the agent asks at all.
   */
  async run(
    message: string,
    options: {
      history?: BaseMessage[];
      stream?: boolean;
      events?: TurnEvents;
      signal?: AbortSignal;
      confirmDestructive?: ConfirmDestructive;
    } = {},
  ): Promise<TurnResult> {
    const history = [...(options.history ?? []), new HumanMessage(message)];
    const events = options.events ?? {};
    const pending = new Map<string, { name: string; args: Record<string, unknown> }>();
    const toolCalls: ToolCallRecord[] = [];
    let reply = '';

    const confirm = options.confirmDestructive ?? this.#confirmDestructive;
    const context: TurnContext = confirm ? { ask: turnQuestions(confirm) } : {};
    const stream = await this.#agent.stream(
      { messages: history },
      {
        context,
        streamMode: options.stream ? ['updates', 'messages'] : ['updates'],
        recursionLimit: 25,
        ...(options.signal ? { signal: options.signal } : {}),
      },
    );
    for await (const [mode, chunk] of stream as AsyncIterable<[string, unknown]>) {
      if (mode === 'messages') {
        const [messageChunk] = chunk as [BaseMessage, Record<string, unknown>];
        if (AIMessageChunk.isInstance(messageChunk)) {
          const text = textOf(messageChunk);
          if (text) events.onText?.(text);
        }
        continue;
      }
      // `updates`: the messages each node added, in order.
      for (const update of Object.values(chunk as Record<string, { messages?: BaseMessage[] } | undefined>)) {
        for (const added of update?.messages ?? []) {
          history.push(added);
          if (AIMessage.isInstance(added)) {
            for (const call of added.tool_calls ?? []) {
              const id = call.id ?? `${call.name}-${pending.size}`;
              pending.set(id, { name: call.name, args: call.args });
              events.onToolCall?.({ id, name: call.name, args: call.args });
            }
            if (!added.tool_calls?.length) reply = textOf(added);
          } else if (ToolMessage.isInstance(added)) {
            const call = pending.get(added.tool_call_id);
            const record: ToolCallRecord = {
              id: added.tool_call_id,
              name: call?.name ?? added.name ?? 'unknown',
              args: call?.args ?? {},
              result: summarize(textOf(added)),
              isError: added.status === 'error',
            };
            toolCalls.push(record);
            events.onToolResult?.(record);
          }
        }
      }
    }
    return { reply, toolCalls, history };
  }
}

/**
 * Calls that may delete or overwrite data run only when confirmed: text in a tool result (an
 * expense description someone wrote, a web page an extra server fetched) can ask the model for a
 * delete the person never asked for (MCP, Tools: a human in the loop for such calls). A call not
 * confirmed is a tool error the model reads and tells the person about.
 */
function confirmDestructiveCalls() {
  return createMiddleware({
    name: 'ConfirmDestructiveCalls',
    wrapToolCall: async (request, handler) => {
      // A tool the agent does not have is the tool node's error ("not found"), not a question.
      const tool = request.tool as { metadata?: Record<string, unknown> } | undefined;
      if (tool === undefined || !isDestructive(tool)) return handler(request);
      const { name, args, id } = request.toolCall;
      const ask = (request.runtime.context as TurnContext | undefined)?.ask;
      const answer = ask ? await ask({ name, args: args as Record<string, unknown> }) : 'no';
      if (answer === 'yes') return handler(request);
      return new ToolMessage({
        content:
          answer === 'refused-before'
            ? `Not done: this same ${name} call was already refused in this turn and is not asked about again. Nothing was changed. Do not request it again; tell the user what you meant to do.`
            : `Not done: ${name} may delete or overwrite data, and this call was not confirmed by the user. Nothing was changed. Tell the user what you meant to do; they can ask again and confirm it.`,
        tool_call_id: id ?? name,
        name,
        status: 'error',
      });
    },
  });
}

/**
 * A turn's questions. One at a time: the model's calls of one message run in parallel, and a
 * person answers them in turn (a second question while one waits would go unanswered). Per
 * turn: the turns of HTTP mode run at once, each asking its own caller. A call the person
 * refused is not put to them again in the same turn: a model that retries it would otherwise
 * ask until its step limit (each question a 202 round trip for an HTTP caller).
 */
function turnQuestions(confirm: ConfirmDestructive): NonNullable<TurnContext['ask']> {
  const refused = new Set<string>();
  let questions: Promise<unknown> = Promise.resolve();
  return (call) => {
    const key = `${call.name}\u0000${canonicalJson(call.args)}`;
    const answer = questions.then(async (): Promise<Answer> => {
      if (refused.has(key)) return 'refused-before';
      const answer = await confirm(call);
      if (answer === true) return 'yes';
      if (answer === false) refused.add(key);
      return 'no';
    });
    questions = answer.catch(() => {});
    return answer;
  };
}

/** A UUID in any case: PostgreSQL's `uuid`, which the expense ids are, reads every case as one. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * JSON with every object's keys sorted and every UUID in lower case: the same arguments in
 * another order, or the same expense id in capitals, are the same call.
 */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (typeof inner === 'string' && UUID.test(inner)) return inner.toLowerCase();
    return inner && typeof inner === 'object' && !Array.isArray(inner)
      ? Object.fromEntries(
          Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
        )
      : inner;
  });
}

/**
 * A failed tool call's text as `hide` writes it (every URL cut to its origin and path, the
 * configuration's secrets left out): it goes to the model's provider and into the turn's record,
 * and a server's error may repeat the URL it was called with, an extra server's key in its
 * query. Results that succeed are the tool's content and stay as they are.
 */
function toolErrorsWithoutSecrets(hide: (text: string) => string) {
  return createMiddleware({
    name: 'ToolErrorsWithoutSecrets',
    wrapToolCall: async (request, handler) => {
      // What a handler throws (an abort, an interrupt) ends the turn and is not the model's to read.
      const result = await handler(request);
      if (!ToolMessage.isInstance(result) || result.status !== 'error') return result;
      const text = textOf(result);
      // A tool's error result (`isError`) reaches here as the adapters' exception text, never
      // through afterToolCall: bounded here, as results are there.
      const hidden = cutToLimit(hide(text), '');
      if (hidden === text) return result;
      return new ToolMessage({
        content: hidden,
        tool_call_id: result.tool_call_id,
        ...(result.name === undefined ? {} : { name: result.name }),
        status: 'error',
      });
    },
  });
}

/** How many times a call is sent again while new tokens keep coming (a refresh, then a sign-in). */
const RETRIES_AFTER_AUTHORIZATION = 2;
/**
 * A tool's own error result (`@langchain/mcp-adapters`: "MCP tool '…' on server '…' returned an
 * error: …"): the server ran the call, and answered. Looked for as two fixed strings: a name with
 * a quote in it must not make a call the server ran look refused (and sent again), and a pattern
 * with two wildcards backtracked quadratically over an error text the server writes. Taking a
 * refused call for answered only means it is not sent again.
 */
function serverAnswered(text: string): boolean {
  return text.includes("MCP tool '") && text.includes("' returned an error:");
}
/**
 * What the SDK transport throws when it got a new token for a 401 or 403 but gave up on that
 * request (`UnauthorizedError`): the request was refused, so it never ran.
 */
const REFUSED_FOR_AUTHORIZATION = /\bUnauthorized\b/;

/**
 * When a tool call fails because the MCP client had to get a new token (a refresh for a token
 * refused before its expiry, a first login, or step-up to a scope the token lacks), the SDK
 * transport gives up on that request even though the new token is in hand by the time it
 * returns. The call is sent again then, as long as new tokens keep coming (a refreshed token
 * refused too gets a sign-in), at most twice, and only when it failed for authorization: a call
 * that timed out, lost its connection or was answered by the server itself may have run (an add
 * that failed after it was stored must not be sent again).
 */
function retryAfterAuthorization(authorizationEpoch: () => number) {
  return createMiddleware({
    name: 'RetryAfterAuthorization',
    wrapToolCall: async (request, handler) => {
      const attempt = async () => {
        try {
          return await handler(request);
        } catch (error) {
          // Errors thrown from middleware would end the whole run; the model should see them
          // instead, as it does without this middleware.
          return new ToolMessage({
            content: `${error}`,
            tool_call_id: request.toolCall.id ?? '',
            name: request.toolCall.name,
            status: 'error',
          });
        }
      };
      let epoch = authorizationEpoch();
      let result = await attempt();
      for (let retry = 0; retry < RETRIES_AFTER_AUTHORIZATION; retry++) {
        const failed = ToolMessage.isInstance(result) && result.status === 'error';
        if (!failed || authorizationEpoch() === epoch) break;
        const text = textOf(result as BaseMessage);
        if (serverAnswered(text) || !REFUSED_FOR_AUTHORIZATION.test(text)) break;
        epoch = authorizationEpoch();
        result = await attempt();
      }
      return result;
    },
  });
}

export function textOf(message: BaseMessage): string {
  const content = message.content;
  if (typeof content === 'string') return content;
  return content.map((part) => (part.type === 'text' && typeof part.text === 'string' ? part.text : '')).join('');
}

export function summarize(text: string, length = RESULT_SUMMARY_LENGTH): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= length ? flat : `${flat.slice(0, length - 1)}…`;
}
