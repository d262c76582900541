import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { type MariaDb, startMariaDb } from "./support/mariadb.js";

/**
 * The full run's setup (vitest.config.ts; the unit tier has none). One MariaDB serves the whole
 * run, but it starts only when a test first asks for it (`sharedMysqlUrl()` in
 * support/dialects.ts): a run whose tests need no MySQL — one file, or EVENTSDB_TEST_DIALECTS=sqlite —
 * never starts it. Test files run in worker processes, so they ask this process over loopback HTTP;
 * every worker gets the same server, and a failed start is answered to all of them alike.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // Every temporary file of the run (test stores, auth files, the MariaDB, servers' own) goes
  // under one directory, removed at the end: workers and the processes they start inherit TMPDIR.
  const runDir = mkdtempSync(join(tmpdir(), "eventsdb-run-"));
  process.env.TMPDIR = runDir;
  let mariadb: Promise<MariaDb> | undefined;
  const broker = createServer((request, response) => {
    if (request.url !== "/mysql") {
      response.writeHead(404).end();
      return;
    }
    mariadb ??= startMariaDb();
    mariadb.then(
      (server) => response.writeHead(200, { "content-type": "text/plain" }).end(server.url),
      (error: unknown) =>
        response
          .writeHead(500, { "content-type": "text/plain" })
          .end(error instanceof Error ? error.message : String(error)),
    );
  });
  await new Promise<void>((resolve, reject) => {
    broker.once("error", reject);
    broker.listen(0, "127.0.0.1", resolve);
  });
  const { port } = broker.address() as AddressInfo;
  project.provide("mariadbBroker", `http://127.0.0.1:${port}/mysql`);
  return async () => {
    broker.closeAllConnections();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
    await (await mariadb?.catch(() => undefined))?.stop();
    rmSync(runDir, { recursive: true, force: true });
  };
}
