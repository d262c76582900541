import type { StoreConfig } from "../config.js";
import type { StorageDialect } from "./dialect.js";
import { createMysqlDialect } from "./mysql.js";
import { createSqliteDialect } from "./sqlite.js";

/** The dialect a store configuration names. */
export function openDialect(store: StoreConfig): StorageDialect {
  return store.kind === "sqlite"
    ? createSqliteDialect(store.path)
    : createMysqlDialect(store.url, store.poolSize);
}
