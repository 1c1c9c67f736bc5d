/**
 * PGlite's one session, served on a Unix socket to several `pg` connections (the worker thread
 * in embedded-host.ts runs it). PostgreSQL gives each connection a session of its own; PGlite
 * has one, so the connections take turns on it, and a turn lasts from a connection's first
 * message to the ReadyForQuery that says the session is idle again: a whole simple query, a
 * whole extended-protocol exchange (Parse … Sync) and a whole transaction (BEGIN … COMMIT).
 * Taking turns by single messages instead (what @electric-sql/pglite-socket does outside a
 * transaction) lets another connection's Parse replace the unnamed statement between one
 * connection's Parse and its Bind, which then runs the other's SQL with its own parameters
 * (docs/decisions.md #87).
 *
 * It also reads every reply for the signs of a broken session (`ReplyScanner`), and notes in
 * shared slots (`ACTIVITY`) since when a statement runs and since when a connection has held
 * the session with none running, so that the main thread can end what does not end.
 */
import { createServer, type Socket } from 'node:net';
import type { PGlite } from '@electric-sql/pglite';
import { ACTIVITY } from './embedded-files.ts';

/**
 * Reads the bytes PGlite sends back as PostgreSQL backend messages (type, length, body), across
 * the chunks they arrive in. It finds two signs that its one session is broken:
 * - a PANIC (a WAL write refused for lack of disk space, say). PostgreSQL answers one by
 *   restarting every backend; PGlite has no postmaster, and its session then answers every
 *   statement with an error ("cannot drop active portal"), even once the cause is gone, until
 *   it is opened again. Only an error response whose severity `V` is PANIC counts: matching the
 *   bytes `VPANIC` anywhere would let a stored value restart the database;
 * - a reply to a query or a Sync that does not end with ReadyForQuery (`Z`), unless it opened a
 *   COPY FROM (`G`, `W`), which ends later. PGlite left so by a stack overflow in SQL answers
 *   nothing to every later statement.
 * It also keeps the transaction status of a reply's closing ReadyForQuery, which ends a turn.
 */
export class ReplyScanner {
  #header = Buffer.alloc(0);
  #remaining = 0;
  #type = 0;
  #body: Buffer[] = [];
  /** The type of the last whole message, 0 before the first. */
  lastType = 0;
  /** Whether the reply opened a COPY FROM, after which ReadyForQuery comes only at its end. */
  awaitsCopyData = false;
  /** The status byte of the last ReadyForQuery (`I` idle, `T` in a transaction, `E` in a failed one). */
  #readyStatus = 0;

