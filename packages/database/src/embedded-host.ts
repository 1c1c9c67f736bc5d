/**
 * The embedded database's worker thread (embedded.ts starts it): PGlite and the socket server
 * that gives `pg` connections turns on its session (embedded-session.ts), off the process's
 * main thread. PGlite runs each statement synchronously in WebAssembly; here that blocks this
 * thread only, so the server goes on answering HTTP (health checks, signals) while a statement
 * runs or PGlite is stuck.
 *
 * A worker either makes a new database and ends (`{ create }`), or serves one until asked to
 * stop (`'stop'`); it tells the main thread what happens in `HostMessage`s.
 */
import { statfs } from 'node:fs/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';
import { firstOpenError, pgliteOpenError } from './embedded-files.ts';
import { type SessionServer, SharedSession, serveSession } from './embedded-session.ts';

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
   * statement it runs, and since when a connection has held the session (a transaction open,
   * an exchange not ended by Sync) with none running. The main thread reads them to find a
   * statement, or a turn, that does not end.
   */
  activity: SharedArrayBuffer;
}

export type HostMessage =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'broken'; reason: string }
  | { type: 'stopped' };

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
  let server: SessionServer | undefined;
  try {
    db = await PGlite.create({ dataDir: data.pgdata }).catch(async (error: unknown) => {
      if (!(error instanceof Error)) throw error;
      if (!data.reopening) throw await firstOpenError(data.pgdata, error);
      // It opened before: what changed is most likely its disk (a PANIC is mostly a full one).
      throw new Error(
        `PGlite could not open ${data.pgdata} again: ${error.message} (${await freeSpace(data.pgdata)}).`,
      );
    });
    // A reply that shows the session broken tells the main thread, which ends this thread and
    // opens the database again, closing every connection as PostgreSQL's restart does.
    const session = new SharedSession(db, {
      activity: new BigInt64Array(data.activity),
      onBroken: (reason) => post({ type: 'broken', reason }),
    });
    server = await serveSession(session, { path: data.socketPath, maxConnections: data.maxConnections });
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
  port.on('message', async (message: unknown) => {
    if (message !== 'stop') return;
    await opened.server.close();
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
