/** JSON-RPC 2.0 error codes (section 5.1) the HTTP layer answers with. */
export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const INVALID_PARAMS = -32602;

export const JSON_HEADERS = { 'content-type': 'application/json' };

/**
 * A JSON-RPC error answered at the HTTP layer, before any message reached the server: `id` is
 * null because the request's id is unknown or not trusted yet.
 */
export function rpcError(
  status: number,
  code: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code, message } }), {
    status,
    headers: { ...JSON_HEADERS, ...headers },
  });
}
