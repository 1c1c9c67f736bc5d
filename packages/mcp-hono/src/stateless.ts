import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { McpServer, RegisteredTool } from '@modelcontextprotocol/sdk/server/mcp.js';
import {
  isJSONRPCRequest,
  type JSONRPCNotification,
  type JSONRPCRequest,
  type JSONRPCResultResponse,
  LATEST_PROTOCOL_VERSION,
  type MessageExtraInfo,
  SUPPORTED_PROTOCOL_VERSIONS,
} from '@modelcontextprotocol/sdk/types.js';
import type { Context } from 'hono';
import { discardBody, parseBodyOnce, readBodyOnce } from './body.ts';
import { callToolDirectly } from './direct-tool-call.ts';
import { lossyRequestNumbers } from './exact-json.ts';
import { DEFAULT_MAX_JSON_DEPTH, jsonTextTooDeep } from './json-depth.ts';
import { MultiplexTransport } from './multiplex-transport.ts';
import { INVALID_PARAMS, INVALID_REQUEST, JSON_HEADERS, PARSE_ERROR, rpcError } from './rpc-error.ts';

export interface StatelessMcpOptions {
  /** Largest request body accepted, in bytes; larger ones get 413. */
  maxBodyBytes?: number;
  /** The authenticated caller of this exchange, handed to tools as `extra.authInfo`. */
  authInfo?: (c: Context) => AuthInfo | undefined;
  /**
   * Which tools this caller may see in `tools/list` (for example, those its scopes allow).
   * The server is shared by every caller, so the list is filtered per exchange here.
   */
  toolVisible?: (toolName: string, c: Context) => boolean;
  /** Which resources (by URI) and resource templates (by URI template) this caller sees in their listings. */
  resourceVisible?: (uri: string, c: Context) => boolean;
  /** Which prompts this caller sees in `prompts/list`. */
  promptVisible?: (promptName: string, c: Context) => boolean;
  /**
   * The server's tools never change at runtime: the listing is asked of the server once, when
   * the endpoint is made (register every tool before), and `tools/list` is answered from it
   * (the SDK converts every tool's schemas to JSON Schema on each `tools/list`, which costs
   * more than the rest of the request, and the first time much more).
   */
  staticToolList?: boolean;
  /**
   * Refuse numbers that a double cannot hold exactly (`12.340000000000000001` would otherwise
   * arrive as 12.34): a tool error for `tools/call`, "Invalid params" for anything else.
   */
  exactNumbers?: boolean;
  /**
   * Deepest nesting of arrays and objects accepted (default 64); deeper bodies get 400 before
   * anything walks them (the exact-number check, the SDK's validation).
   */
  maxJsonDepth?: number;
  /**
   * Tools whose calls this endpoint runs itself (`callToolDirectly`: the SDK's schemas and
   * error results, without the SDK's per-request dispatch), by name: the handles
   * `McpServer#registerTool` returned. Calls of other tools, and any call out of the common case
   * (invalid, task-augmented, arguments that fail the schema), go through the SDK as before.
   */
  directToolCalls?: ReadonlyMap<string, RegisteredTool>;
  /**
   * Request headers that carry a credential besides `Authorization`, `Proxy-Authorization`,
   * `Cookie` and `X-API-Key` (an API key header of another name): kept from what tools see in
   * `extra.requestInfo`.
   */
  credentialHeaders?: readonly string[];
}

/** The listings filtered per caller: the option that decides, the result's array, and what names an item. */
const LISTINGS: Readonly<
  Record<string, { option: 'toolVisible' | 'resourceVisible' | 'promptVisible'; member: string; key: string }>
> = {
  'tools/list': { option: 'toolVisible', member: 'tools', key: 'name' },
  'resources/list': { option: 'resourceVisible', member: 'resources', key: 'uri' },
  'resources/templates/list': { option: 'resourceVisible', member: 'resourceTemplates', key: 'uriTemplate' },
  'prompts/list': { option: 'promptVisible', member: 'prompts', key: 'name' },
};

