import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type {
  JSONRPCMessage,
  JSONRPCNotification,
  JSONRPCRequest,
  JSONRPCResponse,
  MessageExtraInfo,
} from '@modelcontextprotocol/sdk/types.js';

/** What a server-to-client request (sampling, elicitation, roots) gets on a stateless endpoint. */
export function sessionRequired(method: string): Error {
  return new Error(`Server-to-client request ${method} needs a session; this endpoint is stateless.`);
}

type Reply = JSONRPCResponse | { jsonrpc: '2.0'; id: string | number; error: { code: number; message: string } };

/**
 * One transport, connected once, that carries the requests of every HTTP exchange to a single
 * long-lived MCP server. Each incoming request gets a fresh internal id (two clients may both
 * send id 1); the reply is matched on that id and given back its original one.
 *
 * This is what makes the stateless endpoint cheap: the SDK's documented stateless pattern
 * builds a server and a transport per request, this builds them once per process.
 */
export class MultiplexTransport implements Transport {
  onmessage?: Transport['onmessage'];
  onclose?: Transport['onclose'];
  onerror?: Transport['onerror'];

  readonly #pending = new Map<number, (reply: Reply) => void>();
  #nextId = 1;
  #closed = false;

  async start(): Promise<void> {}

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const [id, resolve] of this.#pending) {
      resolve({ jsonrpc: '2.0', id, error: { code: -32000, message: 'Server is shutting down' } });
    }
    this.#pending.clear();
    this.onclose?.();
  }

  async send(message: JSONRPCMessage): Promise<void> {
    if ('id' in message && !('method' in message)) {
      const resolve = this.#pending.get(message.id as number);
      if (resolve) {
        this.#pending.delete(message.id as number);
        resolve(message as Reply);
      }
      return;
    }
    if ('method' in message && 'id' in message) {
      // Sampling, elicitation and roots need a channel back to the client, which a stateless
      // JSON exchange does not have. Failing at once beats hanging until a timeout.
      throw sessionRequired(message.method);
    }
    // Progress and log notifications have nowhere to go in a single JSON response: dropped.
  }

  /** Hands one request to the server and resolves with its reply, under the caller's own id. */
  request(request: JSONRPCRequest, extra: MessageExtraInfo, signal?: AbortSignal): Promise<Reply> {
    if (this.#closed) {
      return Promise.resolve({
        jsonrpc: '2.0',
        id: request.id,
        error: { code: -32000, message: 'Server is shutting down' },
      });
    }
    const internalId = this.#nextId++;
    if (this.#nextId > Number.MAX_SAFE_INTEGER) this.#nextId = 1;
    return new Promise<Reply>((resolve) => {
      const onAbort = () => {
        // The client went away: tell the server, so a long handler can stop early, and
        // settle the exchange now (nobody will read the reply).
        this.#pending.delete(internalId);
        resolve({
          jsonrpc: '2.0',
          id: request.id,
          error: { code: -32000, message: 'Request cancelled: client disconnected' },
        });
        this.onmessage?.({
          jsonrpc: '2.0',
          method: 'notifications/cancelled',
          params: { requestId: internalId, reason: 'client disconnected' },
        });
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(internalId, (reply) => {
        signal?.removeEventListener('abort', onAbort);
        resolve({ ...reply, id: request.id });
      });
      this.onmessage?.({ ...request, id: internalId }, extra);
    });
  }

  /** Delivers a client notification (e.g. `notifications/initialized`); nothing is replied. */
  notify(notification: JSONRPCNotification, extra: MessageExtraInfo): void {
    // A cancellation names the client's own request id, which only meant something on the
    // exchange that carried that request; the disconnect of that exchange cancels it instead.
    if (notification.method === 'notifications/cancelled') return;
    this.onmessage?.(notification, extra);
  }
}
