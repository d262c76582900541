import type { TestProject } from "vitest/node";
import { ensureMariaDbInstalled, startMariaDb } from "./support/mariadb.js";

/** Starts one MariaDB server for the whole run; tests reach it through `inject('mysqlUrl')`. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await ensureMariaDbInstalled();
  const mariadb = await startMariaDb();
  project.provide("mysqlUrl", mariadb.url);
  return async () => {
    await mariadb.stop();
  };
}
