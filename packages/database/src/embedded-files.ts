/**
 * The embedded database's folder, made owner-only, and PGlite's errors about it in words a
 * person can act on: shared by the main thread (embedded.ts) and the worker that opens PGlite
 * (embedded-host.ts), and the slots they share. No PGlite here: the main thread never loads it.
 */
import { access, chmod, lstat, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** The slots of a serving worker's `activity` (embedded-host.ts's `HostData`). */
export const ACTIVITY = { statementSince: 0, heldIdleSince: 1, slots: 2 } as const;

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/**
 * PGlite's own words when it could not open a folder at a first open, with what to do: files of
 * another user (chown them back: moving the folder away would start an empty database), a folder
 * without `PG_VERSION` that is not a database (move it away), else PGlite's words alone.
 */
export async function firstOpenError(
  pgdata: string,
  error: Error,
  uid: number | undefined = process.getuid?.(),
): Promise<Error> {
  const foreign = await filesOfAnotherUser(pgdata, uid);
  if (foreign) {
    const user = process.env.USER ?? String(uid);
    return new Error(
      `PGlite could not open ${pgdata}: ${error.message}. ${foreign.count} of its files belong to another user (uid ${foreign.owner}; ${foreign.example}), written by a command run as that user (sudo, a container's root). The data is there: give the files back with \`chown -R ${user} ${pgdata}\` (as root) and start again.`,
      { cause: error },
    );
  }
  if (await exists(join(pgdata, 'PG_VERSION'))) {
    return new Error(`PGlite could not open ${pgdata}: ${error.message}.`, { cause: error });
  }
  return new Error(
    `PGlite could not open ${pgdata}: ${error.message}. It is not a database PGlite made (no PG_VERSION): move it away (anything in it stays there) and start again.`,
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
  // PostgreSQL's rule: the database's files have one owner, the process that runs it. Root's
  // chmod succeeds on anyone's folder, so ownership is asked, not inferred from a failed chmod:
  // one `sudo pnpm keys create` wrote files its owner could then not open.
  const me = process.getuid?.();
  const owner = (await lstat(folder)).uid;
  if (me !== undefined && owner !== me) {
    throw new Error(
      `${folder} belongs to another user (uid ${owner}; this process runs as uid ${me}): run as that user, or give this one a DATA_DIR of its own.`,
    );
  }
  await chmod(folder, 0o700);
  return folder;
}

/**
 * The first file under `folder` that belongs to another user than `uid`, and how many do: a
 * command run as another user (sudo) writes files the owner can then not open, and PGlite only
 * says `Aborted()`. Undefined when all are `uid`'s, or on a system without uids.
 */
export async function filesOfAnotherUser(
  folder: string,
  uid: number | undefined = process.getuid?.(),
): Promise<{ count: number; example: string; owner: number } | undefined> {
  if (uid === undefined) return undefined;
  let found: { count: number; example: string; owner: number } | undefined;
  const walk = async (path: string): Promise<void> => {
    const entries = await readdir(path, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      const child = join(path, entry.name);
      const owner = (await lstat(child).catch(() => undefined))?.uid;
      if (owner !== undefined && owner !== uid) {
        found = found ? { ...found, count: found.count + 1 } : { count: 1, example: child, owner };
      }
      if (entry.isDirectory()) await walk(child);
    }
  };
  await walk(folder);
  return found;
}
