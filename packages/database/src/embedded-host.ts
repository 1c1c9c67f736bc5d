/**
 * The embedded database's worker thread (embedded.ts starts it): PGlite and the socket server
 * that multiplexes `pg` connections onto it, off the process's main thread. PGlite runs each
 * statement synchronously in WebAssembly; here that blocks this thread only, so the server
 * goes on answering HTTP (health checks, signals) while a statement runs or PGlite is stuck.
 *
 * A worker either makes a new database and ends (`{ create }`), or serves one until asked to
 * stop (`'stop'`); it tells the main thread what happens in `HostMessage`s.
 */
import { statfs } from 'node:fs/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { ACTIVITY, incompleteFolderHint, pgliteOpenError } from './embedded-files.ts';

/** What the worker does: make a new database in `create` and end, or serve `pgdata`. */
export type WorkerTask = { create: string } | HostData;

export interface HostData {
  pgdata: string;
  socketPath: string;
  maxConnections: number;
  /** Opened before in this process: a failure is not a first start's incomplete folder. */
  reopening: boolean;
  /**
   * Two BigInt64 slots (`ACTIVITY`), times from `Date.now()` or 0: since when PGlite runs the
   * statement it runs, and since when a transaction has stayed open with none running. The
   * main thread reads them to find a statement, or an open transaction, that does not end.
   */
  activity: SharedArrayBuffer;
}

export type HostMessage =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'broken'; reason: string }
  | { type: 'stopped' };

/**
 * Reads the bytes PGlite sends back as PostgreSQL backend messages (type, length, body), across
 * the chunks they arrive in, for two signs that its one session is broken:
 * - a PANIC (a WAL write refused for lack of disk space, say). PostgreSQL answers one by
 *   restarting every backend; PGlite has no postmaster, and its session then answers every
 *   statement with an error ("cannot drop active portal"), even once the cause is gone, until
 *   it is opened again. Only an error response whose severity `V` is PANIC counts: matching the
 *   bytes `VPANIC` anywhere would let a stored value restart the database;
 * - a reply to a query or a Sync that does not end with ReadyForQuery (`Z`), unless it opened a
 *   COPY FROM (`G`, `W`), which ends later. PGlite left so by a stack overflow in SQL answers
 *   nothing to every later statement.
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
      // Only error responses ('E') are kept; the rows and the rest are skipped over.
      if (this.#type === ERROR_RESPONSE) this.#body.push(Buffer.from(chunk.subarray(offset, offset + take)));
      offset += take;
      this.#remaining -= take;
      if (this.#remaining === 0) {
        if (this.#type === ERROR_RESPONSE) found = panicMessage(Buffer.concat(this.#body)) ?? found;
        this.#ended();
      }
    }
    return found;
  }

  /** Whether a reply to `request` (one frontend message) ended as a healthy session's does. */
  completes(request: Uint8Array): boolean {
    const type = request[0];
    if (type !== SIMPLE_QUERY && type !== SYNC) return true;
    return this.awaitsCopyData || (this.lastType === READY_FOR_QUERY && this.#remaining === 0);
  }

  #ended(): void {
    this.lastType = this.#type;
    if (this.#type === COPY_IN_RESPONSE || this.#type === COPY_BOTH_RESPONSE) this.awaitsCopyData = true;
  }
}

const ERROR_RESPONSE = 0x45; // 'E'
const READY_FOR_QUERY = 0x5a; // 'Z'
const COPY_IN_RESPONSE = 0x47; // 'G'
const COPY_BOTH_RESPONSE = 0x57; // 'W'
const SIMPLE_QUERY = 0x51; // 'Q', from the client
const SYNC = 0x53; // 'S', from the client

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

/**
 * PGlite as the socket server sees it, but a reply that shows its session broken (a PANIC, or
 * no ReadyForQuery: `ReplyScanner`) tells the main thread, which ends this thread and opens the
 * database again, closing every connection as PostgreSQL's restart does. Until then the next
 * statement fails, which closes its connection (pglite-socket then holds the rest of its queue
 * until the thread ends). Each statement's start, and an open transaction's idle time after
 * it, are noted in `activity`, for the main thread's watch on what does not end.
 */
