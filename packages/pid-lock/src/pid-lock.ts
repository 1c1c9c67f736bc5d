import { open, readFile, rm } from 'node:fs/promises';
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
 */
export async function livePidIn(path: string): Promise<number | undefined> {
  const pid = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
  return Number.isInteger(pid) && pid > 0 && processIsAlive(pid) ? pid : undefined;
}

/**
 * Takes the lock file now if nobody alive holds it: creates it exclusively (O_EXCL, mode 600)
 * with this process's id. A lock whose holder no longer runs (a crash, kill -9) is stale and
 * taken over, and so is one naming this very process that this process never took: a container
 * runs its server as pid 1 every time, so a killed one leaves "1", which is alive again at once.
 * Returns the release function, or undefined when a live process holds the lock.
 */
export async function tryPidLock(lockPath: string): Promise<(() => Promise<void>) | undefined> {
  const key = resolve(lockPath);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      held.add(key);
      return async () => {
        held.delete(key);
        await rm(lockPath, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = await livePidIn(lockPath);
    if (holder !== undefined && (holder !== process.pid || held.has(key))) return undefined;
    await rm(lockPath, { force: true });
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