  /** Feeds the next chunk; returns the PANIC's message if a whole error response in it is one. */
  scan(chunk: Uint8Array): string | undefined {
    let found: string | undefined;
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#remaining === 0) {
        // The 5-byte header (type, then the length that counts itself), perhaps split.
        const needed = 5 - this.#header.length;
        this.#header = Buffer.concat([this.#header, chunk.subarray(offset, offset + needed)]);
        offset += Math.min(needed, chunk.length - offset);
        if (this.#header.length < 5) break;
        this.#type = this.#header[0] as number;
        this.#remaining = this.#header.readInt32BE(1) - 4;
        this.#header = Buffer.alloc(0);
        this.#body = [];
        if (this.#remaining <= 0) {
          this.#ended();
          continue;
        }
      }
      const take = Math.min(this.#remaining, chunk.length - offset);
      // Only error responses and ReadyForQuery are kept; the rows and the rest are skipped over.
      if (this.#type === ERROR_RESPONSE || this.#type === READY_FOR_QUERY) {
        this.#body.push(Buffer.from(chunk.subarray(offset, offset + take)));
      }
      offset += take;
      this.#remaining -= take;
      if (this.#remaining === 0) {
        if (this.#type === ERROR_RESPONSE) found = panicMessage(Buffer.concat(this.#body)) ?? found;
        if (this.#type === READY_FOR_QUERY) this.#readyStatus = this.#body[0]?.[0] ?? 0;
        this.#ended();
      }
    }
    return found;
  }

  /** Whether a reply to `request` (one frontend message) ended as a healthy session's does. */
  completes(request: Uint8Array): boolean {
    const type = request[0];
    if (type !== SIMPLE_QUERY && type !== SYNC) return true;
    return this.awaitsCopyData || this.#endsReady();
  }

  /** Whether the reply ended with ReadyForQuery saying no transaction is open: the turn is over. */
  endsIdle(): boolean {
    return this.#endsReady() && this.#readyStatus === IDLE;
  }

  #endsReady(): boolean {
    return this.lastType === READY_FOR_QUERY && this.#remaining === 0;
  }

  #ended(): void {
    this.lastType = this.#type;
    if (this.#type === COPY_IN_RESPONSE || this.#type === COPY_BOTH_RESPONSE) this.awaitsCopyData = true;
  }
}

const ERROR_RESPONSE = 0x45; // 'E'
const READY_FOR_QUERY = 0x5a; // 'Z'
const IDLE = 0x49; // 'I', ReadyForQuery's status outside a transaction
const COPY_IN_RESPONSE = 0x47; // 'G'
const COPY_BOTH_RESPONSE = 0x57; // 'W'
const SIMPLE_QUERY = 0x51; // 'Q', from the client
const SYNC = 0x53; // 'S', from the client
const TERMINATE = 0x58; // 'X', from the client
// The untyped first messages' codes (PostgreSQL's protocol, "Message Formats").
const SSL_REQUEST = 80_877_103;
const GSSENC_REQUEST = 80_877_104;
const CANCEL_REQUEST = 80_877_102;

/** The message of an ErrorResponse body whose non-localised severity (`V`) is PANIC. */
function panicMessage(body: Buffer): string | undefined {
  const fields = new Map<string, string>();
  let offset = 0;
  while (offset < body.length && body[offset] !== 0) {
    const end = body.indexOf(0, offset + 1);
    if (end === -1) break;
    fields.set(String.fromCharCode(body[offset] as number), body.toString('utf8', offset + 1, end));
    offset = end + 1;
  }
  return fields.get('V') === 'PANIC' ? (fields.get('M') ?? 'PANIC') : undefined;
}

/** A frontend message built here: what a departed connection left is ended with these. */
function frontendMessage(type: string, body: Buffer): Uint8Array {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}
const SYNC_MESSAGE = frontendMessage('S', Buffer.alloc(0));
const ROLLBACK_MESSAGE = frontendMessage('Q', Buffer.from('ROLLBACK\0'));
const COPY_FAIL_MESSAGE = frontendMessage('f', Buffer.from('the connection closed\0'));

/** One frontend message waiting for its connection's turn. */
interface Pending {
  connection: number;
  message: Uint8Array;
  reply: (data: Uint8Array) => void;
  done: (error?: Error) => void;
}

export interface SessionWatch {
  /** `ACTIVITY`'s slots, shared with the main thread. */
  activity: BigInt64Array;
  /** Told (once) that a reply showed the session broken. */
  onBroken: (reason: string) => void;
}

/**
 * The turns on PGlite's session: one connection's messages at a time, from its first to the
 * ReadyForQuery that says the session is idle; meanwhile the others' wait, in the order they
 * came. A connection that leaves during its turn has what it left ended, as a PostgreSQL
 * backend ends it when its client goes: an unfinished COPY fails, an unfinished exchange gets
 * its Sync, an open transaction is rolled back.
 */
export class SharedSession {
  readonly #db: PGlite;
  readonly #watch: SessionWatch;
  #queue: Pending[] = [];
  #draining = false;
  /** The connection whose turn it is; undefined while the session is idle. */
  #holder: number | undefined;
  /** The connection whose message PGlite runs now. */
  #running: number | undefined;
  /** The holder's COPY FROM waits for its data. */
  #copying = false;
  /** Why no message runs any more: the session broke, or the server closes. */
  #refusal: string | undefined;

  constructor(db: PGlite, watch: SessionWatch) {
    this.#db = db;
    this.#watch = watch;
  }

  /** Runs `message` of `connection` in its turn, PGlite's reply going to `reply` as it comes. */
  send(connection: number, message: Uint8Array, reply: (data: Uint8Array) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ connection, message, reply, done: (error) => (error ? reject(error) : resolve()) });
      void this.#drain();
    });
  }

  /** Drops what `connection` still had waiting, and ends what it left if it was its turn. */
  leave(connection: number): void {
    this.#queue = this.#queue.filter((pending) => pending.connection !== connection);
    // Its message running now may leave the turn with it: what it left is ended after it.
    if (this.#holder !== connection && this.#running !== connection) return;
    const ending = this.#copying ? [COPY_FAIL_MESSAGE, SYNC_MESSAGE] : [SYNC_MESSAGE];
    // At the front: it is still this connection's turn, and nobody else's message may run first.
    this.#queue.unshift(...ending.map((message) => ({ connection, message, reply: () => {}, done: () => {} })), {
      connection,
      message: ROLLBACK_MESSAGE,
      reply: () => {},
      // Whatever PGlite said, the turn is over: the connection is gone.
      done: () => this.#release(connection),
    });
    void this.#drain();
  }

  /** Every waiting message fails; none runs after. */
  close(): void {
    this.#refusal = 'the embedded database is closing';
    for (const pending of this.#queue.splice(0)) pending.done(new Error('the embedded database is closing'));
  }

  async #drain(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (;;) {
        const index =
          this.#holder === undefined ? 0 : this.#queue.findIndex((pending) => pending.connection === this.#holder);
        const next = index === -1 ? undefined : this.#queue.splice(index, 1)[0];
        if (!next) break;
        await this.#run(next);
      }
    } finally {
      this.#draining = false;
    }
  }

  async #run(pending: Pending): Promise<void> {
    const { activity } = this.#watch;
    if (this.#refusal !== undefined) {
      pending.done(new Error(this.#refusal));
      return;
    }
    // A ROLLBACK that ends a departed connection's turn is sent only if a transaction is open.
    if (pending.message === ROLLBACK_MESSAGE && !this.#db.isInTransaction()) {
      pending.done();
      return;
    }
    const scanner = new ReplyScanner();
    Atomics.store(activity, ACTIVITY.heldIdleSince, 0n);
    Atomics.store(activity, ACTIVITY.statementSince, BigInt(Date.now()));
    this.#running = pending.connection;
    try {
      await this.#db.runExclusive(() =>
        this.#db.execProtocolRawStream(pending.message, {
          onRawData: (data: Uint8Array) => {
            const panic = scanner.scan(data);
            // A copy: `data` is PGlite's memory, which its next reply writes over.
            pending.reply(Buffer.from(data));
            if (panic !== undefined) this.#brokenBy(`PGlite reported a PANIC: ${panic}`);
          },
        }),
      );
    } catch (error) {
      pending.done(error instanceof Error ? error : new Error(String(error)));
      return;
    } finally {
      this.#running = undefined;
      Atomics.store(activity, ACTIVITY.statementSince, 0n);
    }
    if (!scanner.completes(pending.message)) {
      const type = String.fromCharCode(pending.message[0] as number);
      this.#brokenBy(`PGlite's reply to a ${type} message did not end with ReadyForQuery`);
    }
    if (scanner.awaitsCopyData) this.#copying = true;
    if (scanner.lastType === READY_FOR_QUERY) this.#copying = false;
    if (scanner.endsIdle()) {
      this.#holder = undefined;
    } else {
      // Its exchange or its transaction is not over: its next message comes before anyone's.
      this.#holder = pending.connection;
      Atomics.store(activity, ACTIVITY.heldIdleSince, BigInt(Date.now()));
    }
    pending.done();
  }

  #release(connection: number): void {
    if (this.#holder !== connection) return;
    this.#holder = undefined;
    this.#copying = false;
    Atomics.store(this.#watch.activity, ACTIVITY.heldIdleSince, 0n);
  }

  #brokenBy(reason: string): void {
    if (this.#refusal !== undefined) return;
    this.#refusal = 'the embedded database is being opened again';
    this.#watch.onBroken(reason);
  }
}

