import { type Agent, type ClientRequest, request as httpRequest } from 'node:http';
import { connect } from 'node:net';

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

/**
 * A slowloris client: opens a request to `url`, then sends a header line every 2 s and never the
 * blank line that ends them, until the server closes the socket (or `giveUpMs` passes: then the
 * socket is dropped and `closedAfterMs` is that long). Resolves with what the server answered and
 * how long after the request line it closed.
 */
export async function neverEndingHeaders(
  url: string,
  giveUpMs = 45_000,
): Promise<{ answer: string; closedAfterMs: number }> {
  const { hostname, port, protocol, pathname, host } = new URL(url);
  const socket = connect(Number(port || (protocol === 'https:' ? 443 : 80)), hostname.replace(/^\[|\]$/g, ''));
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const started = performance.now();
  socket.write(`POST ${pathname} HTTP/1.1\r\nHost: ${host}\r\n`);
  const dribble = setInterval(() => socket.write('X-Slow: 1\r\n'), 2_000);
  const giveUp = setTimeout(() => socket.destroy(), giveUpMs);
  let answer = '';
  socket.on('data', (chunk: Buffer) => {
    answer += chunk.toString('latin1');
  });
  socket.on('error', () => {});
  await new Promise((resolve) => socket.once('close', resolve));
  clearInterval(dribble);
  clearTimeout(giveUp);
  return { answer, closedAfterMs: performance.now() - started };
}

/**
 * A `POST` to an MCP endpoint with a client's content types and `Authorization: Bearer <key>`,
 * left open for the test to write its body into, slowly, never, or too large (`headers` adds
 * `transfer-encoding: chunked` or a `content-length`).
 */
export function openMcpPost(
  mcpUrl: string,
  key: string,
  options: { headers?: Record<string, string>; agent?: Agent } = {},
): ClientRequest {
  return httpRequest(mcpUrl, {
    method: 'POST',
    ...(options.agent ? { agent: options.agent } : {}),
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...options.headers,
    },
  });
}
