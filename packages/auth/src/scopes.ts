import { discardBody, INVALID_REQUEST, parseBodyOnce, readBodyKeepingIt, rpcError } from '@mcp-auth-stack/mcp-hono';
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { AuthProvider } from './auth-provider.ts';
import { bearerChallenge } from './challenge.ts';
import type { AuthVariables } from './middleware.ts';
import type { Principal } from './principal.ts';

/** The scopes each MCP operation needs, declared by the server next to its tools. */
export interface McpScopeRequirements {
  /** `tools/call` of a tool, by tool name. Tools not listed need no scope beyond `methods['tools/call']`. */
  tools?: Readonly<Record<string, readonly string[]>> | undefined;
  /** Any method, e.g. `resources/read`, `prompts/get`, `tools/call` (then added to every tool's). */
  methods?: Readonly<Record<string, readonly string[]>> | undefined;
}

/** Whether a principal holds a scope; replace it to let roles count as scopes. */
export type ScopeCheck = (principal: Principal, scope: string) => boolean;

/**
 * The default `ScopeCheck`: `none` (no authentication, development) holds everything; OAuth
 * tokens and API keys hold exactly the scopes they carry, so an API key created without
 * scopes can call only what needs none.
 */
export const holdsScope: ScopeCheck = (principal, scope) =>
  principal.method === 'none' || principal.scopes.includes(scope);

/** One MCP call: its method and, for `tools/call`, `prompts/get` and `resources/read`, what it names. */
export interface McpCall {
  method: string;
  name?: string | undefined;
}

/** Every scope a call needs (method-wide ones first), without duplicates. */
export function scopesRequiredFor(requirements: McpScopeRequirements, call: McpCall): string[] {
  const method = declared(requirements.methods, call.method);
  const tool = call.method === 'tools/call' && call.name !== undefined ? declared(requirements.tools, call.name) : [];
  return tool.length === 0 ? [...new Set(method)] : [...new Set([...method, ...tool])];
}

// Own properties only: the names come from the request, and `constructor` or `__proto__` would
// otherwise find Object's.
function declared(table: Readonly<Record<string, readonly string[]>> | undefined, name: string): readonly string[] {
  return table !== undefined && Object.hasOwn(table, name) ? (table[name] ?? []) : [];
}

/** The scopes a call needs that the principal lacks; empty when it may go ahead. */
export function missingScopes(
  principal: Principal,
  call: McpCall,
  requirements: McpScopeRequirements,
  hasScope: ScopeCheck = holdsScope,
): string[] {
  return scopesRequiredFor(requirements, call).filter((scope) => !hasScope(principal, scope));
}

/** Whether the principal may call a tool: the test a `tools/list` filter applies to each tool. */
export function isToolAllowed(
  principal: Principal,
  toolName: string,
  requirements: McpScopeRequirements,
  hasScope: ScopeCheck = holdsScope,
): boolean {
  return missingScopes(principal, { method: 'tools/call', name: toolName }, requirements, hasScope).length === 0;
}

/** A `tools/list` result with only the tools the principal may call (a copy; the input is not changed). */
export function filterToolsListResult<T extends { tools: readonly { name: string }[] }>(
  result: T,
  principal: Principal,
  requirements: McpScopeRequirements,
  hasScope: ScopeCheck = holdsScope,
): T {
  return {
    ...result,
    tools: result.tools.filter((tool) => isToolAllowed(principal, tool.name, requirements, hasScope)),
  };
}

export interface McpScopeGuardOptions {
  requirements: McpScopeRequirements;
  /**
   * Whose challenge the 403 extends (`resource_metadata`, `realm`, and its `scope` as the base
   * scopes every token needs): normally the provider given to `requireAuth`.
   */
  provider?: Pick<AuthProvider, 'challengeParameters'> | undefined;
  hasScope?: ScopeCheck | undefined;
  /** Largest body read to find the call (default 1 MiB, as the MCP endpoint); larger ones get 413. */
  maxBodyBytes?: number | undefined;
}

/**
 * Per-tool authorization at the HTTP layer, so a client can step up (MCP authorization,
 * "insufficient scope"): a call whose principal lacks a scope it needs gets 403 with
 * `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` naming every scope to ask
 * for in one go (the base scopes, those the caller already holds, and those the call needs),
 * so the re-authorized token loses nothing the caller had.
 *
 * Runs after `requireAuth` and before the MCP endpoint. The call is read from the
 * `Mcp-Method`/`Mcp-Name` headers (MCP 2026-07-28) when present, which lets a forbidden call
 * be refused before its body is read, and from the JSON-RPC body otherwise; headers that
 * disagree with the body get 400. The body stays readable downstream (`c.req.raw.text()` or
 * `c.req.json()`).
 */
