import { parseBodyOnce, readBodyKeepingIt } from '@mcp-auth-stack/mcp-hono';
import { type Attributes, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { MiddlewareHandler } from 'hono';

/** The instrumentation scope of every span this package starts. */
export const TRACER_NAME = '@mcp-auth-stack/telemetry';

/** Attribute names from the OpenTelemetry MCP and GenAI semantic conventions. */
export const MCP_ATTRIBUTES = {
  method: 'mcp.method.name',
  protocolVersion: 'mcp.protocol.version',
  resourceUri: 'mcp.resource.uri',
  requestId: 'jsonrpc.request.id',
  toolName: 'gen_ai.tool.name',
  promptName: 'gen_ai.prompt.name',
  operation: 'gen_ai.operation.name',
  errorType: 'error.type',
  rpcStatus: 'rpc.response.status_code',
} as const;

/** The part of a JSON-RPC request a span is named and described by. Arguments are never read. */
export interface McpRequestInfo {
  method: string;
  id?: string | number | null | undefined;
  params?: unknown;
}

/** How an MCP operation ended, read from its JSON-RPC response. */
export type McpOutcome =
  | { ok: true }
  | { ok: false; errorType: string; rpcCode?: number | undefined; message?: string | undefined };

function param(params: unknown, key: string): string | undefined {
  if (typeof params !== 'object' || params === null) return undefined;
  const value = (params as Record<string, unknown>)[key];
  return typeof value === 'string' && value.length > 0 && value.length <= 256 ? value : undefined;
}

/** `tools/call <name>`, `prompts/get <name>`, else the method alone (as the MCP conventions name them). */
export function mcpSpanName(request: McpRequestInfo): string {
  const target =
    request.method === 'tools/call' || request.method === 'prompts/get' ? param(request.params, 'name') : undefined;
  return target ? `${request.method} ${target}` : request.method;
}

/** The span's attributes: method, target and operation. Never arguments, results or credentials. */
export function mcpSpanAttributes(request: McpRequestInfo, protocolVersion?: string | null): Attributes {
  const attributes: Attributes = { [MCP_ATTRIBUTES.method]: request.method };
  if (request.id !== undefined && request.id !== null) attributes[MCP_ATTRIBUTES.requestId] = String(request.id);
  if (protocolVersion) attributes[MCP_ATTRIBUTES.protocolVersion] = protocolVersion;
  if (request.method === 'tools/call') {
    attributes[MCP_ATTRIBUTES.operation] = 'execute_tool';
    const tool = param(request.params, 'name');
    if (tool) attributes[MCP_ATTRIBUTES.toolName] = tool;
  } else if (request.method === 'prompts/get') {
    const prompt = param(request.params, 'name');
    if (prompt) attributes[MCP_ATTRIBUTES.promptName] = prompt;
  } else if (request.method === 'resources/read') {
    const uri = param(request.params, 'uri');
    if (uri) attributes[MCP_ATTRIBUTES.resourceUri] = uri;
  }
  return attributes;
}

/**
 * The outcome of a JSON-RPC response: a JSON-RPC `error` (its code becomes `error.type`) or a
 * tool result with `isError: true` (`error.type` = `tool_error`). Anything else is success.
 */
export function mcpOutcome(response: unknown): McpOutcome {
  if (typeof response !== 'object' || response === null) return { ok: true };
  const body = response as { error?: { code?: unknown; message?: unknown }; result?: { isError?: unknown } };
  if (body.error && typeof body.error === 'object') {
    const code = typeof body.error.code === 'number' ? body.error.code : undefined;
    return {
      ok: false,
      errorType: code === undefined ? 'jsonrpc_error' : String(code),
      rpcCode: code,
      message: typeof body.error.message === 'string' ? body.error.message.slice(0, 200) : undefined,
    };
  }
  if (body.result && typeof body.result === 'object' && body.result.isError === true) {
    return { ok: false, errorType: 'tool_error' };
  }
  return { ok: true };
}

function finish(span: Span, outcome: McpOutcome): void {
  if (outcome.ok) {
    span.setStatus({ code: SpanStatusCode.OK });
    return;
  }
  span.setAttribute(MCP_ATTRIBUTES.errorType, outcome.errorType);
  if (outcome.rpcCode !== undefined) span.setAttribute(MCP_ATTRIBUTES.rpcStatus, String(outcome.rpcCode));
  // The status message is the error *type*, never the text (which could echo input).
  span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.errorType });
}