/**
 * A Streamable HTTP endpoint (MCP transport revision 2025-03-26 and later) without protocol
 * sessions: every POST carries one JSON-RPC message and, for a request, gets its response as
 * `application/json`. GET and DELETE answer 405, as the specification allows for a server
 * that offers no server-initiated stream and no sessions.
 *
 * The MCP server is connected once, here, and shared by all requests.
 */
export async function createStatelessMcpEndpoint(
  server: McpServer | Server,
  options: StatelessMcpOptions = {},
): Promise<{ handle: (c: Context) => Promise<Response>; close: () => Promise<void> }> {
  const transport = new MultiplexTransport();
  await server.connect(transport);
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const maxJsonDepth = options.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  // MCP 2025-11-25, Tasks: a receiver that does not declare tasks MUST process a task-augmented
  // request normally, ignoring `task`; the SDK answers it with an internal error (-32603). What
  // the server declares is what its own `initialize` says.
  const introduction = await transport.request(
    {
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: {
        protocolVersion: LATEST_PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'mcp-hono', version: '0' },
      },
    },
    {},
  );
  const declaresTasks =
    'result' in introduction &&
    (introduction.result as { capabilities?: { tasks?: unknown } }).capabilities?.tasks !== undefined;
  // Made now, while the server starts, rather than by the first caller. A server without
  // tools answers with an error (the SDK lets no tool be added once connected), and every
  // tools/list then goes to it as before.
  const startListing = options.staticToolList
    ? await transport.request({ jsonrpc: '2.0', id: 0, method: 'tools/list' }, {})
    : undefined;
  const cachedToolList = startListing && 'result' in startListing ? startListing.result : undefined;
  const serializedListings = new Map<string, Buffer>();
  const hiddenHeaders = new Set([
    ...CREDENTIAL_HEADERS,
    ...(options.credentialHeaders ?? []).map((name) => name.toLowerCase()),
  ]);

  async function handle(c: Context): Promise<Response> {
    const request = c.req.raw;
    if (request.method !== 'POST') {
      return rpcError(c, 405, INVALID_REQUEST, 'Method not allowed: this endpoint takes JSON-RPC messages by POST.', {
        Allow: 'POST',
      });
    }
    // Media types are case-insensitive (RFC 9110 8.3.1).
    const accept = (request.headers.get('accept') ?? '').toLowerCase();
    if (!accept.includes('application/json') || !accept.includes('text/event-stream')) {
      return rpcError(
        c,
        406,
        INVALID_REQUEST,
        'Not Acceptable: the client must accept application/json and text/event-stream.',
      );
    }
    const contentType = request.headers.get('content-type') ?? '';
    if (!/^application\/json\s*(;|$)/i.test(contentType)) {
      return rpcError(c, 415, INVALID_REQUEST, 'Unsupported Media Type: send Content-Type: application/json.');
    }
    // Bodies are read as sent: a compressed one would fail as JSON, and a plain one labelled as
    // compressed would run though its label says otherwise (RFC 9110 8.4.1, 12.5.3).
    const coding = request.headers.get('content-encoding');
    if (coding !== null && !/^[\s,]*(identity[\s,]*)*$/i.test(coding)) {
      return rpcError(
        c,
        415,
        INVALID_REQUEST,
        'Unsupported Media Type: send the body without a Content-Encoding; it is not decompressed here.',
        { 'Accept-Encoding': 'identity' },
      );
    }

    const body = await readBodyOnce(request, maxBodyBytes);
    if (body === undefined) {
      await discardBody(request);
      return rpcError(c, 413, INVALID_REQUEST, `Request body larger than ${maxBodyBytes} bytes.`);
    }
    if (jsonTextTooDeep(body, maxJsonDepth)) {
      return rpcError(c, 400, INVALID_REQUEST, `Invalid Request: JSON nested deeper than ${maxJsonDepth} levels.`);
    }
    const parsed = parseBodyOnce(request);
    if (!parsed.ok) return rpcError(c, 400, PARSE_ERROR, 'Parse error: the body is not valid JSON.');
    const message = parsed.value;
    if (Array.isArray(message)) {
      return rpcError(c, 400, INVALID_REQUEST, 'JSON-RPC batches are not supported (removed in MCP 2025-06-18).');
    }
    const shape = classify(message);
    const id = typeof message === 'object' && message !== null ? (message as { id?: unknown }).id : undefined;
    if (shape === 'invalid' && typeof id === 'number' && Number.isInteger(id) && !Number.isSafeInteger(id)) {
      // An integer id beyond 2^53 - 1: not one the reply could be sure to name as sent.
      const literal = lossyRequestNumbers(body).id ?? String(id);
      return rpcError(
        c,
        400,
        INVALID_REQUEST,
        `Invalid Request: the id ${literal} is beyond 2^53 - 1, so the reply could not name it; use a smaller number or a string.`,
      );
    }
    if (shape === 'invalid') {
      return rpcError(c, 400, INVALID_REQUEST, 'Invalid Request: not a JSON-RPC 2.0 message.');
    }
    // Not on `initialize`, as the SDK's transport: its version is negotiated in the body, where
    // a client that sends its newest in the header too is offered one this server supports.
    const protocolVersion = request.headers.get('mcp-protocol-version');
    if (
      protocolVersion !== null &&
      !SUPPORTED_PROTOCOL_VERSIONS.includes(protocolVersion) &&
      !(shape === 'request' && (message as JSONRPCRequest).method === 'initialize')
    ) {
      return rpcError(
        c,
        400,
        INVALID_REQUEST,
        `Unsupported MCP-Protocol-Version ${protocolVersion}; supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}.`,
      );
    }

    const lossy = options.exactNumbers && shape === 'request' ? lossyRequestNumbers(body) : undefined;
    if (lossy?.id !== undefined) {
      return rpcError(
        c,
        400,
        INVALID_REQUEST,
        `Invalid Request: the id ${lossy.id} cannot be kept exactly, so the reply could not name it.`,
      );
    }
    if (lossy?.param !== undefined) {
      const rpc = message as JSONRPCRequest;
      const text = `The number ${lossy.param} cannot be kept exactly (more than 15 significant digits, or out of range); send it as it should be stored.`;
      if (rpc.method === 'tools/call') return toolErrorReply(c, rpc.id, text);
      const reply = { jsonrpc: '2.0', id: rpc.id, error: { code: INVALID_PARAMS, message: text } };
      return c.body(JSON.stringify(reply), 200, JSON_HEADERS);
    }

    const authInfo = options.authInfo?.(c);
    const extra: MessageExtraInfo = { requestInfo: lazyRequestInfo(request, hiddenHeaders) };
    if (authInfo) extra.authInfo = authInfo;
    if (shape === 'request') {
      let rpc = message as JSONRPCRequest;
      if (
        !declaresTasks &&
        typeof rpc.params === 'object' &&
        rpc.params !== null &&
        Object.hasOwn(rpc.params, 'task')
      ) {
        const { task: _ignored, ...params } = rpc.params;
        rpc = { ...rpc, params };
      }
      // The fast paths below answer without the SDK's strict request schema: a member JSON-RPC
      // does not have is refused here, as that schema refuses it (the direct call checks its
      // params with the tool call's own schema; the listing with the request schema).
      if (hasForeignMember(rpc)) {
        return rpcError(c, 400, INVALID_REQUEST, 'Invalid Request: not a JSON-RPC 2.0 request of this protocol.');
      }
      // zod drops a member named `__proto__` before a tool's strict schema sees it (the call ran
      // as if it were not there): refused as any argument the tool does not take is.
      if (rpc.method === 'tools/call' && hasProtoMember(rpc.params?.arguments)) {
        const name = String(rpc.params?.name);
        return toolErrorReply(c, rpc.id, `Invalid arguments for tool ${name}: "__proto__" is not an argument of it.`);
      }
      const listing = rpc.method === 'tools/list' && rpc.params?.cursor === undefined && isJSONRPCRequest(rpc);
      if (listing && cachedToolList) {
        // The listing is the largest reply and the same for every caller with the same
        // visible tools: its JSON is encoded once per such set, then spliced in as bytes (a
        // spliced string is flattened for the write, and Node joins it to the headers: 14 KB
        // more garbage per listing; docs/performance.md, twelfth session).
        const tail = serializedListing(cachedToolList, c);
        const id = JSON.stringify(rpc.id);
        const reply = Buffer.allocUnsafe(REPLY_HEAD.length + Buffer.byteLength(id) + tail.length);
        REPLY_HEAD.copy(reply, 0);
        const at = REPLY_HEAD.length + reply.write(id, REPLY_HEAD.length);
        tail.copy(reply, at);
        return c.body(reply, 200, JSON_HEADERS);
      }
      const direct = rpc.method === 'tools/call' ? options.directToolCalls?.get(toolName(rpc)) : undefined;
      if (direct) {
        const reply = await callToolDirectly(direct, rpc, {
          authInfo,
          requestInfo: extra.requestInfo,
          signal: () => request.signal,
        });
        if (reply) return c.body(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, ...reply }), 200, JSON_HEADERS);
      }
      // The SDK drops a request its strict schema refuses (a member too many, params an array,
      // `_meta` not an object) with no reply at all: the exchange would wait for the client to
      // give up. Refused here, with the reply JSON-RPC asks for.
      if (!isJSONRPCRequest(rpc)) {
        return rpcError(c, 400, INVALID_REQUEST, 'Invalid Request: not a JSON-RPC 2.0 request of this protocol.');
      }
      // The SDK reads a resource's uri with `new URL` and calls one that is not a URL an internal
      // error (-32603): it is the caller's, -32602.
      const uri = rpc.method === 'resources/read' ? (rpc.params as { uri?: unknown } | undefined)?.uri : undefined;
      if (typeof uri === 'string' && !URL.canParse(uri)) {
        const error = { code: INVALID_PARAMS, message: 'Invalid params: uri is not a URL.' };
        return c.body(JSON.stringify({ jsonrpc: '2.0', id: rpc.id, error }), 200, JSON_HEADERS);
      }
      let reply = readableValidationError(await transport.request(rpc, extra, request.signal));
      const listed = Object.hasOwn(LISTINGS, rpc.method) ? LISTINGS[rpc.method] : undefined;
      const visible = listed && options[listed.option];
      if (listed && visible && 'result' in reply) {
        const result = reply.result as Record<string, unknown>;
        const items = result[listed.member];
        if (Array.isArray(items)) {
          // A copy: the SDK's result may be shared by every caller.
          const shown = items.filter((item: Record<string, unknown>) => visible(String(item[listed.key]), c));
          reply = { ...reply, result: { ...result, [listed.member]: shown } };
        }
      }
      return c.body(JSON.stringify(reply), 200, JSON_HEADERS);
    }
    if (shape === 'notification') transport.notify(message as JSONRPCNotification, extra);
    // Notifications and responses are accepted with no body.
    return c.body(null, 202);
  }

  /** `,"result":<the cached listing as this caller sees it>}` as UTF-8, kept per set of visible tools. */
  function serializedListing(listing: JSONRPCResultResponse['result'], c: Context): Buffer {
    const tools = (listing as { tools?: { name: string }[] }).tools;
    const visible =
      options.toolVisible && Array.isArray(tools)
        ? tools.filter((tool) => options.toolVisible?.(tool.name, c) ?? true)
        : tools;
    const key = Array.isArray(visible) ? visible.map((tool) => tool.name).join('\n') : '';
    let tail = serializedListings.get(key);
    if (tail === undefined) {
      tail = Buffer.from(`,"result":${JSON.stringify(visible === tools ? listing : { ...listing, tools: visible })}}`);
      // One entry per distinct subset of the tools; the bound only matters for huge tool sets.
      if (serializedListings.size < MAX_SERIALIZED_LISTINGS) serializedListings.set(key, tail);
    }
    return tail;
  }

  return { handle, close: () => server.close() };
}

