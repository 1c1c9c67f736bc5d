import { randomBytes } from 'node:crypto';
import { link, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

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
 * On Linux, also undefined for a process that started after the file was last written: the
 * pid is another process's now (after a reboot, pids are handed out again from the start),
 * and a lock naming it would otherwise be held forever.
 */
export async function livePidIn(path: string): Promise<number | undefined> {
  const pid = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
  if (!(Number.isInteger(pid) && pid > 0 && processIsAlive(pid))) return undefined;
  const [startedAt, written] = await Promise.all([processStartedAt(pid), stat(path).catch(() => undefined)]);
  if (startedAt !== undefined && written !== undefined && startedAt > written.mtimeMs + START_TIME_SLACK_MS) {
    return undefined;
  }
  return pid;
}

/** Boot time is whole seconds and drifts with the clock's corrections. */
const START_TIME_SLACK_MS = 5_000;

/** When a process started (ms since the epoch), from /proc; undefined where there is none. */
async function processStartedAt(pid: number): Promise<number | undefined> {
  try {
    const [processStat, systemStat] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile('/proc/stat', 'utf8'),
    ]);
    // Field 22, starttime, in clock ticks since boot; counted after the command name, which is
    // in parentheses and may hold spaces (the first field after it is field 3).
    const ticks = Number(processStat.slice(processStat.lastIndexOf(')') + 2).split(' ')[19]);
    const bootSeconds = Number(/^btime (\d+)$/m.exec(systemStat)?.[1]);
    // USER_HZ is 100 on every Linux Node runs on.
    return Number.isFinite(ticks) && Number.isFinite(bootSeconds) ? bootSeconds * 1000 + ticks * 10 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Creates `path` holding this process's id, atomically: the id is written to a file of its own
 * first, which is then hard-linked to `path` (fails with EEXIST when `path` exists). A lock file
 * is never seen empty, half written, or by two creators. Returns the file's inode, or undefined
 * when `path` exists.
 */
async function linkPidFile(path: string): Promise<number | undefined> {
  const draft = `${path}.${process.pid}.${randomBytes(6).toString('hex')}`;
  await writeFile(draft, String(process.pid), { mode: 0o600, flag: 'wx' });
  try {
    await link(draft, path);
    return (await stat(draft)).ino;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw error;
  } finally {
    await rm(draft, { force: true });
  }
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
  const taken = (inode: number) => {
    held.add(key);
    return async () => {
      held.delete(key);
      // Still ours: not taken over meanwhile by someone who found this process gone.
      const current = await stat(lockPath).catch(() => undefined);
      if (current?.ino === inode) await rm(lockPath, { force: true });
    };
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    const inode = await linkPidFile(lockPath);
    if (inode !== undefined) return taken(inode);
    if (await heldByTheLiving(lockPath, key)) return undefined;
    // Stale: taken over by one process at a time.
    if ((await linkPidFile(takeoverPath)) === undefined) {
      // Another process is taking it over now (or died doing so, a moment's work: then its
      // takeover file is stale too).
      if ((await livePidIn(takeoverPath)) !== undefined) return undefined;
      await rm(takeoverPath, { force: true });
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
      await rm(takeoverPath, { force: true });
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
    // Let go between the two looks: try again at once.
    if (holder === undefined) continue;
    if (Date.now() >= deadline) {
      throw new Error(`Timed out waiting for ${lockPath}, held by process ${holder}.`);
    }
    if (!reportedWait) options.onWait?.(holder);
    reportedWait = true;
    await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 500));
  }
}