export function requireMcpScopes(options: McpScopeGuardOptions) {
  const { requirements } = options;
  const hasScope = options.hasScope ?? holdsScope;
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const everyScope = [
    ...new Set([...Object.values(requirements.tools ?? {}), ...Object.values(requirements.methods ?? {})].flat()),
  ];

  return createMiddleware<{ Variables: AuthVariables }>(async (c, next) => {
    if (c.req.method !== 'POST') return next();
    const principal = c.get('principal');
    if (principal === undefined) throw new Error('requireMcpScopes must run after requireAuth.');
    const headerMethod = c.req.header('mcp-method');
    const headerName = mcpHeaderValue(c.req.header('mcp-name'));
    if (headerName === null) {
      return rpcError(c, 400, INVALID_REQUEST, 'The Mcp-Name header is not valid =?base64?…?= UTF-8.');
    }
    // A caller holding every declared scope cannot be refused, so the body need not be read,
    // unless there are headers to check against it.
    if (headerMethod === undefined && headerName === undefined && everyScope.every((s) => hasScope(principal, s))) {
      return next();
    }
    if (headerMethod !== undefined) {
      const call = { method: headerMethod, name: headerName };
      const missing = missingScopes(principal, call, requirements, hasScope);
      if (missing.length > 0) return insufficientScope(c, principal, call, missing, options.provider, requirements);
    }

    const text = await readBodyKeepingIt(c.req, maxBodyBytes);
    if (text === undefined) {
      await discardBody(c.req.raw);
      return rpcError(c, 413, INVALID_REQUEST, `Request body larger than ${maxBodyBytes} bytes.`);
    }
    // Parsed once for this request: the MCP endpoint takes the same parse (`parseBodyOnce`).
    const json = parseBodyOnce(c.req.raw);
    if (!json.ok) return next(); // the endpoint answers malformed JSON; there is no call to authorize
    const parsed = json.value;
    // Batches were removed from MCP; should one get this far, every call in it is authorized.
    const messages = Array.isArray(parsed) ? parsed : [parsed];
    for (const message of messages) {
      const call = callOf(message);
      if (call === undefined) continue;
      if (headerMethod !== undefined && (messages.length !== 1 || headerMethod !== call.method)) {
        return rpcError(c, 400, INVALID_REQUEST, 'The Mcp-Method header does not match the method in the body.');
      }
      if (headerName !== undefined && headerName !== call.name) {
        return rpcError(c, 400, INVALID_REQUEST, 'The Mcp-Name header does not match the name in the body.');
      }
      const missing = missingScopes(principal, call, requirements, hasScope);
      if (missing.length > 0) return insufficientScope(c, principal, call, missing, options.provider, requirements);
    }
    await next();
  });
}

const BASE64_VALUE = /^=\?base64\?([A-Za-z0-9+/]*={0,2})\?=$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A mirrored header's value as the body has it. A name that is not plain header-safe ASCII (a
 * non-ASCII tool name, one with edge spaces) is sent as `=?base64?<UTF-8 in base64>?=`, as the
 * MCP clients that send these headers do (mcp-remote, the SDK's client). Null for that form
 * with bytes that are not base64 of UTF-8.
 */
function mcpHeaderValue(value: string | undefined): string | undefined | null {
  if (value === undefined || !value.startsWith('=?base64?') || !value.endsWith('?=')) return value;
  const encoded = BASE64_VALUE.exec(value)?.[1];
  if (encoded === undefined || encoded.length % 4 !== 0) return null;
  try {
    return strictUtf8.decode(Buffer.from(encoded, 'base64'));
  } catch {
    return null;
  }
}

/** The call a JSON-RPC request or notification makes; undefined for anything else. */
function callOf(message: unknown): McpCall | undefined {
  if (typeof message !== 'object' || message === null) return undefined;
  const { method, params } = message as { method?: unknown; params?: unknown };
  if (typeof method !== 'string') return undefined;
  const p = (typeof params === 'object' && params !== null ? params : {}) as { name?: unknown; uri?: unknown };
  const name =
    method === 'resources/read' ? p.uri : method === 'tools/call' || method === 'prompts/get' ? p.name : undefined;
  return { method, name: typeof name === 'string' ? name : undefined };
}

function insufficientScope(
  c: Context,
  principal: Principal,
  call: McpCall,
  missing: readonly string[],
  provider: Pick<AuthProvider, 'challengeParameters'> | undefined,
  requirements: McpScopeRequirements,
): Response {
  const { scope: baseScope, ...base } = provider?.challengeParameters() ?? {};
  const scope = [
    ...new Set([
      ...(baseScope ?? '').split(' ').filter(Boolean),
      ...principal.scopes,
      ...scopesRequiredFor(requirements, call),
    ]),
  ].join(' ');
  const what =
    call.method === 'tools/call' && call.name !== undefined ? `The tool ${call.name}` : `The method ${call.method}`;
  const description = `${what} needs the scope${missing.length > 1 ? 's' : ''} ${missing.join(' ')}.`;
  const challenge = bearerChallenge({ error: 'insufficient_scope', scope, ...base, error_description: description });
  return c.json({ error: 'insufficient_scope', error_description: description }, 403, {
    'WWW-Authenticate': challenge,
    'Cache-Control': 'no-store',
  });
}
