// `node --expose-gc bench/module-cost.mjs <specifier>`: prints `{"rss":…,"heap":…}`, the bytes of
// RSS and of V8 heap (after a full GC) that importing the module adds to a bare node process. Bare
// specifiers resolve from this repository's node_modules; files are given as file: URLs.
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};
const specifier = process.argv[2];
if (specifier === undefined) throw new Error("usage: module-cost.mjs <specifier>");
await settle();
const before = process.memoryUsage();
await import(specifier);
await settle();
const after = process.memoryUsage();
process.stdout.write(
  `${JSON.stringify({ rss: after.rss - before.rss, heap: after.heapUsed - before.heapUsed, base: before.rss })}\n`,
);
// Whatever the module started (pools, timers) must not keep the process.
process.exit(0);