/**
 * Runs one MCP request dispatch inside its span. `dispatch` returns the JSON-RPC response
 * (or anything `outcome` can read); a thrown error ends the span as an error with
 * `error.type` = the error's class name, and is rethrown.
 */
export async function traceMcpRequest<T>(
  request: McpRequestInfo,
  dispatch: () => Promise<T>,
  options: { protocolVersion?: string | null; outcome?: (result: T) => McpOutcome } = {},
): Promise<T> {
  const tracer = trace.getTracer(TRACER_NAME);
  return tracer.startActiveSpan(
    mcpSpanName(request),
    { kind: SpanKind.SERVER, attributes: mcpSpanAttributes(request, options.protocolVersion) },
    async (span) => {
      try {
        const result = await dispatch();
        finish(span, (options.outcome ?? mcpOutcome)(result));
        return result;
      } catch (error) {
        finish(span, { ok: false, errorType: error instanceof Error ? error.name : 'Error' });
        throw error;
      } finally {
        span.end();
      }
    },
  );
}

/**
 * The request's JSON body, at most `maxBytes`; `undefined` otherwise. Read and parsed once for
 * the whole request (`readBodyKeepingIt`, `parseBodyOnce`): the scope check and the MCP endpoint
 * after this middleware take the same text and parse instead of reading a copy again.
 */
async function readJson(req: { raw: Request }, maxBytes: number): Promise<unknown> {
  if (req.raw.body === null) return undefined;
  const text = await readBodyKeepingIt(req, maxBytes);
  if (text === undefined) return undefined;
  const parsed = parseBodyOnce(req.raw);
  return parsed.ok ? parsed.value : undefined;
}

/** The outcome of an HTTP response from the MCP endpoint (a JSON-RPC response, or an HTTP error). */
async function readOutcome(response: Response): Promise<McpOutcome> {
  if ((response.headers.get('content-type') ?? '').includes('application/json')) {
    try {
      const outcome = mcpOutcome(await response.clone().json());
      if (!outcome.ok || response.ok) return outcome;
    } catch {
      // not JSON after all: judged by the status below
    }
  }
  return response.status >= 400 ? { ok: false, errorType: String(response.status) } : { ok: true };
}

function isRequest(message: unknown): message is McpRequestInfo {
  return (
    typeof message === 'object' &&
    message !== null &&
    typeof (message as { method?: unknown }).method === 'string' &&
    'id' in message
  );
}

export interface McpTracingOptions {
  /** Bodies larger than this are not inspected (no span); default 1 MiB, like the endpoint's limit. */
  maxBodyBytes?: number;
}

/**
 * Hono middleware for the MCP endpoint: one span per JSON-RPC request (notifications and
 * other HTTP methods pass through untraced), named and described from the request and
 * ended with the outcome read from the JSON response. Mount it after authentication, right
 * before the endpoint, so only exchanges that reach the MCP server are counted as calls.
 */
export function mcpTracing(options: McpTracingOptions = {}): MiddlewareHandler {
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  return async (c, next) => {
    if (c.req.method !== 'POST') return next();
    const message = await readJson(c.req, maxBodyBytes);
    if (!isRequest(message)) return next();
    await traceMcpRequest(
      message,
      async () => {
        await next();
        return readOutcome(c.res);
      },
      { protocolVersion: c.req.header('mcp-protocol-version') ?? null, outcome: (outcome) => outcome },
    );
  };
}
