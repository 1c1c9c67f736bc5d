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
import { chmod, mkdtemp, rename, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { ACTIVITY } from './embedded-files.ts';

/**
 * Reads the bytes PGlite sends back as PostgreSQL backend messages (type, length, body), across
 * the chunks they arrive in. It finds two signs that its one session is broken:
 * - an error response whose severity `V` is PANIC or FATAL. A PANIC (a WAL write refused for
 *   lack of disk space, say) leaves PGlite answering every statement with an error ("cannot
 *   drop active portal"), even once the cause is gone, until it is opened again: PostgreSQL
 *   restarts every backend after one, and PGlite has no postmaster. A FATAL ends a
 *   PostgreSQL backend, and PGlite's is every connection's (a COPY FROM STDIN sent alone makes
 *   it lose the protocol's thread: `unexpected EOF`, then FATAL, then nothing). Only the `V`
 *   field counts: matching the bytes `VPANIC` anywhere would let a stored value restart the
 *   database;
 * - a reply to a query or a Sync that does not end with ReadyForQuery (`Z`). PGlite left so by
 *   a stack overflow in SQL answers nothing to every later statement.
 * It also keeps the transaction status of a reply's closing ReadyForQuery, which ends a turn.
 */
export class ReplyScanner {
  #header = Buffer.alloc(0);
  #remaining = 0;
  #type = 0;
  #body: Buffer[] = [];
  /** The type of the last whole message, 0 before the first. */
  lastType = 0;
  /** The status byte of the last ReadyForQuery (`I` idle, `T` in a transaction, `E` in a failed one). */
  #readyStatus = 0;

  /** Feeds the next chunk; returns a whole error response in it that is a PANIC or a FATAL. */
  scan(chunk: Uint8Array): SevereError | undefined {
    let found: SevereError | undefined;
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
        if (this.#type === ERROR_RESPONSE) found = severeError(Buffer.concat(this.#body)) ?? found;
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
    return this.#endsReady();
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
  }
}

const ERROR_RESPONSE = 0x45; // 'E'
const READY_FOR_QUERY = 0x5a; // 'Z'
const IDLE = 0x49; // 'I', ReadyForQuery's status outside a transaction
const SIMPLE_QUERY = 0x51; // 'Q', from the client
const PARSE = 0x50; // 'P', from the client
const SYNC = 0x53; // 'S', from the client
const TERMINATE = 0x58; // 'X', from the client
// The untyped first messages' codes (PostgreSQL's protocol, "Message Formats").
const SSL_REQUEST = 80_877_103;
const GSSENC_REQUEST = 80_877_104;
const CANCEL_REQUEST = 80_877_102;

/** An error response that ends a PostgreSQL backend or all of them. */
export interface SevereError {
  severity: 'PANIC' | 'FATAL';
  message: string;
}

/** The severity and message of an ErrorResponse body whose non-localised severity (`V`) is PANIC or FATAL. */
function severeError(body: Buffer): SevereError | undefined {
  const fields = new Map<string, string>();
  let offset = 0;
  while (offset < body.length && body[offset] !== 0) {
    const end = body.indexOf(0, offset + 1);
    if (end === -1) break;
    fields.set(String.fromCharCode(body[offset] as number), body.toString('utf8', offset + 1, end));
    offset = end + 1;
  }
  const severity = fields.get('V');
  if (severity !== 'PANIC' && severity !== 'FATAL') return undefined;
  return { severity, message: fields.get('M') ?? severity };
}

/** A typed protocol message built here: type, length (counting itself), body. */
function protocolMessage(type: string, body: Buffer): Uint8Array {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}
const SYNC_MESSAGE = protocolMessage('S', Buffer.alloc(0));
const ROLLBACK_MESSAGE = protocolMessage('Q', Buffer.from('ROLLBACK\0'));

/**
 * What runs instead of a COPY FROM STDIN: PGlite takes a COPY's data only in the same call as
 * its query, and a query sent alone makes it lose the protocol's thread for good (FATAL). So
 * PGlite itself answers it with an error (a transaction open around it fails, as on
 * PostgreSQL), and the session goes on.
 */
const COPY_FROM_CLIENT_REFUSAL = `DO $refusal$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = 'COPY FROM STDIN is not supported by the embedded database (PGlite)', HINT = 'Insert the rows with INSERT, or set DATABASE_URL to use a PostgreSQL server.'; END $refusal$`;

/**
 * Whether `sql` holds a COPY … FROM STDIN statement, outside string literals, quoted
 * identifiers and comments (which are blanked first: `INSERT … VALUES ('copy a from stdin')`
 * is not one).
 */
export function copiesFromClient(sql: string): boolean {
  if (!/copy/i.test(sql)) return false;
  // COPY is a statement's first word; statements end at semicolons once quoted text is gone.
  // FROM STDIN is outside parentheses: `COPY (SELECT … FROM stdin) TO STDOUT` reads a table.
  return withoutQuotedText(sql)
    .split(';')
    .some((statement) => /^\s*copy\b/i.test(statement) && /\bfrom\s+stdin\b/i.test(outsideParentheses(statement)));
}

/** A dollar quote's delimiter, as PostgreSQL's lexer reads one: `$$` or `$tag$`, non-ASCII letters allowed. */
const DOLLAR_QUOTE_TAG = /\$(?:[A-Za-z_\u0080-\uFFFF][A-Za-z_0-9\u0080-\uFFFF]*)?\$/y;

/**
 * `sql` with its string literals, quoted identifiers, dollar-quoted strings and comments made
 * spaces. One pass over the text, by index: a script of any size costs its length.
 */
function withoutQuotedText(sql: string): string {
  const kept: string[] = [];
  let from = 0;
  let offset = 0;
  // As PostgreSQL's lexer reads an identifier's characters: ASCII letters, digits, `_`, `$`
  // and every non-ASCII character (a `$` after one is part of the name, not a dollar quote).
  const inIdentifier = (at: number) => at >= 0 && /[A-Za-z0-9_$\u0080-\uFFFF]/.test(sql[at] as string);
  while (offset < sql.length) {
    let end: number | undefined;
    if (sql.startsWith('--', offset)) {
      const newline = sql.indexOf('\n', offset);
      end = newline === -1 ? sql.length : newline;
    } else if (sql.startsWith('/*', offset)) {
      // Block comments nest in PostgreSQL.
      let depth = 0;
      end = offset;
      do {
        if (sql.startsWith('/*', end)) {
          depth++;
          end += 2;
        } else if (sql.startsWith('*/', end)) {
          depth--;
          end += 2;
        } else end++;
      } while (depth > 0 && end < sql.length);
    } else if (sql[offset] === "'" || sql[offset] === '"') {
      // A doubled quote stays inside; in E'…' a backslash escapes the next character.
      const quote = sql[offset];
      const escapes =
        quote === "'" && (sql[offset - 1] === 'E' || sql[offset - 1] === 'e') && !inIdentifier(offset - 2);
      end = offset + 1;
      while (end < sql.length) {
        if (escapes && sql[end] === '\\') end += 2;
        else if (sql[end] === quote && sql[end + 1] === quote) end += 2;
        else if (sql[end] === quote) break;
        else end++;
      }
      end++;
    } else if (sql[offset] === '$' && !inIdentifier(offset - 1)) {
      DOLLAR_QUOTE_TAG.lastIndex = offset;
      const tag = DOLLAR_QUOTE_TAG.exec(sql)?.[0];
      if (tag) {
        const close = sql.indexOf(tag, offset + tag.length);
        end = close === -1 ? sql.length : close + tag.length;
      }
    }
    if (end === undefined) {
      offset++;
    } else {
      kept.push(sql.slice(from, offset), ' ');
      offset = Math.min(end, sql.length);
      from = offset;
    }
  }
  kept.push(sql.slice(from));
  return kept.join('');
}

/** `statement` without what stands inside parentheses. */
function outsideParentheses(statement: string): string {
  let depth = 0;
  let outside = '';
  for (const character of statement) {
    if (character === '(') depth++;
    else if (character === ')') depth = Math.max(depth - 1, 0);
    else if (depth === 0) outside += character;
  }
  return outside;
}

/** `message`, or what runs in its place when it is a query or a Parse of a COPY FROM STDIN. */
function refusingCopyFromClient(message: Uint8Array): Uint8Array {
  const type = message[0];
  if (type !== SIMPLE_QUERY && type !== PARSE) return message;
  const body = Buffer.from(message.buffer, message.byteOffset + 5, message.length - 5);
  if (type === SIMPLE_QUERY) {
    const sql = body.toString('utf8', 0, Math.max(body.indexOf(0), 0));
    return copiesFromClient(sql) ? protocolMessage('Q', Buffer.from(`${COPY_FROM_CLIENT_REFUSAL}\0`)) : message;
  }
  // Parse: the statement's name, its SQL, then the parameters' types.
  const nameEnd = body.indexOf(0);
  const sqlEnd = body.indexOf(0, nameEnd + 1);
  if (nameEnd === -1 || sqlEnd === -1 || !copiesFromClient(body.toString('utf8', nameEnd + 1, sqlEnd))) return message;
  return protocolMessage(
    'P',
    Buffer.concat([body.subarray(0, nameEnd + 1), Buffer.from(`${COPY_FROM_CLIENT_REFUSAL}\0`), Buffer.alloc(2)]),
  );
}

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
 * backend ends it when its client goes: an unfinished exchange gets its Sync, an open
 * transaction is rolled back.
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
    // At the front: it is still this connection's turn, and nobody else's message may run first.
    this.#queue.unshift(
      { connection, message: SYNC_MESSAGE, reply: () => {}, done: () => {} },
      {
        connection,
        message: ROLLBACK_MESSAGE,
        reply: () => {},
        // Whatever PGlite said, the turn is over: the connection is gone.
        done: () => this.#release(connection),
      },
    );
    void this.#drain();
  }

  /** Every waiting message fails; none runs after. */
  close(): void {
    this.#refusal = 'the embedded database is closing';
    for (const pending of this.#queue.splice(0)) pending.done(new Error(this.#refusal));
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
    const scanner = new ReplyScanner();
    Atomics.store(activity, ACTIVITY.heldIdleSince, 0n);
    Atomics.store(activity, ACTIVITY.statementSince, BigInt(Date.now()));
    this.#running = pending.connection;
    try {
      // A ROLLBACK that ends a departed connection's turn is sent only if a transaction is open.
      if (pending.message === ROLLBACK_MESSAGE && !this.#db.isInTransaction()) {
        pending.done();
        return;
      }
      await this.#db.runExclusive(() =>
        this.#db.execProtocolRawStream(refusingCopyFromClient(pending.message), {
          onRawData: (data: Uint8Array) => {
            const severe = scanner.scan(data);
            // A copy: `data` is PGlite's memory, which its next reply writes over.
            pending.reply(Buffer.from(data));
            if (severe) this.#brokenBy(`PGlite reported a ${severe.severity}: ${severe.message}`);
          },
        }),
      );
    } catch (error) {
      // PGlite's program ended (`exit(1)`) or it failed otherwise: nothing it runs can be trusted.
      const failure = error instanceof Error ? error : new Error(String(error));
      this.#brokenBy(`PGlite failed: ${failure.message}`);
      pending.done(failure);
      return;
    } finally {
      this.#running = undefined;
      Atomics.store(activity, ACTIVITY.statementSince, 0n);
    }
    if (!scanner.completes(pending.message)) {
      const type = String.fromCharCode(pending.message[0] as number);
      this.#brokenBy(`PGlite's reply to a ${type} message did not end with ReadyForQuery`);
    }
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
    Atomics.store(this.#watch.activity, ACTIVITY.heldIdleSince, 0n);
  }

  #brokenBy(reason: string): void {
    if (this.#refusal !== undefined) return;
    this.#refusal = 'the embedded database is being opened again';
    this.#watch.onBroken(reason);
  }
}

