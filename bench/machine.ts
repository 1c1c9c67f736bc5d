/**
 * What the machine's cores did while a bench window ran, from /proc: busy, idle, and stolen (time
 * the hypervisor gave another guest). On a shared virtual machine the stolen share is the noise
 * the load average does not show: a window with a fifth of its time stolen measures the host,
 * not the server.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICK_MS = 1000 / (Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100);

export interface MachineCpu {
  /** Every core's time in user, system and interrupt work, in ms. */
  busyMs: number;
  idleMs: number;
  stealMs: number;
  /** PostgreSQL's processes (every backend and helper), in ms. */
  postgresMs: number;
}

export function machineCpu(): MachineCpu {
  const [user, nice, system, idle, iowait, irq, softirq, steal] = (
    /^cpu\s+(.*)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1] ?? ''
  )
    .split(/\s+/)
    .map(Number);
  return {
    busyMs: ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0)) * TICK_MS,
    idleMs: ((idle ?? 0) + (iowait ?? 0)) * TICK_MS,
    stealMs: (steal ?? 0) * TICK_MS,
    postgresMs: postgresCpuMs(),
  };
}

function postgresCpuMs(): number {
  let total = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'postgres') continue;
      // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th,
      // cutime and cstime (children that exited) the 14th and 15th. A backend that exits (a pool
      // closing an idle connection) leaves its time to the postmaster's cutime and cstime, so the
      // sum never drops when one goes.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      total += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * TICK_MS;
    } catch {
      // ended meanwhile
    }
  }
  return total;
}

/** Between two readings: the ms of each, and the idle and stolen shares of the window in %. */
export function machineWindow(before: MachineCpu, after: MachineCpu) {
  const busyMs = after.busyMs - before.busyMs;
  const idleMs = after.idleMs - before.idleMs;
  const stealMs = after.stealMs - before.stealMs;
  const windowMs = busyMs + idleMs + stealMs || 1;
  return {
    busyMs,
    postgresMs: after.postgresMs - before.postgresMs,
    idlePercent: Math.round((idleMs / windowMs) * 100),
    stolenPercent: Math.round((stealMs / windowMs) * 100),
  };
}

/**
 * Waits until the cores were at least `idlePercent` idle over one `windowMs` window (or
 * `maxMs` passed): what the previous row left behind (processes exiting, PostgreSQL's
 * autovacuum and checkpoints after a write load) then stays out of a measurement that lasts a
 * fraction of a second, such as a cold start. Returns how long it waited and the last window's
 * idle share, for the bench to print beside the figure.
 */
export async function settle({ idlePercent = 90, windowMs = 500, maxMs = 15_000 } = {}): Promise<{
  waitedMs: number;
  idlePercent: number;
}> {
  const began = performance.now();
  for (;;) {
    const before = machineCpu();
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const idle = machineWindow(before, machineCpu()).idlePercent;
    const waitedMs = Math.round(performance.now() - began);
    if (idle >= idlePercent || waitedMs >= maxMs) return { waitedMs, idlePercent: idle };
  }
}