/** PostgreSQL's answer to a connection past `max_connections`. */
const TOO_MANY_CLIENTS = Buffer.concat([
  Buffer.from('E'),
  (() => {
    const fields = Buffer.from('SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0');
    const length = Buffer.alloc(4);
    length.writeInt32BE(fields.length + 4);
    return Buffer.concat([length, fields]);
  })(),
]);

export interface SessionServer {
  close(): Promise<void>;
}

/**
 * Serves `session` on the Unix socket `path` to at most `maxConnections` connections at once.
 * Each connection's bytes are cut into frontend messages, which run in its turn.
 */
export async function serveSession(
  session: SharedSession,
  options: { path: string; maxConnections: number },
): Promise<SessionServer> {
  const sockets = new Set<Socket>();
  let nextConnection = 1;
  const server = createServer((socket) => {
    if (sockets.size >= options.maxConnections) {
      socket.end(TOO_MANY_CLIENTS);
      return;
    }
    sockets.add(socket);
    const connection = nextConnection++;
    const reply = (data: Uint8Array) => {
      if (!socket.destroyed) socket.write(data);
    };
    const read = messageReader(
      (message) => {
        // A failed message (PGlite threw, or the database is being opened again) ends the connection.
        session.send(connection, message, reply).catch(() => socket.destroy());
      },
      (answer) => socket.write(answer),
      () => socket.destroy(),
    );
    socket.on('data', read);
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      session.leave(connection);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    close: () =>
      new Promise<void>((resolve) => {
        session.close();
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Cuts a connection's bytes into frontend messages: first the untyped start-up (after any
 * SSL or GSSAPI encryption request, refused with `N` as a server without them does), then
 * typed messages. A cancel request is not one PGlite can act on (it takes none): it is closed,
 * as PostgreSQL closes one. A Terminate is not passed on: PGlite's session is not the
 * connection's, and what the connection left is ended when it closes.
 */
function messageReader(
  onMessage: (message: Uint8Array) => void,
  answer: (bytes: Uint8Array) => void,
  close: () => void,
): (chunk: Buffer) => void {
  let buffered: Buffer = Buffer.alloc(0);
  let started = false;
  let closed = false;
  return (chunk) => {
    if (closed) return;
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    for (;;) {
      const headerLength = started ? 5 : 8;
      if (buffered.length < headerLength) return;
      const length = started ? 1 + buffered.readInt32BE(1) : buffered.readInt32BE(0);
      if (length < headerLength) {
        // Not PostgreSQL's protocol: nothing more of it can be read.
        closed = true;
        close();
        return;
      }
      if (buffered.length < length) return;
      const message = buffered.subarray(0, length);
      buffered = buffered.subarray(length);
      if (!started) {
        const code = message.readInt32BE(4);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          answer(Buffer.from('N'));
          continue;
        }
        if (code === CANCEL_REQUEST) {
          closed = true;
          close();
          return;
        }
        started = true;
      } else if (message[0] === TERMINATE) {
        closed = true;
        close();
        return;
      }
      onMessage(message);
    }
  };
}
