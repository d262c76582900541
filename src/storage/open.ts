import type { StoreConfig } from "../config.js";
import type { StorageDialect } from "./dialect.js";
import { createMysqlDialect } from "./mysql.js";
import { createSqliteDialect } from "./sqlite.js";

/** The dialect a store configuration names; `timeoutMs` bounds each database call (--db-timeout). */
export function openDialect(store: StoreConfig, timeoutMs: number): StorageDialect {
  return store.kind === "sqlite"
    ? createSqliteDialect(store.path, timeoutMs)
    : createMysqlDialect(store.url, store.poolSize, timeoutMs);
}
