/**
 * The embedded database's folder, made owner-only, and PGlite's errors about it in words a
 * person can act on: shared by the main thread (embedded.ts) and the worker that opens PGlite
 * (embedded-host.ts), and the slots they share. No PGlite here: the main thread never loads it.
 */
import { access, chmod, mkdir } from 'node:fs/promises';

/** The slots of a serving worker's `activity` (embedded-host.ts's `HostData`). */
export const ACTIVITY = { statementSince: 0, heldIdleSince: 1, slots: 2 } as const;

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** PGlite's own words when a folder it takes for a database is not one, with what to do. */
export function incompleteFolderHint(pgdata: string, error: Error): Error {
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
export async function ownerOnlyFolder(folder: string): Promise<string> {
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
