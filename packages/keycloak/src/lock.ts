import { open, readFile, rm } from 'node:fs/promises';

/**
 * A lock file holding the owner's pid, for work in the shared cache that two processes must
 * not do at once (unpacking the distribution, Keycloak's one-off build step). A lock whose
 * holder no longer runs is stale (a crash or kill -9) and is taken over.
 */
export async function acquireLock(
  lockPath: string,
  options: { timeoutMs: number; onWait?: (holderPid: number) => void },
): Promise<() => Promise<void>> {
  const deadline = Date.now() + options.timeoutMs;
  let reportedWait = false;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(lockPath, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
    if (!(Number.isInteger(holder) && holder > 0 && processIsAlive(holder))) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new Error(`Timed out waiting for ${lockPath}, held by process ${holder}.`);
    }
    if (!reportedWait) options.onWait?.(holder);
    reportedWait = true;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
