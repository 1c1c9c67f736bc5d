import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { RegisteredTool } from '@modelcontextprotocol/sdk/server/mcp.js';
import { normalizeObjectSchema, safeParseAsync } from '@modelcontextprotocol/sdk/server/zod-compat.js';
import {
  CallToolRequestSchema,
  type CallToolResult,
  CallToolResultSchema,
  ErrorCode,
  type JSONRPCRequest,
  McpError,
  type MessageExtraInfo,
} from '@modelcontextprotocol/sdk/types.js';
import { sessionRequired } from './multiplex-transport.ts';

/** What the HTTP exchange gives the tool (`extra` of an SDK tool handler). */
export interface DirectCallExchange {
  authInfo: AuthInfo | undefined;
  requestInfo: MessageExtraInfo['requestInfo'];
  /** The exchange's abort signal, made on first use. */
  signal: () => AbortSignal;
}

/** What a direct call answers: a JSON-RPC result, or a JSON-RPC error the SDK would have sent. */
export type DirectReply = { result: CallToolResult } | { error: { code: number; message: string; data?: unknown } };

/**
 * `tools/call` of a plain registered tool, run here instead of through the SDK's `Protocol`
 * dispatch, with the SDK's own schemas and the same outcome as `McpServer`'s handler:
 * the request checked against `CallToolRequestSchema`, the arguments against the tool's input
 * schema, the tool's handler called, a thrown error turned into an `isError` result, and the
 * result checked against `CallToolResultSchema`. In a loaded server the `Protocol` dispatch
 * (type guards that each run a zod parse, the request parsed twice, an AbortController and a
 * promise chain per request) costs more than the rest of the call (docs/decisions.md #52).
 *
 * `undefined` means "not mine": anything but the common case goes back to the SDK, which
 * answers it with its own errors: an invalid request, arguments that fail the schema, a disabled
 * tool, a task-augmented call or a task tool. The tool's output is not validated against its
 * output schema (the server that uses this turns that check off, decision 40), and McpServer's
 * `maxToolInputElements` is not read: leave this off for a server that sets it.
 */
export async function callToolDirectly(
  tool: RegisteredTool,
  request: JSONRPCRequest,
  exchange: DirectCallExchange,
): Promise<DirectReply | undefined> {
  const taskSupport = tool.execution?.taskSupport;
  if (!tool.enabled || taskSupport === 'required' || taskSupport === 'optional' || 'createTask' in tool.handler) {
    return undefined;
  }
  const checked = CallToolRequestSchema.safeParse(request);
  if (!checked.success || checked.data.params.task !== undefined) return undefined;
  const { params } = checked.data;
  let args: unknown;
  if (tool.inputSchema) {
    const schema = normalizeObjectSchema(tool.inputSchema) ?? tool.inputSchema;
    const parsed = await safeParseAsync(schema, params.arguments ?? {});
    if (!parsed.success) return undefined;
    args = parsed.data;
  }
  const handlerExtra = {
    // Made only when the tool reads it: a client that goes away aborts the request's signal.
    get signal() {
      return exchange.signal();
    },
    _meta: params._meta,
    authInfo: exchange.authInfo,
    requestId: request.id,
    requestInfo: exchange.requestInfo,
    // A stateless JSON exchange has no channel back: notifications are dropped (as the
    // transport drops them) and server-to-client requests fail at once.
    sendNotification: async () => {},
    sendRequest: async (sent: { method: string }) => {
      throw sessionRequired(sent.method);
    },
  };
  let result: unknown;
  try {
    const handler = tool.handler as (...parameters: unknown[]) => unknown;
    result = await (tool.inputSchema ? handler(args, handlerExtra) : handler(handlerExtra));
  } catch (error) {
    if (error instanceof McpError && error.code === ErrorCode.UrlElicitationRequired) return errorReply(error);
    result = {
      content: [{ type: 'text', text: error instanceof Error ? error.message : String(error) }],
      isError: true,
    };
  }
  const valid = CallToolResultSchema.safeParse(result);
  if (!valid.success) {
    return errorReply(new McpError(ErrorCode.InvalidParams, `Invalid tools/call result: ${valid.error.message}`));
  }
  return { result: valid.data };
}

/** The JSON-RPC error the SDK's `Protocol` makes of an error thrown by a request handler. */
function errorReply(error: McpError): DirectReply {
  return {
    error: {
      code: Number.isSafeInteger(error.code) ? error.code : ErrorCode.InternalError,
      message: error.message ?? 'Internal error',
      ...(error.data !== undefined && { data: error.data }),
    },
  };
}
