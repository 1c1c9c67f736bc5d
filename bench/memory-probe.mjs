/**
 * The probe `bench/memory.ts` loads into each server it measures (`node --import`): it samples
 * `process.memoryUsage()` every 20 ms and, on SIGUSR2, writes to PROBE_OUT what it has: now, the
 * highest of each figure since the last report, V8's heap spaces, when the process first opened
 * a socket (the database connect: the cold start's phases), and since the last report the
 * collections' main-thread time by kind, the bytes allocated on the V8 heap and the process's
 * CPU time. It only reads; the server does not know it is there.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import v8 from 'node:v8';

const out = process.env.PROBE_OUT;
// Since the last report: the collections V8 ran (main-thread time by kind), the bytes allocated
// on the V8 heap (used size before each collection minus after the one before), and the CPU
// time of the process (every thread). Per request, these are steadier than requests/s.
let gcProfiler = new v8.GCProfiler();
gcProfiler.start();
let usedSince = v8.getHeapStatistics().used_heap_size;
let cpuSince = process.cpuUsage();
const mb = (n) => Math.round((n / 1048576) * 10) / 10;
let peak = {};
const sample = () => {
  const now = process.memoryUsage();
  for (const [k, v] of Object.entries(now)) peak[k] = Math.max(peak[k] ?? 0, v);
  return now;
};
setInterval(sample, 20).unref();
const marks = { probe: performance.now() };
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  marks.firstSocket ??= performance.now();
  return connect.apply(this, args);
};
// The profiler keeps a record of every collection in native memory until it is stopped: over a
// long window at thousands of requests/s that is tens of MB, on the very RSS being measured. So
// it is read and restarted every second, and the figures summed here.
let gcMs = {};
let allocated = 0;
const rotate = () => {
  const { statistics } = gcProfiler.stop();
  gcProfiler = new v8.GCProfiler();
  gcProfiler.start();
  let used = usedSince;
  for (const gc of statistics) {
    gcMs[gc.gcType] = (gcMs[gc.gcType] ?? 0) + gc.cost / 1000;
    allocated += gc.beforeGC.heapStatistics.usedHeapSize - used;
    used = gc.afterGC.heapStatistics.usedHeapSize;
  }
  const now = v8.getHeapStatistics().used_heap_size;
  allocated += now - used;
  usedSince = now;
};
setInterval(rotate, 1000).unref();
const collections = () => {
  rotate();
  const report = { gcMs, allocatedMb: allocated / 1048576 };
  gcMs = {};
  allocated = 0;
  return report;
};
process.on('SIGUSR2', () => {
  const now = sample();
  const spaces = Object.fromEntries(
    v8.getHeapSpaceStatistics().map((s) => [s.space_name, `${mb(s.space_used_size)}/${mb(s.space_size)}`]),
  );
  const timing = performance.nodeTiming;
  writeFileSync(
    out,
    JSON.stringify({
      now: Object.fromEntries(Object.entries(now).map(([k, v]) => [k, mb(v)])),
      peak: Object.fromEntries(Object.entries(peak).map(([k, v]) => [k, mb(v)])),
      spaces,
      marks: { ...marks, bootstrapComplete: timing.bootstrapComplete, nodeStart: timing.nodeStart },
      ...collections(),
      cpuMs: (({ user, system }) => (user + system) / 1000)(process.cpuUsage(cpuSince)),
    }),
  );
  peak = {};
  cpuSince = process.cpuUsage();
});
