#!/usr/bin/env node
// `npm run build`'s second step: bundles the command-line program (dist/cli.js, which tsc just
// wrote, and everything it imports) into dist/bin/, the `eventsdb` binary and `npm start`.
//
// Why: a start from dist/ loads some 630 ES and CommonJS modules one file at a time (kysely alone
// is 262), and Node keeps per-module records, source text and compiled code for each. The same
// code in a few chunks holds ~9 MiB less at idle (README, Measured: idle memory). Every dynamic
// import stays a chunk of its own (splitting), so what a start does not load (Connect, protobuf and
// the descriptors until the first RPC; the client commands; the other store's driver) still is
// not loaded. Identifiers are not minified: stack traces keep their function names, and the
// source maps (chained through tsc's) lead back to src/ with `node --enable-source-maps`.
//
// dist/bin/meta.json is esbuild's metafile: which inputs each chunk holds. The tests' module
// recorder (test/fixtures/loaded-packages.mjs) reads it to tell which packages a start loaded.
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const outdir = path.join(root, "dist", "bin");

/**
 * Loaded from node_modules at run time, not bundled: the native SQLite addon and the MySQL driver
 * (each store loads its own on demand, src/storage/driver.ts), pino-pretty and the thread-stream
 * that pino's transports would start (a worker thread needs a file of its own), and what Fastify
 * requires only when it is used: the schema compilers (ajv, fast-json-stringify; no route has a
 * schema, src/app.ts), light-my-request (inject) and abstract-logging (a server without a logger).
 * Bundled, their code would sit in the server's memory unused.
 */
const EXTERNAL = [
  "better-sqlite3",
  "mysql2",
  "pino-pretty",
  "thread-stream",
  "@fastify/ajv-compiler",
  "@fastify/fast-json-stringify-compiler",
  "light-my-request",
  "abstract-logging",
];

rmSync(outdir, { recursive: true, force: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: ["dist/cli.js"],
  outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20.19",
  external: EXTERNAL,
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: "linked",
  metafile: true,
  logLevel: "warning",
  // The CommonJS packages inside (fastify, pino, prom-client…) call require(); an ES module has
  // none, so each chunk makes one for its own location.
  banner: {
    js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);",
  },
});
writeFileSync(path.join(outdir, "meta.json"), JSON.stringify(result.metafile));
chmodSync(path.join(outdir, "cli.js"), 0o755);