const MAX_SERIALIZED_LISTINGS = 256;
const REQUEST_MEMBERS = new Set(['jsonrpc', 'id', 'method', 'params']);

/** Whether a parsed request has a member besides JSON-RPC's four (a parsed body has no inherited ones). */
function hasForeignMember(rpc: object): boolean {
  for (const member in rpc) if (!REQUEST_MEMBERS.has(member)) return true;
  return false;
}
/** A call's answer that is a tool error (MCP: input the tool refuses is the model's to read). */
function toolErrorReply(c: Context, id: JSONRPCRequest['id'], text: string): Response {
  const reply = { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }], isError: true } };
  return c.body(JSON.stringify(reply), 200, JSON_HEADERS);
}
function hasProtoMember(value: unknown): boolean {
  return typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__');
}
const REPLY_HEAD = Buffer.from('{"jsonrpc":"2.0","id":');

/**
 * The SDK answers a request whose params fail its schema (`tools/list` with `cursor: null`) with
 * -32603 and zod's issue list as raw JSON for a message. That is the caller's mistake, not an
 * internal error: -32602 with the issues in one readable line.
 */
function readableValidationError<T extends object>(reply: T): T {
  const error = (reply as { error?: { code?: unknown; message?: unknown } }).error;
  if (error?.code !== -32603 || typeof error.message !== 'string' || !error.message.startsWith('[')) return reply;
  let issues: unknown;
  try {
    issues = JSON.parse(error.message);
  } catch {
    return reply;
  }
  if (!Array.isArray(issues) || issues.length === 0) return reply;
  const described = issues.slice(0, 3).map((issue: { path?: unknown; message?: unknown }) => {
    const path = Array.isArray(issue.path) ? issue.path.join('.') : '';
    return `${path || '(message)'}: ${typeof issue.message === 'string' ? issue.message : 'invalid'}`;
  });
  return { ...reply, error: { code: INVALID_PARAMS, message: `Invalid params: ${described.join('; ')}` } };
}