/** PostgreSQL's answer to a connection past `max_connections`. */
const TOO_MANY_CLIENTS = protocolMessage(
  'E',
  Buffer.from('SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0'),
);

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
  // Half-open: a client that ends its side after its last query still gets the answer.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    if (sockets.size >= options.maxConnections) {
      // Half-open: a client that never closes its side is closed after a while.
      socket.end(TOO_MANY_CLIENTS).setTimeout(5_000, () => socket.destroy());
      return;
    }
    sockets.add(socket);
    const connection = nextConnection++;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      session.leave(connection);
    };
    const reply = (data: Uint8Array) => {
      if (!socket.destroyed) socket.write(data);
    };
    // The connection's last message: its messages run in order, so once it has, all have.
    let last: Promise<unknown> = Promise.resolve();
    const read = messageReader({
      message: (message) => {
        // A failed message (PGlite failed, or the database is being opened again) ends the connection.
        last = session.send(connection, message, reply).catch(() => socket.destroy());
      },
      answer: (bytes) => socket.write(bytes),
      // A Terminate or the end of its input: once what it sent before has run, its turn is
      // ended as PostgreSQL ends a session, and the socket closed when its replies are out.
      end: () =>
        void last.then(() => {
          leave();
          socket.end(() => socket.destroy());
        }),
      refuse: () => socket.destroy(),
    });
    socket.on('data', read.chunk);
    socket.on('end', read.end);
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      leave();
    });
  });
  await listenOwnerOnly(server, options.path);
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
 * Listens on the Unix socket `path`, which only this user can connect to (0600), whatever the
 * umask and the mode of its folder (`DATA_DIR` may be 0755 and shared): the socket asks no
 * password, as PGlite has none. It is bound in a folder of its own made 0700, made 0600 there,
 * and only then moved to `path`, so no one else can connect in between.
 */
