/**
 * The fetch each MCP connection's transport uses (`McpServerConnection.url`'s server, extra
 * servers included). The SDK reads every response whole and parses server-sent events without
 * a limit, so a server that answers with endless bytes (one event without a line break) grows
 * the agent's memory until the process dies. Two rules bound that:
 *
 * - no response is read past `maxResponseBytes`: the read fails, naming the server's origin,
 *   and the connection is closed;
 * - the server's listening stream (a `GET` of the endpoint, for messages the server starts) is
 *   not opened: the agent takes its tools once at start and offers no sampling, elicitation or
 *   roots, so nothing on that stream is for it. The transport is told 405, as by a server that
 *   has no such stream, and goes on with requests and their answers.
 *
 * The SDK's own OAuth requests after a 401 or 403 (discovery, a token) go through it too, and
 * get the deadline the agent's other authorization requests have.
 */

import { withDeadline } from './auth/discovery.ts';

/**
 * The most of one response the agent reads from an MCP server, in bytes. This server's largest
 * answer, a page of 200 expenses with the longest descriptions, is about 300 KB.
 */
export const MAX_MCP_RESPONSE_BYTES = 16 * 1024 * 1024;

export class McpResponseTooLargeError extends Error {
  override name = 'McpResponseTooLargeError';
}

export interface McpConnectionFetchOptions {
  maxResponseBytes?: number;
  /**
   * The deadline of a request to another URL than the endpoint (the SDK's OAuth discovery and
   * token requests after a 401 or 403) that brings no signal of its own; default 10 s.
   */
  authRequestTimeoutMs?: number;
  /** The fetch underneath (tests record with it); the global one when unset. */
  fetchFn?: typeof fetch;
}

/** Statuses whose responses have no body (a Response with one cannot be made). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

export function mcpConnectionFetch(serverUrl: string, options: McpConnectionFetchOptions = {}): typeof fetch {
  const endpoint = new URL(serverUrl).href;
  const origin = new URL(serverUrl).origin;
  const limit = options.maxResponseBytes ?? MAX_MCP_RESPONSE_BYTES;
  const send = options.fetchFn ?? ((input: Parameters<typeof fetch>[0], init?: RequestInit) => fetch(input, init));
  const sendWithDeadline = withDeadline(send, options.authRequestTimeoutMs);
  return async (input, init) => {
    const request = input instanceof Request ? input : undefined;
    const method = (init?.method ?? request?.method ?? 'GET').toUpperCase();
    const url = request ? request.url : new URL(input as string | URL).href;
    if (method === 'GET' && url === endpoint) {
      return new Response(null, { status: 405, statusText: 'Listening stream not opened by this client' });
    }
    return bounded(await (url === endpoint ? send : sendWithDeadline)(input, init), limit, origin);
  };
}

function bounded(response: Response, limit: number, origin: string): Response {
  if (response.body === null || response.type === 'opaqueredirect' || NULL_BODY_STATUSES.has(response.status)) {
    return response;
  }
  let received = 0;
  const counted = response.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        received += chunk.byteLength;
        if (received > limit) {
          // Erroring the stream cancels the source: the connection closes, nothing more is read.
          controller.error(
            new McpResponseTooLargeError(
              `The response of the MCP server at ${origin} is larger than ${limit} bytes; the agent stopped reading it.`,
            ),
          );
          return;
        }
        controller.enqueue(chunk);
      },
    }),
  );
  const limited = new Response(counted, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
  // The SDK names a redirect's target from the response's URL.
  Object.defineProperty(limited, 'url', { value: response.url });
  return limited;
}
