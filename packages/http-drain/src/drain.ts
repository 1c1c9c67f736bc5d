import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';

/**
 * How long a keep-alive connection that is idle when the drain starts may stay open for the
 * request its client may already be sending. HTTP/1.1 lets either side close an idle connection
 * at any time, and a client that sent a request just as it closed cannot tell whether it was
 * served: closing every idle socket at once cut requests that were on the wire. A request that
 * arrives in this grace is answered (503, nothing done, `Connection: close`).
 */
const IDLE_GRACE_MS = 1_000;

export interface DrainOutcome {
  /** Requests still unanswered at the timeout, whose connections were closed under them. */
  cut: number;
  /** Requests that arrived on old keep-alive connections during the drain and were refused (503). */
  refused: number;
}

export interface DrainingServer {
  server: Server;
  /** True from the moment `drain` is called. */
  readonly draining: boolean;
  /**
   * Stops listening; marks each connection's last response not yet started `Connection:
   * close` (a request pipelined behind one marked earlier would run unanswered); answers any
   * request that arrives on an old connection with 503 without running it; closes each
   * connection once its last response is sent (idle ones after a short grace); resolves when
   * no connection is left, or at `timeoutMs`, when the rest are closed under their requests.
   */
  drain(timeoutMs: number): Promise<DrainOutcome>;
}

interface ConnectionState {
  /** Responses of the connection's requests not yet sent, oldest first (pipelined requests queue). */
  inFlight: Set<ServerResponse>;
  idleSince: number;
  timer?: NodeJS.Timeout;
  /** The response the drain marked `Connection: close`: the connection's last, so none is cut. */
  closing?: ServerResponse | undefined;
}

/**
 * Marks the connection's newest response `Connection: close`, and unmarks the one marked before
 * it: Node ends a connection after the first response that says close, and the responses of
 * requests pipelined behind it, which ran, would never be sent.
 */
function closeAfterLast(state: ConnectionState, newest: ServerResponse | undefined): void {
  if (state.closing && state.closing !== newest && !state.closing.headersSent) {
    state.closing.removeHeader('connection');
  }
  state.closing = newest;
  if (newest && !newest.headersSent) newest.setHeader('connection', 'close');
}

/**
 * An HTTP server whose shutdown drains: Node's `server.close()` leaves busy keep-alive
 * connections open (clients keep sending on them, so the work never ends) and closes idle ones
 * at once (cutting requests already on the wire).
 */
export function createDrainingServer(listener: RequestListener, options: ServerOptions = {}): DrainingServer {
  const connections = new Map<Socket, ConnectionState>();
  let draining = false;
  let drainStartedAt = 0;
  let refused = 0;

  const closeWhenIdle = (socket: Socket, state: ConnectionState) => {
    if (state.inFlight.size > 0 || socket.destroyed) return;
    clearTimeout(state.timer);
    // The grace runs from the drain's start for a connection idle since before it.
    const waited = performance.now() - Math.max(state.idleSince, drainStartedAt);
    if (waited >= IDLE_GRACE_MS) {
      socket.destroy();
      return;
    }
    state.timer = setTimeout(() => closeWhenIdle(socket, state), IDLE_GRACE_MS - waited);
    state.timer.unref();
  };

  const server = createServer(options, (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket;
    const state = connections.get(socket);
    if (draining || !state) {
      // New work on an old connection: refused before anything runs, so a retry is always safe.
      refused += 1;
      // Answered after the connection's responses under way: they must not close it first.
      if (state) closeAfterLast(state, response);
      response.writeHead(503, {
        'content-type': 'application/json',
        connection: 'close',
        'retry-after': '1',
        'cache-control': 'no-store',
      });
      response.end(
        JSON.stringify(
          request.url === '/ready' || request.url === '/health'
            ? { status: 'draining' }
            : {
                error: 'shutting_down',
                error_description: 'This server is shutting down; nothing was done. Retry the request.',
              },
        ),
      );
      return;
    }
    clearTimeout(state.timer);
    state.inFlight.add(response);
    response.once('close', () => {
      state.inFlight.delete(response);
      state.idleSince = performance.now();
      // A response that was already under way without `Connection: close` leaves the socket
      // open: close it once idle.
      if (draining) closeWhenIdle(socket, state);
    });
    listener(request, response);
  });

  server.on('connection', (socket: Socket) => {
    const state: ConnectionState = { inFlight: new Set(), idleSince: performance.now() };
    connections.set(socket, state);
    socket.once('close', () => {
      clearTimeout(state.timer);
      connections.delete(socket);
    });
    if (draining) closeWhenIdle(socket, state);
  });

  return {
    server,
    get draining() {
      return draining;
    },
    drain(timeoutMs) {
      draining = true;
      drainStartedAt = performance.now();
      return new Promise<DrainOutcome>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        // net.Server's close: stop listening and call back when the last connection is gone.
        // (http.Server's own close would also destroy every idle connection at once.)
        NetServer.prototype.close.call(server, () => {
          clearTimeout(timer);
          resolve({ cut: 0, refused });
        });
        for (const [socket, state] of connections) {
          closeAfterLast(state, [...state.inFlight].at(-1));
          closeWhenIdle(socket, state);
        }
        timer = setTimeout(() => {
          let cut = 0;
          for (const [socket, state] of connections) {
            cut += state.inFlight.size;
            socket.destroy();
          }
          resolve({ cut, refused });
        }, timeoutMs);
      });
    },
  };
}