function watchForBreakage(db: PGlite, activity: BigInt64Array, onBroken: (reason: string) => void): PGlite {
  let broken = false;
  const brokenBy = (reason: string) => {
    if (broken) return;
    broken = true;
    onBroken(reason);
  };
  return new Proxy(db, {
    get(target, property) {
      if (property === 'execProtocolRawStream') {
        return async (message: Uint8Array, options: { onRawData: (data: Uint8Array) => void }) => {
          if (broken) throw new Error('the embedded database is being opened again');
          const scanner = new ReplyScanner();
          Atomics.store(activity, ACTIVITY.idleInTransactionSince, 0n);
          Atomics.store(activity, ACTIVITY.statementSince, BigInt(Date.now()));
          const result = await target
            .execProtocolRawStream(message, {
              ...options,
              onRawData(data: Uint8Array) {
                const panic = scanner.scan(data);
                options.onRawData(data);
                if (panic !== undefined) brokenBy(`PGlite reported a PANIC: ${panic}`);
              },
            })
            .finally(() => {
              Atomics.store(activity, ACTIVITY.statementSince, 0n);
              // One connection's open transaction holds every other's statements: pglite-socket
              // runs only that connection's until it ends.
              if (target.isInTransaction()) {
                Atomics.store(activity, ACTIVITY.idleInTransactionSince, BigInt(Date.now()));
              }
            });
          if (!scanner.completes(message)) {
            brokenBy(
              `PGlite's reply to a ${String.fromCharCode(message[0] as number)} message did not end with ReadyForQuery`,
            );
          }
          return result;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** The space left on the disk that holds `folder`, in words. */
async function freeSpace(folder: string): Promise<string> {
  try {
    const disk = await statfs(folder);
    return `${Math.floor((disk.bavail * disk.bsize) / 1_048_576)} MB free on its disk`;
  } catch {
    return 'its disk could not be read';
  }
}

async function host(data: HostData, port: NonNullable<typeof parentPort>): Promise<void> {
  const post = (message: HostMessage) => port.postMessage(message);
  let db: PGlite | undefined;
  let server: PGLiteSocketServer | undefined;
  try {
    db = await PGlite.create({ dataDir: data.pgdata }).catch(async (error: unknown) => {
      if (!(error instanceof Error)) throw error;
      if (!data.reopening) throw incompleteFolderHint(data.pgdata, error);
      // It opened before: what changed is most likely its disk (a PANIC is mostly a full one).
      throw new Error(
        `PGlite could not open ${data.pgdata} again: ${error.message} (${await freeSpace(data.pgdata)}).`,
      );
    });
    server = new PGLiteSocketServer({
      db: watchForBreakage(db, new BigInt64Array(data.activity), (reason) => post({ type: 'broken', reason })),
      path: data.socketPath,
      maxConnections: data.maxConnections,
    });
    await server.start();
  } catch (error) {
    await db?.close().catch(() => {});
    // PGlite's file system errors are not Errors (`{ name: 'ErrnoError', errno }`).
    post({
      type: 'failed',
      message: (error instanceof Error ? error : pgliteOpenError(data.pgdata, error)).message,
    });
    return;
  }
  const opened = { db, server };
  // pglite-socket ends a departed connection's transaction itself (ROLLBACK through PGlite's
  // exec, not a statement noted above): the note of an open transaction goes with it.
  const activity = new BigInt64Array(data.activity);
  const transactionCheck = setInterval(() => {
    if (!opened.db.isInTransaction()) Atomics.store(activity, ACTIVITY.idleInTransactionSince, 0n);
  }, 250);
  port.on('message', async (message: unknown) => {
    if (message !== 'stop') return;
    clearInterval(transactionCheck);
    await opened.server.stop();
    await opened.db.close().catch(() => {});
    post({ type: 'stopped' });
    port.close();
  });
  post({ type: 'ready' });
}

/** Makes a new database in `folder` and closes it; the worker then ends, and with it PGlite's memory. */
async function create(folder: string, port: NonNullable<typeof parentPort>): Promise<void> {
  try {
    const fresh = await PGlite.create({ dataDir: folder });
    await fresh.close();
    port.postMessage({ type: 'ready' } satisfies HostMessage);
  } catch (error) {
    const message = (error instanceof Error ? error : pgliteOpenError(folder, error)).message;
    port.postMessage({ type: 'failed', message } satisfies HostMessage);
  }
  port.close();
}

if (parentPort) {
  const task = workerData as WorkerTask;
  await ('create' in task ? create(task.create, parentPort) : host(task, parentPort));
}
