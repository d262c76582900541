import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/**
 * A database driver package (mysql2, better-sqlite3), loaded the first time a store of its kind is
 * opened rather than when storage/ is imported: a process loads the driver it uses and not the
 * other one (mysql2 alone is ~2.5 MB of heap and ~10 MB of RSS an idle SQLite server would carry).
 * Both are CommonJS packages, so `require` loads them synchronously and dialect creation stays
 * synchronous; require caches, so later calls cost a map lookup. test/operations/memory.test.ts
 * checks which of them a start loads.
 */
export function loadDriver<T>(name: "mysql2" | "better-sqlite3"): T {
  return require(name) as T;
}
