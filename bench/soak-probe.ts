// Loaded into the soak's gateway with `node --import` (bench/soak.ts): what only the process itself
// can see. After each full (mark-compact) collection, the heap still used is the live data: what a
// leak in JavaScript would move, whatever V8 chooses to keep committed around it. Written every
// SOAK_PROBE_MS to the file SOAK_PROBE names; the soak reads it with each sample.
import { writeFileSync } from 'node:fs';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import v8 from 'node:v8';

const file = process.env.SOAK_PROBE;
if (file !== undefined && file !== '') {
  let liveBytes = 0;
  let majorGcs = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if ((e as { detail?: { kind?: number } }).detail?.kind !== constants.NODE_PERFORMANCE_GC_MAJOR) continue;
      majorGcs++;
      // Read in the observer's callback, just after the collection: little allocated since.
      liveBytes = v8.getHeapStatistics().used_heap_size;
    }
  }).observe({ entryTypes: ['gc'] });
  const write = () => {
    const h = v8.getHeapStatistics();
    writeFileSync(
      file,
      JSON.stringify({ liveBytes, majorGcs, physicalBytes: h.total_physical_size, mallocedBytes: h.malloced_memory }),
    );
  };
  setInterval(write, Number(process.env.SOAK_PROBE_MS ?? 5000)).unref();
}
