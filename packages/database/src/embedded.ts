import { constants } from 'node:fs';
import { access, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { livePidIn, tryPidLock } from '@mcp-auth-stack/pid-lock';
import { ACTIVITY, exists, ownerOnlyFolder } from './embedded-files.ts';
import type { HostData, HostMessage, WorkerTask } from './embedded-host.ts';
import { LOCK_NAME, SERVER_PORT } from './embedded-lock.ts';
import type { StatementLimitExemption } from './statement-limit.ts';

export { pgliteOpenError } from './embedded-files.ts';

/**
 * The embedded database: PGlite (Postgres compiled to WebAssembly) persisted under a data
 * directory and served on a Unix socket inside that directory. Callers reach it with `pg`
 * exactly as they reach a real server, so there is one query implementation, not two.
 *
 * PGlite runs in a worker thread (embedded-host.ts), so a long statement, or PGlite stuck on a
 * full disk, holds up that thread and not the server's. Like PostgreSQL's postmaster, this
 * module opens the database again when PGlite's session shows itself broken (a PANIC, a FATAL,
 * PGlite failing), its
 * thread dies, or a statement does not end (`SupervisedHost`): every connection is closed, and
 * the next ones find a database recovered from its WAL (docs/decisions.md #86).
 *
 * The socket server gives the connections turns on PGlite's one session (embedded-session.ts):
 * a whole query, a whole transaction, then the next connection's. What outlives a turn is
 * every connection's, so callers must not rely on per-connection state: no named prepared
 * statements (two connections preparing the same name collide), no SET.
 *
 * One process owns the data directory (PGlite cannot share files between processes); any
 * other process on the machine (the keys CLI next to a running server) connects to the
 * owner's socket instead of opening the files. Only a server's socket is joined: a tool that
 * owns the files (the keys CLI with no server running) serves them on a socket of its own,
 * so another tool waits for the lock instead of joining a session that ends with that tool.
 */
export interface EmbeddedServer {
  /** Directory that holds the socket; pass it to `pg` as `host`. */
  socketDir: string;
  /** The socket's "port" (its name is `.s.PGSQL.<port>`); pass it to `pg` as `port`. */
  port: number;
  /** True when this process opened the files; false when it joined another process's socket. */
  owner: boolean;
  /**
   * Runs `work` with the limit on one statement's length lifted (migrations). Only this
   * process's work should be, but the limit is the owner's: lifted for every connection
   * meanwhile. A process that joined another's socket cannot lift it.
   */
  withoutStatementLimit: StatementLimitExemption;
  stop(): Promise<void>;
}

/** The socket a server serves, which tools join. */
const socketName = (port: number) => `.s.PGSQL.${port}`;
// sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH = 107;

export interface EmbeddedServerOptions {
  /** Connections the socket server admits, which take turns on PGlite's single session. */
  maxConnections?: number;
  /**
   * A server must own the files: it waits up to `waitForLockMs` for a short-lived owner (the
   * keys CLI) to finish, then fails, and serves them on the shared socket. A tool that only
   * needs a connection joins a running server, or owns the files on a socket of its own.
   */
  mustOwn?: boolean;
  waitForLockMs?: number;
  /**
   * Told when the database is opened again (for the log): after a PANIC or another sign of a
   * broken session, its thread's end, or a statement past `statementLimitMs`.
   */
  onRestart?: (event: RestartEvent) => void;
  /**
   * A statement PGlite runs for longer (default 30 s), or a connection's turn on the session
   * left that long with no statement (a transaction open, a query not finished), is ended by
   * opening the database again (outside `withoutStatementLimit`, which migrations use): PGlite
   * takes no `statement_timeout` nor a cancel request, and serves one connection's turn at a
   * time, so either would hold every connection up.
   */
  statementLimitMs?: number;
}

export async function startEmbeddedServer(
  dataDir: string,
  options: EmbeddedServerOptions = {},
): Promise<EmbeddedServer> {
  const socketPath = join(dataDir, socketName(SERVER_PORT));
  // A tool's own socket: a name no other owner of this directory has at the same time (one at a time holds the lock).
  const ownPort = options.mustOwn ? SERVER_PORT : 10_000 + (process.pid % 50_000);
  const lockPath = join(dataDir, LOCK_NAME);
  // Checked before anything is made. A tool whose own socket's name would be too long can still
  // join a server's (a 93-byte DATA_DIR left the server running and `pnpm keys` refused).
  const tooLong = (path: string) =>
    new Error(
      `The embedded database socket path ${path} is longer than ${MAX_SOCKET_PATH} bytes; choose a shorter DATA_DIR.`,
    );
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) throw tooLong(socketPath);
  const ownSocketPath = join(dataDir, socketName(ownPort));
  await usableDataDir(dataDir);

  const deadline = Date.now() + (options.waitForLockMs ?? 15_000);
  for (;;) {
    // A lock left by a process that no longer runs is taken over.
    const releaseLock = await tryPidLock(lockPath);
    if (releaseLock) {
      if (Buffer.byteLength(ownSocketPath) > MAX_SOCKET_PATH) {
        await releaseLock();
        throw tooLong(ownSocketPath);
      }
      return await ownDataDir(dataDir, ownPort, releaseLock, options);
    }
    if (!options.mustOwn && (await socketAnswers(socketPath))) {
      return {
        socketDir: dataDir,
        port: SERVER_PORT,
        owner: false,
        withoutStatementLimit: (work) => work(),
        stop: async () => {},
      };
    }
    if (Date.now() >= deadline) {
      const holder = (await livePidIn(lockPath)) ?? '?';
      throw new Error(
        `The embedded database in ${dataDir} is in use by process ${holder}. Stop it, or give this process its own DATA_DIR, or use DATABASE_URL.`,
      );
    }
    // The owner is starting up or shutting down; look again shortly.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * DATA_DIR, made if missing (owner-only), and a message a person can act on when it is a file or
 * cannot be written (Node's EEXIST and EACCES named neither the variable nor the fix).
 */
async function usableDataDir(dataDir: string): Promise<void> {
  try {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR') {
      throw new Error(`DATA_DIR ${dataDir} is a file, not a folder: give the embedded database a folder.`);
    }
    throw error;
  }
  // Another user's DATA_DIR is refused before anything is written in it (the lock, `pgdata`):
  // run as root, a first start would leave the owner a database of root's. A folder everyone
  // may write (a shared one, /tmp-like) is allowed: `pgdata` inside it is checked instead.
  const folder = await stat(dataDir);
  const me = process.getuid?.();
  if (me !== undefined && folder.uid !== me && (folder.mode & 0o002) === 0) {
    throw new Error(
      `DATA_DIR ${dataDir} belongs to another user (uid ${folder.uid}; this process runs as uid ${me}): run as that user, or give this one a DATA_DIR of its own.`,
    );
  }
  try {
    await access(dataDir, constants.W_OK | constants.X_OK);
  } catch {
    throw new Error(
      `DATA_DIR ${dataDir} cannot be written by this user (uid ${me}; the folder belongs to uid ${folder.uid}): make it writable, or give this one a DATA_DIR of its own.`,
    );
  }
}

async function ownDataDir(
  dataDir: string,
  port: number,
  releaseLock: () => Promise<void>,
  options: EmbeddedServerOptions,
): Promise<EmbeddedServer> {
  const socketPath = join(dataDir, socketName(port));
  try {
    // Holding the lock, every socket here is a dead owner's (a keys CLI killed while it owned
    // the files leaves one named after its pid): nobody answers on them.
    await removeDeadSockets(dataDir, socketPath);
    // PGlite writes its files 0666 whatever the umask (the WAL holds every row written), and
    // DATA_DIR may exist already with 0755: its own folder, 0700 before PGlite writes a file
    // in it (PostgreSQL's rule), is what keeps other local users out; a file opened while it
    // was open stays open. Only that folder: DATA_DIR may hold other things, or be shared.
    const pgdata = await ownerOnlyFolder(join(dataDir, 'pgdata'));
    await createIfNew(pgdata);
    const host = new SupervisedHost(
      { pgdata, socketPath, maxConnections: options.maxConnections ?? 8, reopening: false },
      options.onRestart ?? (() => {}),
      options.statementLimitMs ?? 30_000,
    );
    await host.start();
    return {
      socketDir: dataDir,
      port,
      owner: true,
      withoutStatementLimit: (work) => host.withoutStatementLimit(work),
      async stop() {
        await host.stop();
        await rm(socketPath, { force: true });
        await releaseLock();
      },
    };
  } catch (error) {
    await releaseLock();
    throw error;
  }
}

/**
 * PGlite takes a folder holding `PG_VERSION` for a database it made, and writes that file
 * before the rest of a new database is unpacked: a first start killed in between (a laptop lid
 * closed, kill -9) left a folder no later start could open. So a new database is made in a
 * folder beside it, closed, and renamed into place (rename is atomic); what a start that died
 * there left is removed first. Run under the data folder's lock.
 */
async function createIfNew(pgdata: string): Promise<void> {
  if (await exists(join(pgdata, 'PG_VERSION'))) return;
  // A folder without PG_VERSION that is not empty is not one this made: left to PGlite, as before.
  if ((await readdir(pgdata)).length > 0) return;
  const partial = `${pgdata}.partial`;
  await rm(partial, { recursive: true, force: true });
  // In a worker of its own, which ends after: making a cluster peaks some 350 MB above
  // serving one (docs/performance.md), memory a thread that went on serving would keep.
  await (await startWorker({ create: await ownerOnlyFolder(partial) })).terminate();
  // Over the empty pgdata (rename replaces an empty folder).
  await rename(partial, pgdata);
}

/** What the embedded database went through, for the owner's log. */
export type RestartEvent =
  | { type: 'restarting'; reason: string }
  | { type: 'restarted'; afterMs: number }
  | { type: 'restart-failed'; message: string; retryInMs: number };

/**
 * How long a stop waits for PGlite to close its files (about 0.2 s) before its thread is ended:
 * less than the server's bound on closing its database (DATABASE_CLOSE_TIMEOUT_MS, 2 s by
 * default), so the thread is ended before the process gives up on it.
 */
const STOP_GRACE_MS = 1_000;
/** Waits between attempts to open the database again; the last repeats. */
const RESTART_BACKOFF_MS = [250, 1_000, 5_000, 30_000];

/**
 * The worker thread that serves the database, started again, until `stop`, when its session
 * shows itself broken (a PANIC, a FATAL, PGlite failing, a reply without ReadyForQuery), when
 * the thread fails or exits,
 * and when a statement, or a turn with none running, lasts past the limit outside
 * `withoutStatementLimit`.
 */
class SupervisedHost {
  #worker: Worker | undefined;
  #restarting: Promise<void> | undefined;
  #stopping = false;
  #wakeUp: (() => void) | undefined;

  #activity = newActivity();
  #watchdog: NodeJS.Timeout | undefined;
  #exempt = 0;
  readonly data: Omit<HostData, 'activity'>;
  readonly onRestart: (event: RestartEvent) => void;
  readonly statementLimitMs: number;

  constructor(data: Omit<HostData, 'activity'>, onRestart: (event: RestartEvent) => void, statementLimitMs: number) {
    this.data = data;
    this.onRestart = onRestart;
    this.statementLimitMs = statementLimitMs;
  }

  async start(): Promise<void> {
    this.#worker = await this.#startHost(false);
    this.#watch(this.#worker);
    this.#watchdog = setInterval(() => this.#checkStatement(), Math.min(1_000, this.statementLimitMs / 4));
    // Not what keeps a process alive: its server, or its work, does.
    this.#watchdog.unref();
  }

  /** A worker serving the database, with a fresh note of its statements. */
  #startHost(reopening: boolean): Promise<Worker> {
    this.#activity = newActivity();
    return startWorker({ ...this.data, reopening, activity: this.#activity.buffer });
  }

  /** Work during which no statement is ended for its length: migrations, which may rightly take long. */
  async withoutStatementLimit<T>(work: () => Promise<T>): Promise<T> {
    this.#exempt++;
    try {
      return await work();
    } finally {
      this.#exempt--;
    }
  }

  #checkStatement(): void {
    if (this.#exempt > 0) return;
    const worker = this.#worker;
    if (!worker) return;
    const past = (slot: number) => {
      const since = Number(Atomics.load(this.#activity, slot));
      return since !== 0 && Date.now() - since > this.statementLimitMs;
    };
    if (past(ACTIVITY.statementSince)) {
      this.#restart(worker, `a statement ran for more than ${this.statementLimitMs} ms`);
    } else if (past(ACTIVITY.heldIdleSince)) {
      // PostgreSQL's idle_in_transaction_session_timeout, at the same length: on PGlite's one
      // session, a turn that does not end holds every other connection.
      this.#restart(
        worker,
        `a connection held the session (a transaction open, or a query not finished), with no statement running, for more than ${this.statementLimitMs} ms`,
      );
    }
  }

  #watch(worker: Worker): void {
    worker.on('message', (message: HostMessage) => {
      if (message.type === 'broken') this.#restart(worker, message.reason);
    });
    worker.on('error', (error) => this.#restart(worker, `its thread failed: ${error.message}`));
    worker.on('exit', (code) => this.#restart(worker, `its thread exited (code ${code})`));
  }

  #restart(worker: Worker, reason: string): void {
    if (this.#stopping || this.#restarting || worker !== this.#worker) return;
    this.onRestart({ type: 'restarting', reason });
    const began = Date.now();
    this.#restarting = (async () => {
      // Ending the thread closes every connection, as PostgreSQL's restart does; a stuck
      // PGlite is stopped in its WebAssembly too.
      await worker.terminate();
      // A stop from now on has no thread to wait for, unless a new one starts.
      this.#worker = undefined;
      for (let attempt = 0; !this.#stopping; attempt++) {
        try {
          await rm(this.data.socketPath, { force: true });
          const next = await this.#startHost(true);
          if (this.#stopping) {
            await next.terminate();
            return;
          }
          this.#worker = next;
          this.#watch(next);
          this.onRestart({ type: 'restarted', afterMs: Date.now() - began });
          return;
        } catch (error) {
          const retryInMs = RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length - 1)] as number;
          this.onRestart({ type: 'restart-failed', message: (error as Error).message, retryInMs });
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, retryInMs);
            this.#wakeUp = () => {
              clearTimeout(timer);
              resolve();
            };
          });
        }
      }
    })().finally(() => {
      this.#restarting = undefined;
    });
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#watchdog);
    this.#wakeUp?.();
    await this.#restarting;
    const worker = this.#worker;
    if (!worker) return;
    const stopped = new Promise<void>((resolve) => {
      worker.on('message', (message: HostMessage) => {
        if (message.type === 'stopped') resolve();
      });
      worker.once('exit', () => resolve());
    });
    worker.postMessage('stop');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([stopped, new Promise((resolve) => (timer = setTimeout(resolve, STOP_GRACE_MS)))]);
    clearTimeout(timer);
    await worker.terminate();
  }
}

