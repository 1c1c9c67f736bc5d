import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/** JSON-RPC 2.0 error codes (section 5.1) the HTTP layer answers with. */
export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const INVALID_PARAMS = -32602;

export const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * A JSON-RPC error answered at the HTTP layer, before any message reached the server: `id` is
 * null because the request's id is unknown or not trusted yet. Built by the context, so the
 * headers earlier middleware set with `c.header()` (a request id, CORS) are on it.
 */
export function rpcError(
  c: Context,
  status: ContentfulStatusCode,
  code: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return c.body(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message } }), status, {
    ...JSON_HEADERS,
    ...headers,
  });
}
