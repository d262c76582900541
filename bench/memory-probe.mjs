// Preloaded into the idle bench's server child (`node --expose-gc --import bench/memory-probe.mjs
// dist/cli.js serve`): on SIGUSR2 it prints one line `memory-probe {…}` to stderr with the process's
// memory as it is, then after a full GC. The bench reads it; the server is otherwise unchanged.
import { writeSync } from "node:fs";

const reading = () => {
  const { rss, heapTotal, heapUsed, external } = process.memoryUsage();
  return { rss, heapTotal, heapUsed, external };
};

process.on("SIGUSR2", () => {
  const before = reading();
  globalThis.gc?.();
  writeSync(2, `memory-probe ${JSON.stringify({ before, afterGc: reading() })}\n`);
});