/** The shared slots a serving worker notes its statements in (`ACTIVITY`), all 0. */
function newActivity(): BigInt64Array<SharedArrayBuffer> {
  return new BigInt64Array(new SharedArrayBuffer(ACTIVITY.slots * BigInt64Array.BYTES_PER_ELEMENT));
}

/** A worker thread that has done its task: made a database, or serves one on its socket. */
function startWorker(task: WorkerTask): Promise<Worker> {
  const worker = new Worker(new URL('./embedded-host.ts', import.meta.url), { workerData: task });
  return new Promise((resolve, reject) => {
    const settle = (outcome: () => void) => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
      outcome();
    };
    const onMessage = (message: HostMessage) => {
      if (message.type === 'ready') settle(() => resolve(worker));
      if (message.type === 'failed') {
        settle(() => reject(new Error(message.message)));
        void worker.terminate();
      }
    };
    const onError = (error: Error) => settle(() => reject(error));
    const onExit = (code: number) =>
      settle(() => reject(new Error(`The embedded database's thread exited (code ${code}) while it started.`)));
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

async function removeDeadSockets(dataDir: string, own: string): Promise<void> {
  // Holding the lock, no embedded database serves here: whatever answers on this name is
  // another program's (a PostgreSQL server whose socket folder is DATA_DIR, /tmp say).
  if (await socketAnswers(own)) {
    throw new Error(
      `Another program answers on ${own}: the embedded database cannot use this folder for its socket. Give DATA_DIR a folder of its own.`,
    );
  }
  await rm(own, { force: true });
  const names = await readdir(dataDir);
  const sockets = names.filter((name) => /^\.s\.PGSQL\.\d+$/.test(name)).map((name) => join(dataDir, name));
  // Only those nobody answers on: a DATA_DIR shared with a PostgreSQL server keeps its socket.
  await Promise.all(
    sockets.map(async (path) => {
      if (path !== own && !(await socketAnswers(path))) await rm(path, { force: true });
    }),
  );
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