async function listenOwnerOnly(server: Server, path: string): Promise<void> {
  const folder = await mkdtemp(join(dirname(path), '.s-'));
  const bound = join(folder, 's');
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(bound, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(bound, 0o600);
    await rename(bound, path);
  } catch (error) {
    server.close();
    throw error;
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

/**
 * Cuts a connection's bytes into frontend messages: first the untyped start-up (after any
 * SSL or GSSAPI encryption request, refused with `N` as a server without them does), then
 * typed messages. A cancel request is not one PGlite can act on (it takes none): it is closed,
 * as PostgreSQL closes one. A Terminate, or the end of the input, is not passed on (PGlite's
 * session is not the connection's): the connection ends once what it sent before has run.
 */
function messageReader(to: {
  message: (message: Uint8Array) => void;
  answer: (bytes: Uint8Array) => void;
  end: () => void;
  refuse: () => void;
}): { chunk: (chunk: Buffer) => void; end: () => void } {
  let buffered: Buffer = Buffer.alloc(0);
  let started = false;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    to.end();
  };
  const chunk = (bytes: Buffer) => {
    if (ended) return;
    buffered = buffered.length === 0 ? bytes : Buffer.concat([buffered, bytes]);
    for (;;) {
      const headerLength = started ? 5 : 8;
      if (buffered.length < headerLength) return;
      const length = started ? 1 + buffered.readInt32BE(1) : buffered.readInt32BE(0);
      if (length < headerLength) {
        // Not PostgreSQL's protocol: nothing more of it can be read.
        ended = true;
        to.refuse();
        return;
      }
      if (buffered.length < length) return;
      const message = buffered.subarray(0, length);
      buffered = buffered.subarray(length);
      if (!started) {
        const code = message.readInt32BE(4);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          to.answer(Buffer.from('N'));
          continue;
        }
        if (code === CANCEL_REQUEST) {
          ended = true;
          to.refuse();
          return;
        }
        started = true;
      } else if (message[0] === TERMINATE) {
        end();
        return;
      }
      to.message(message);
    }
  };
  return { chunk, end };
}
