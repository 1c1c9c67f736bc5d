/**
 * POSTs one JSON-RPC message to an MCP endpoint the way a client would (the content types the
 * Streamable HTTP transport asks for), with overridable headers: for the statuses and headers an
 * SDK client hides. A string body is sent as it is.
 */
export function postMcp(mcpUrl: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
