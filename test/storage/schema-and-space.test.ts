import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { sql } from "kysely";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../../src/gen/grpc/health/v1/health_pb.js";
import { loadMigrations } from "../../src/storage/migrate.js";
import { DIALECTS, selected } from "../support/dialects.js";
import { type MariaDb, startMariaDb } from "../support/mariadb.js";
import { cleanEnv, removeTempDirs, runCli } from "../support/process.js";
import { openTestStore, startTestServer, type TestServer } from "../support/server.js";

/** Runs the built CLI against `databaseUrl`. */
function cli(args: string[], databaseUrl: string) {
  return runCli(args, { env: cleanEnv({ DATABASE_URL: databaseUrl }) });
}

afterAll(removeTempDirs);

describe.each(DIALECTS)("a schema newer than the code on $name", (dialect) => {
  it("stops the server and `eventsdb migrate` with exit 2 and one line naming both versions", async () => {
    const url = await dialect.url();
    const { store } = await openTestStore(url);
    await store.dialect.db
      .insertInto("eventsdb_migrations")
      .values({ version: 999, name: "999_from_the_future", applied_at: new Date().toISOString() })
      .execute();
    await store.close();
    const newest = (await loadMigrations(dialect.name)).at(-1);
    const message = `the database schema is at version 999 (999_from_the_future), newer than this eventsdb knows (version ${newest?.version}, ${newest?.name})`;

    await expect(startTestServer(url)).rejects.toThrow(message);
    for (const command of ["migrate", "serve"]) {
      const result = await cli([command, "--rest-port", "0", "--grpc-port", "0", "--host", "127.0.0.1"], url);
      expect(result.code, command).toBe(2);
      const lines = result.stderr.trim().split("\n");
      expect(lines, command).toHaveLength(1);
      expect(lines[0], command).toContain(`eventsdb: ${message}`);
    }
  });
});

/** Posts events of `bytes` until the store refuses one; returns that answer. */
async function fill(t: TestServer, bytes: number): Promise<Response> {
  const data = Buffer.alloc(bytes, 7).toString("base64");
  for (let i = 0; i < 1000; i++) {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "full", type: "t", subject: `full/${i}`, data }),
    });
    if (res.status !== 200) return res;
  }
  throw new Error("the store never filled up");
}

async function readiness(t: TestServer): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${t.url}/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("a database out of space", () => {
  const servers: TestServer[] = [];
  let mariadb: MariaDb | undefined;
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((t) => t.close()));
    await mariadb?.stop();
    mariadb = undefined;
  });

  const expectReportedFull = async (t: TestServer, code: string) => {
    const refused = await fill(t, 256 * 1024);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("1");
    const ready = await readiness(t);
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({
      status: "unavailable",
      checks: { store: { status: "ok" }, writer: { status: "unavailable", error: code } },
    });
    const health = createClient(Health, createGrpcTransport({ baseUrl: t.grpcUrl }));
    expect((await health.check({ service: "" })).status).toBe(HealthCheckResponse_ServingStatus.NOT_SERVING);
  };

  it.runIf(selected("sqlite"))(
    "SQLite (max_page_count reached): appends answer 503, /readyz reports the writer until a commit succeeds",
    async () => {
      const t = await startTestServer(
        await (DIALECTS.find((d) => d.name === "sqlite") as (typeof DIALECTS)[number]).url(),
      );
      servers.push(t);
      const { db } = t.server.eventLog.dialect;
      // max_page_count is per connection: the server's own (better-sqlite3 has one).
      const pages = Number(
        (await sql<{ page_count: number }>`PRAGMA page_count`.execute(db)).rows[0]?.page_count,
      );
      await sql.raw(`PRAGMA max_page_count = ${pages + 200}`).execute(db);
      await expectReportedFull(t, "SQLITE_FULL");

      await sql.raw("PRAGMA max_page_count = 1073741823").execute(db);
      const res = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ source: "full", type: "t", subject: "after" }),
      });
      expect(res.status).toBe(200);
      expect((await readiness(t)).status).toBe(200);
    },
  );

  it.runIf(selected("mysql"))(
    "MariaDB (a full InnoDB system tablespace): appends answer 503, /readyz reports the writer",
    async () => {
      // ibdata1 is 12 MiB after mariadb-install-db: fixed at that size, with every table in it.
      mariadb = await startMariaDb({
        extraArgs: ["--innodb-data-file-path=ibdata1:12M", "--innodb-file-per-table=0"],
      });
      const t = await startTestServer(mariadb.url);
      servers.push(t);
      await expectReportedFull(t, "ER_RECORD_FILE_FULL");
      // Reads still work.
      expect((await fetch(`${t.url}/events?limit=1`)).status).toBe(200);
    },
  );
});
