import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { sql } from "kysely";
import { afterAll, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { loadConfig } from "../../src/config.js";
import { EventsDB } from "../../src/gen/grpc/eventsdb_pb.js";
import { exactCollation, migrate } from "../../src/storage/migrate.js";
import { openDialect } from "../../src/storage/open.js";
import { DIALECTS } from "../support/dialects.js";
import { openConnectStream } from "../support/grpc.js";
import { serversPerTest, type TestServer } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

/**
 * Text compares exactly on both stores: MariaDB's and MySQL's utf8mb4_bin is PAD SPACE, under which
 * 'dup' = 'dup ' and `subject = 'a'` also matches 'a '. Ids, subjects, types and scopes that differ
 * only in trailing spaces are different, on every path.
 */

const ADMIN = "admin-token-exact-0123";
const A_READER = "a-reader-token-exact-456";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-exact-"));
const authFile = path.join(dir, "tokens.yaml");
fs.writeFileSync(
  authFile,
  `tokens:
  - name: admin
    sha256: ${tokenDigest(ADMIN).toString("hex")}
    read: ["*"]
    write: ["*"]
  - name: a-reader
    sha256: ${tokenDigest(A_READER).toString("hex")}
    read: [a]
`,
);
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const SUBJECTS = ["a", "a ", "a/x", "a /x", "a  "];

describe.each(DIALECTS)("exact text comparison on $name", (dialect) => {
  const { start, onCleanup } = serversPerTest(() => dialect.url());
  const open = () => start({ "auth-file": authFile });

  const as = (token: string) => ({ authorization: `Bearer ${token}` });
  const post = async (t: TestServer, body: unknown, contentType = "application/json") => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": contentType, ...as(ADMIN) },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    return JSON.parse(text) as { id?: number; ids?: number[] };
  };
  /** One event per subject (and the type `t ` on the first), in SUBJECTS order: ids 1…5. */
  const seed = async (t: TestServer) => {
    const events = SUBJECTS.map((subject, i) => ({
      source: "s",
      type: i === 1 ? "t " : "t",
      subject,
      data: "",
    }));
    const { ids } = await post(t, events);
    expect(ids).toEqual([1, 2, 3, 4, 5]);
  };
  const subjectsOf = async (t: TestServer, query: string, token = ADMIN) => {
    const res = await fetch(`${t.url}/events?${query}`, { headers: as(token) });
    const body = (await res.json()) as { events: { subject: string }[] };
    expect(res.status, JSON.stringify(body)).toBe(200);
    return body.events.map((e) => e.subject);
  };

  it("CloudEvents ids that differ in trailing spaces are different events; a retry of either is idempotent", async () => {
    const t = await open();
    const ce = (id: string) => ({ specversion: "1.0", id, source: "s", type: "t", subject: "d" });
    const first = await post(t, ce("dup"), "application/cloudevents+json");
    const second = await post(t, ce("dup "), "application/cloudevents+json");
    expect(second.id).not.toBe(first.id);
    expect((await post(t, ce("dup "), "application/cloudevents+json")).id).toBe(second.id);
    expect((await post(t, ce("dup"), "application/cloudevents+json")).id).toBe(first.id);
    // In one batch too.
    const batch = await post(
      t,
      [ce("b"), ce("b "), ce("b  "), ce("b ")],
      "application/cloudevents-batch+json",
    );
    expect(new Set(batch.ids).size).toBe(3);
    expect(batch.ids?.[3]).toBe(batch.ids?.[1]);
    // And a source that differs in a trailing space is another key.
    const other = await post(t, { ...ce("dup"), source: "s " }, "application/cloudevents+json");
    expect(other.id).not.toBe(first.id);
    const res = await fetch(`${t.url}/events/${second.id}`, {
      headers: { accept: "application/cloudevents+json", ...as(ADMIN) },
    });
    expect(((await res.json()) as { id: string }).id).toBe("dup ");
  });

  it("subject and type filters, pages and the subject list compare exactly", async () => {
    const t = await open();
    await seed(t);
    expect(await subjectsOf(t, "subject=a")).toEqual(["a"]);
    expect(await subjectsOf(t, "subject=a%20")).toEqual(["a "]);
    expect(await subjectsOf(t, "subject=a&recursive=true")).toEqual(["a", "a/x"]);
    expect(await subjectsOf(t, "subject=a%20&recursive=true")).toEqual(["a ", "a /x"]);
    expect(await subjectsOf(t, "subject=a&subject=a/x")).toEqual(["a", "a/x"]);
    expect(await subjectsOf(t, "subject=a&type=t")).toEqual(["a"]);
    expect(await subjectsOf(t, "type=t%20")).toEqual(["a "]);
    const list = await fetch(`${t.url}/subjects`, { headers: as(ADMIN) });
    expect(await list.json()).toEqual([...SUBJECTS].sort());
    const prefixed = await fetch(`${t.url}/subjects?prefix=a%20`, { headers: as(ADMIN) });
    expect(await prefixed.json()).toEqual(["a ", "a  ", "a /x"]);
    // Delete takes exactly the subject named.
    const del = await fetch(`${t.url}/events?subject=a`, { method: "DELETE", headers: as(ADMIN) });
    expect(await del.json()).toEqual({ deleted: 1 });
    expect(await subjectsOf(t, "")).toEqual(SUBJECTS.slice(1));
  });

  it("a token scoped to `a` never reads `a ` or `a  `: REST page and by id, SSE catch-up, gRPC page and stream", async () => {
    const t = await open();
    await seed(t);
    expect(await subjectsOf(t, "subject=a", A_READER)).toEqual(["a"]);
    expect(await subjectsOf(t, "subject=a&recursive=true", A_READER)).toEqual(["a", "a/x"]);
    expect(await subjectsOf(t, "", A_READER)).toEqual(["a", "a/x"]);
    for (const id of [2, 4, 5]) {
      const res = await fetch(`${t.url}/events/${id}`, { headers: as(A_READER) });
      expect(res.status, `event ${id}`).toBeGreaterThanOrEqual(400);
    }
    const denied = await fetch(`${t.url}/events?subject=a%20`, { headers: as(A_READER) });
    expect(denied.status).toBe(403);

    // SSE catch-up, then a live event on each subject: only `a`'s arrive.
    const sse = await openStream(`${t.url}/events/stream?subject=a`, as(A_READER));
    onCleanup(() => sse.close());
    const sseAll = await openStream(`${t.url}/events/stream?subject=a&recursive=true`, as(A_READER));
    onCleanup(() => sseAll.close());

    const sessions = new Http2SessionManager(t.grpcUrl);
    onCleanup(() => sessions.abort());
    const client = createClient(
      EventsDB,
      createGrpcTransport({ baseUrl: t.grpcUrl, sessionManager: sessions }),
    );
    const options = { headers: as(A_READER) };
    const page = await client.getHistoricEventsFromSubject({ subject: "a" }, options);
    expect(page.events.map((e) => e.subject)).toEqual(["a"]);
    const recursive = await client.getHistoricEventsFromSubject({ subject: "a", recursive: true }, options);
    expect(recursive.events.map((e) => e.subject)).toEqual(["a", "a/x"]);
    const stream = openConnectStream((signal) =>
      client.streamEventsFromSubject({ subject: "a" }, { ...options, signal }),
    );
    onCleanup(() => stream.close());

    await waitUntil(() => sse.parser.events.length >= 1 && stream.ids().length >= 1, "catch-up");
    const { ids } = await post(
      t,
      SUBJECTS.map((subject) => ({ source: "s", type: "t", subject })),
    );
    const [liveA, , liveAx] = ids as number[];
    await waitUntil(() => sse.parser.ids().includes(liveA as number), "live SSE event");
    await waitUntil(() => sseAll.parser.ids().includes(liveAx as number), "live recursive SSE event");
    await waitUntil(() => stream.ids().includes(liveA as number), "live gRPC event");
    // A marker after everything: whatever was going to arrive has arrived.
    const marker = (await post(t, { source: "s", type: "t", subject: "a" })).id as number;
    await waitUntil(() => sse.parser.ids().includes(marker) && stream.ids().includes(marker), "marker");
    await waitUntil(() => sseAll.parser.ids().includes(marker), "marker (recursive)");
    expect(sse.parser.ids()).toEqual([1, liveA, marker]);
    expect(sseAll.parser.ids()).toEqual([1, 3, liveA, liveAx, marker]);
    expect(stream.ids()).toEqual([1, liveA, marker]);
  });

  if (dialect.name === "mysql") {
    it("migration 004 makes an existing database exact, keeping its rows", async () => {
      const url = await dialect.url();
      const config = loadConfig({}, { "database-url": url });
      const db = openDialect(config.store, config.dbTimeoutMs);
      try {
        await migrate(db);
        // The database as the previous version left it: 001's PAD SPACE columns, 004 not applied.
        await sql`ALTER TABLE events MODIFY ce_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
          MODIFY subject VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL`.execute(db.db);
        await sql`DELETE FROM eventsdb_migrations WHERE version = 4`.execute(db.db);
      } finally {
        await db.close();
      }
      const t = await start({ "database-url": url, "auth-file": authFile });
      const ce = (id: string, subject: string) => ({
        specversion: "1.0",
        id,
        source: "s",
        type: "t",
        subject,
      });
      const first = await post(t, ce("dup", "a"), "application/cloudevents+json");
      // Before the migration the collation is PAD SPACE: the server started above migrated it.
      const second = await post(t, ce("dup ", "a "), "application/cloudevents+json");
      expect(second.id).toBe((first.id as number) + 1);
      expect(await subjectsOf(t, "subject=a")).toEqual(["a"]);

      const check = openDialect(config.store, config.dbTimeoutMs);
      try {
        const columns = await sql<{ name: string; collation: string }>`
          SELECT COLUMN_NAME AS name, COLLATION_NAME AS collation FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('events', 'eventsdb_sessions')
            AND COLUMN_NAME IN ('source', 'type', 'subject', 'ce_id', 'datacontenttype', 'dataschema', 'token_name')
          ORDER BY COLUMN_NAME
        `.execute(check.db);
        expect(columns.rows.map((c) => c.name)).toEqual([
          "ce_id",
          "datacontenttype",
          "dataschema",
          "source",
          "subject",
          "token_name",
          "type",
        ]);
        for (const column of columns.rows) expect(column.collation).toMatch(/^utf8mb4_(nopad_bin|0900_bin)$/);
      } finally {
        await check.close();
      }
    });
  }
});

describe("the exact collation per server flavour", () => {
  it("is utf8mb4_nopad_bin on MariaDB, utf8mb4_0900_bin on MySQL 8, and an error naming both elsewhere", () => {
    expect(exactCollation(["utf8mb4_nopad_bin"])).toBe("utf8mb4_nopad_bin");
    expect(exactCollation(["utf8mb4_0900_bin", "utf8mb4_nopad_bin"])).toBe("utf8mb4_nopad_bin");
    expect(exactCollation(["utf8mb4_0900_bin"])).toBe("utf8mb4_0900_bin");
    expect(() => exactCollation([])).toThrow(/utf8mb4_nopad_bin.*utf8mb4_0900_bin/);
  });
});
