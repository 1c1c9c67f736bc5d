import { access, chmod, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { livePidIn, tryPidLock } from '@mcp-auth-stack/pid-lock';
import { LOCK_NAME } from './embedded-lock.ts';

/**
 * The embedded database: PGlite (Postgres compiled to WebAssembly) persisted under a data
 * directory and served on a Unix socket inside that directory. Callers reach it with `pg`
 * exactly as they reach a real server, so there is one query implementation, not two.
 *
 * The socket server multiplexes every connection onto PGlite's one session, so callers must
 * not rely on per-connection state: no named prepared statements (two connections preparing
 * the same name collide), no SET, no transactions spanning several queries from several
 * connections at once.
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
  stop(): Promise<void>;
}

/** The socket a server serves, which tools join. */
const SHARED_PORT = 5432;
const socketName = (port: number) => `.s.PGSQL.${port}`;
// sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH = 107;

export interface EmbeddedServerOptions {
  /** Connections the socket server multiplexes onto PGlite's single session. */
  maxConnections?: number;
  /**
   * A server must own the files: it waits up to `waitForLockMs` for a short-lived owner (the
   * keys CLI) to finish, then fails, and serves them on the shared socket. A tool that only
   * needs a connection joins a running server, or owns the files on a socket of its own.
   */
  mustOwn?: boolean;
  waitForLockMs?: number;
}

export async function startEmbeddedServer(
  dataDir: string,
  options: EmbeddedServerOptions = {},
): Promise<EmbeddedServer> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const socketPath = join(dataDir, socketName(SHARED_PORT));
  // A tool's own socket: a name no other owner of this directory has at the same time (one at a time holds the lock).
  const ownPort = options.mustOwn ? SHARED_PORT : 10_000 + (process.pid % 50_000);
  const lockPath = join(dataDir, LOCK_NAME);
  const longestPath = join(dataDir, socketName(Math.max(ownPort, SHARED_PORT)));
  if (Buffer.byteLength(longestPath) > MAX_SOCKET_PATH) {
    throw new Error(
      `The embedded database socket path ${longestPath} is longer than ${MAX_SOCKET_PATH} bytes; choose a shorter DATA_DIR.`,
    );
  }

  const deadline = Date.now() + (options.waitForLockMs ?? 15_000);
  for (;;) {
    // A lock left by a process that no longer runs is taken over.
    const releaseLock = await tryPidLock(lockPath);
    if (releaseLock) {
      return await ownDataDir(dataDir, ownPort, releaseLock, options.maxConnections ?? 8);
    }
    if (!options.mustOwn && (await socketAnswers(socketPath))) {
      return { socketDir: dataDir, port: SHARED_PORT, owner: false, stop: async () => {} };
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

async function ownDataDir(
  dataDir: string,
  port: number,
  releaseLock: () => Promise<void>,
  maxConnections: number,
): Promise<EmbeddedServer> {
  const socketPath = join(dataDir, socketName(port));
  let db: PGlite | undefined;
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
    db = await PGlite.create({ dataDir: pgdata }).catch((error: unknown) => {
      throw error instanceof Error ? incompleteFolderHint(pgdata, error) : error;
    });
    const server = new PGLiteSocketServer({ db, path: socketPath, maxConnections });
    await server.start();
    const opened = db;
    return {
      socketDir: dataDir,
      port,
      owner: true,
      async stop() {
        await server.stop();
        await opened.close();
        await rm(socketPath, { force: true });
        await releaseLock();
      },
    };
  } catch (error) {
    await db?.close().catch(() => {});
    await releaseLock();
    // PGlite's file system errors are not Errors (`{ name: 'ErrnoError', errno }`): a message
    // of `undefined` would reach the person.
    if (error instanceof Error) throw error;
    throw pgliteOpenError(join(dataDir, 'pgdata'), error);
  }
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
  const fresh = await PGlite.create({ dataDir: await ownerOnlyFolder(partial) });
  await fresh.close();
  // Over the empty pgdata (rename replaces an empty folder).
  await rename(partial, pgdata);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** PGlite's own words when a folder it takes for a database is not one, with what to do. */
function incompleteFolderHint(pgdata: string, error: Error): Error {
  return new Error(
    `PGlite could not open ${pgdata}: ${error.message}. If an earlier first start was stopped while it made the database, the folder is incomplete: move it away (any data in it stays there) and start again.`,
    { cause: error },
  );
}

/** PGlite's file system errors carry WASI's errno numbers, not Node's codes: the ones a person can act on. */
const WASI_ERRNO: Readonly<Record<number, string>> = {
  2: 'permission denied (EACCES)',
  19: 'the disk quota is used up (EDQUOT)',
  51: 'no space left on the device (ENOSPC)',
  63: 'operation not permitted (EPERM)',
  69: 'the file system is read-only (EROFS)',
};

/** What a person reads when PGlite could not open its directory. */
export function pgliteOpenError(directory: string, error: unknown): Error {
  const errno = (error as { errno?: unknown } | null)?.errno;
  const known = typeof errno === 'number' ? WASI_ERRNO[errno] : undefined;
  const message = known
    ? `PGlite could not open ${directory}: ${known}.`
    : `PGlite could not open ${directory} (${JSON.stringify(error)}): it must be a database directory PGlite made, or not exist yet.`;
  return new Error(message, { cause: error });
}

/** `folder`, made if missing, readable by its owner only; an error naming it when it is another user's. */
async function ownerOnlyFolder(folder: string): Promise<string> {
  try {
    await mkdir(folder, { recursive: true, mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    throw new Error(
      `PGlite could not open ${folder}: it is a file, not a folder; it must be a database directory PGlite made, or not exist yet.`,
    );
  }
  try {
    await chmod(folder, 0o700);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
    throw new Error(
      `${folder} belongs to another user, and its database must be readable by its owner only: run as that user, or give this one a DATA_DIR of its own.`,
    );
  }
  return folder;
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