function classify(message: unknown): 'request' | 'notification' | 'response' | 'invalid' {
  if (typeof message !== 'object' || message === null) return 'invalid';
  const m = message as Record<string, unknown>;
  if (m.jsonrpc !== '2.0') return 'invalid';
  // Safe integers only, as the SDK's schema takes them: the direct path runs before that schema.
  const hasId = typeof m.id === 'string' || (typeof m.id === 'number' && Number.isSafeInteger(m.id));
  if (m.params !== undefined && (typeof m.params !== 'object' || m.params === null)) return 'invalid';
  if (typeof m.method === 'string') return hasId ? 'request' : 'id' in m ? 'invalid' : 'notification';
  if (hasId && ('result' in m || 'error' in m)) return 'response';
  return 'invalid';
}

function toolName(request: JSONRPCRequest): string {
  const name = (request.params as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' ? name : '';
}

/**
 * Headers that carry the caller's credentials. A tool reads who is calling from `authInfo`; the
 * credential itself stays out of its reach (no token passthrough: a tool that held it could send
 * it on to another service).
 */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'x-api-key']);

/** Request headers for tools that ask for them, without credentials, converted only if a tool does. */
function lazyRequestInfo(request: Request, hidden: ReadonlySet<string>): NonNullable<MessageExtraInfo['requestInfo']> {
  let headers: Record<string, string> | undefined;
  return {
    get headers() {
      headers ??= Object.fromEntries([...request.headers].filter(([name]) => !hidden.has(name)));
      return headers;
    },
  };
}
