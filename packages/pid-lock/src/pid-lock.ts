import { randomBytes } from 'node:crypto';
import { link, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

/** The locks this process holds: its own pid in any other lock file was left by an earlier process. */
const held = new Set<string>();

/**
 * Whether a process with this id runs on this machine. Signal 0 checks without signalling;
 * EPERM means it runs under another user (still alive), ESRCH that there is none.
 */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The process id a pid file or lock file names, when that process still runs; undefined for
 * a missing or unreadable file, a file without a positive integer, or a process that is gone.
 * A lock file also names when its process started (`<pid> <start>`, in clock ticks since boot,
 * from /proc on Linux): a process with that pid that started at another time is another
 * process (a pid handed out again, after a reboot or in a new container), so the lock is stale.
 * Ticks since boot, not a wall-clock time, so that no clock step makes a live holder look new.
 */
export async function livePidIn(path: string): Promise<number | undefined> {
  const content = await readFile(path, 'utf8').catch(() => '');
  const match = /^\s*(\d+)(?:\s+(\d+|-))?(?:\s+(\d+:\d+))?/.exec(content);
  const pid = Number(match?.[1]);
  if (!(Number.isSafeInteger(pid) && pid > 0 && processIsAlive(pid))) return undefined;
  const recordedStart = match?.[2];
  if (recordedStart !== undefined && recordedStart !== '-') {
    const start = await processStartTicks(pid);
    if (start !== undefined && start !== recordedStart) return undefined;
  }
  // A lock file copied with its folder (`cp -a` of a data directory while its owner ran) names
  // the original folder: the copy's holder is nobody.
  const recordedFolder = match?.[3];
  if (recordedFolder !== undefined && recordedFolder !== (await folderIdentity(dirname(path)))) return undefined;
  return pid;
}

/** A folder's device and inode: the same folder under any name (a symlink, a move), another for a copy. */
async function folderIdentity(folder: string): Promise<string | undefined> {
  const found = await stat(folder, { bigint: true }).catch(() => undefined);
  return found && `${found.dev}:${found.ino}`;
}

/**
 * When a process started, in clock ticks since boot (field 22 of /proc/<pid>/stat), as text;
 * undefined where there is no /proc. Counted after the command name, which is in parentheses
 * and may hold spaces (the first field after it is field 3).
 */
export async function processStartTicks(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const ticks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
    return ticks && /^\d+$/.test(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a lock file of this process holds: its pid, when it started (`-` where that is not known)
 * and the identity of the folder the lock is in (`<device>:<inode>`).
 */
async function ownLockContent(path: string): Promise<string> {
  const start = await processStartTicks(process.pid);
  const folder = await folderIdentity(dirname(path));
  return [process.pid, start ?? '-', ...(folder ? [folder] : [])].join(' ');
}

/**
 * Creates `path` holding this process's id, atomically: the id is written to a file of its own
 * first, which is then hard-linked to `path` (fails with EEXIST when `path` exists). A lock file
 * is never seen empty, half written, or by two creators. On a file system without hard links
 * (FAT, some shared folders) it is created exclusively and written at once instead. Returns the
 * file's inode, or undefined when `path` exists.
 */
async function linkPidFile(path: string): Promise<number | undefined> {
  const content = await ownLockContent(path);
  const draft = `${path}.${process.pid}.${randomBytes(6).toString('hex')}`;
  await writeFile(draft, content, { mode: 0o600, flag: 'wx' });
  try {
    await link(draft, path);
    return (await stat(draft)).ino;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return undefined;
    if (!NO_HARD_LINKS.has(code ?? '')) throw error;
  } finally {
    await rm(draft, { force: true });
  }
  try {
    await writeFile(path, content, { mode: 0o600, flag: 'wx' });
    return (await stat(path)).ino;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw error;
  }
}

/** A draft's name after `<lock>.`: `<pid>.<12 hex>`, or `takeover.<pid>.<12 hex>` for the takeover lock's. */
const DRAFT_NAME = /^(?:takeover\.)?(\d+)\.[0-9a-f]{12}$/;

/**
 * Removes the drafts of this lock that a process left when it died between writing one and
 * removing it (a kill -9 or a power cut in that moment): a draft whose named process no longer
 * runs, or one that names a live pid which started at another time (a container's pid 1 again).
 * A draft of a live process is kept, even while still empty: it is being written now.
 */
async function removeDraftsOfTheGone(lockPath: string): Promise<void> {
  const directory = dirname(lockPath);
  const prefix = `${basename(lockPath)}.`;
  const names = await readdir(directory).catch(() => [] as string[]);
  for (const name of names) {
    const pid = name.startsWith(prefix) ? DRAFT_NAME.exec(name.slice(prefix.length))?.[1] : undefined;
    if (pid === undefined) continue;
    const draft = join(directory, name);
    const content = await readFile(draft, 'utf8').catch(() => '');
    const stale = !processIsAlive(Number(pid)) || (content !== '' && (await livePidIn(draft)) === undefined);
    if (stale) await rm(draft, { force: true });
  }
}

/** What link() answers where a file system has no hard links. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** Removes `path` if it is still the file with this inode (not one another process put there since). */
async function removeIfStill(path: string, inode: number): Promise<void> {
  const current = await stat(path).catch(() => undefined);
  if (current?.ino === inode) await rm(path, { force: true });
}

/** Whether the lock at `path` is held by a live process other than an earlier one of this pid. */
async function heldByTheLiving(path: string, key: string): Promise<boolean> {
  const holder = await livePidIn(path);
  return holder !== undefined && (holder !== process.pid || held.has(key));
}

/**
 * Takes the lock file now if nobody alive holds it: creates it atomically (mode 600) with this
 * process's id. A lock whose holder no longer runs (a crash, kill -9) is stale and taken over,
 * and so is one naming this very process that this process never took: a container runs its
 * server as pid 1 every time, so a killed one leaves "1", which is alive again at once.
 * Two processes finding the same stale lock take turns through `<lock>.takeover` (itself taken
 * atomically), so that neither removes the lock the other has just taken. Returns the release
 * function (which removes the lock only while it is still this one), or undefined when a live
 * process holds the lock.
 */
export async function tryPidLock(lockPath: string): Promise<(() => Promise<void>) | undefined> {
  const key = resolve(lockPath);
  const takeoverPath = `${lockPath}.takeover`;
  const taken = async (inode: number) => {
    held.add(key);
    await removeDraftsOfTheGone(lockPath);
    return async () => {
      held.delete(key);
      // Still ours: not taken over meanwhile by someone who found this process gone.
      await removeIfStill(lockPath, inode);
    };
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    const inode = await linkPidFile(lockPath);
    if (inode !== undefined) return taken(inode);
    if (await heldByTheLiving(lockPath, key)) return undefined;
    // Stale: taken over by one process at a time.
    const turn = await linkPidFile(takeoverPath);
    if (turn === undefined) {
      // Another process is taking it over now (or died doing so, a moment's work: then its
      // takeover file is stale too, and removed only if no new taker replaced it meanwhile).
      const other = await stat(takeoverPath).catch(() => undefined);
      if (!other || (await livePidIn(takeoverPath)) !== undefined) return undefined;
      await removeIfStill(takeoverPath, other.ino);
      continue;
    }
    try {
      // Looked at again: only a takeover removes a lock, and this one is the only takeover now.
      if (await heldByTheLiving(lockPath, key)) return undefined;
      await rm(lockPath, { force: true });
      const ours = await linkPidFile(lockPath);
      // Undefined: a process that found no lock at all took it meanwhile, which is its right.
      return ours === undefined ? undefined : taken(ours);
    } finally {
      await removeIfStill(takeoverPath, turn);
    }
  }
  return undefined;
}

export interface AcquirePidLockOptions {
  /** How long to wait for a live holder before failing with an error that names it. */
  timeoutMs: number;
  /** Called once, with the holder's pid, when this call has to wait. */
  onWait?: (holderPid: number) => void;
  /** Between two looks at a held lock. Default 500 ms. */
  pollMs?: number;
}

/**
 * `tryPidLock`, waiting for a live holder to let go: for work two processes must not do at
 * once (unpacking into a shared cache, a one-off build step).
 */
export async function acquirePidLock(lockPath: string, options: AcquirePidLockOptions): Promise<() => Promise<void>> {
  const deadline = Date.now() + options.timeoutMs;
  let reportedWait = false;
  for (;;) {
    const release = await tryPidLock(lockPath);
    if (release) return release;
    const holder = await livePidIn(lockPath);
    // Let go between the two looks, or being taken over by another process: look again shortly.
    if (holder === undefined) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      continue;
    }
    if (Date.now() >= deadline) {
      throw new Error(`Timed out waiting for ${lockPath}, held by process ${holder}.`);
    }
    if (!reportedWait) options.onWait?.(holder);
    reportedWait = true;
    await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 500));
  }
}
