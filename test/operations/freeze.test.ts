import { spawn } from "node:child_process";
import { Code, ConnectError } from "@connectrpc/connect";
import { createConnection } from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMysqlDialect, POOL_QUEUE_LIMIT } from "../../src/storage/mysql.js";
import { DIALECTS, selected } from "../support/dialects.js";
import { connectPeer, GrpcJsClient } from "../support/grpc.js";
import { type MariaDb, startMariaDb } from "../support/mariadb.js";
import { readAllEvents, within } from "../support/process.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

/** Far beyond --db-timeout 1 (and the 1 s readiness bound); a call still open then hung. */
const ANSWER_WITHIN_MS = 8_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function post(t: TestServer, subject: string): Promise<Response> {
  return fetch(`${t.url}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ source: "freeze", type: "t", subject }),
    signal: AbortSignal.timeout(ANSWER_WITHIN_MS),
  });
}

/** "503 retry-after 1" or "200 id N" */
async function outcome(res: Promise<Response>): Promise<string> {
  const r = await res;
  if (r.status === 200) return `200 id ${((await r.json()) as { id: number }).id}`;
  return `${r.status} retry-after ${r.headers.get("retry-after")}`;
}

describe.runIf(selected("mysql"))("a frozen MariaDB (SIGSTOP)", () => {
  let db: MariaDb;
  let t: TestServer;
  beforeAll(async () => {
    db = await startMariaDb();
    t = await startTestServer(db.url, { "db-timeout": "1", "store-poll-ms": "20", "db-pool-size": "2" });
  });
  afterAll(async () => {
    await t?.close();
    await db?.stop();
  });

  /** Statements the server has run so far (its global Questions counter). */
  const questions = async (): Promise<number> => {
    const connection = await createConnection(db.url);
    try {
      const [rows] = await connection.query("SHOW GLOBAL STATUS LIKE 'Questions'");
      return Number((rows as { Value: string }[])[0]?.Value);
    } finally {
      await connection.end();
    }
  };

  it("answers appends, reads and /readyz with 503 while frozen, runs no pile of polls after, and keeps everything acknowledged", async () => {
    const grpcJs = new GrpcJsClient(t.server.grpcPort, true);
    const web = connectPeer("grpc-web (HTTP/1.1)", t);
    const acked: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await post(t, `f/${i}`);
      expect(res.status).toBe(200);
      acked.push(((await res.json()) as { id: number }).id);
    }
    // A live stream: the server polls for other processes' commits while it is open.
    const live = await openStream(`${t.url}/events/stream?subject=f&recursive=true`);
    try {
      await waitUntil(() => live.parser.events.length === 3, "the stored events on the stream");

      process.kill(db.pid, "SIGSTOP");
      try {
        const appends = await within(
          Promise.all([
            outcome(post(t, "f/frozen/0")),
            outcome(post(t, "f/frozen/1")),
            grpcJs
              .failure("CreateEvent", { source: "freeze", type: "t", subject: "f/frozen/grpc" })
              .then((f) => `grpc ${f.code}`),
            web.client.createEvent({ source: "freeze", type: "t", subject: "f/frozen/web" }).then(
              () => "ok",
              (error: unknown) => `connect ${Code[ConnectError.from(error).code]}`,
            ),
          ]),
          ANSWER_WITHIN_MS,
          "every append answered while the store is frozen",
        );
        expect(appends).toEqual(["503 retry-after 1", "503 retry-after 1", "grpc 14", "connect Unavailable"]);
        const ready = await fetch(`${t.url}/readyz`, { signal: AbortSignal.timeout(ANSWER_WITHIN_MS) });
        expect(ready.status).toBe(503);
        expect(await ready.json()).toMatchObject({
          status: "unavailable",
          checks: { store: { status: "unavailable", error: "EVENTSDB_DB_TIMEOUT" } },
        });
        // More reads than the pool has connections: those waiting for one are bounded too.
        const reads = await Promise.all(
          Array.from({ length: 6 }, () =>
            fetch(`${t.url}/events/${acked[0]}`, { signal: AbortSignal.timeout(ANSWER_WITHIN_MS) }).then(
              (r) => r.status,
            ),
          ),
        );
        expect(reads).toEqual(Array(6).fill(503));
        // Long enough for a hundred poll ticks to come and go.
        await sleep(2_000);
      } finally {
        process.kill(db.pid, "SIGCONT");
      }
      const before = await questions();
      await sleep(1_000);
      // This connection's own two statements, a few polls (every 20 ms), a handful of calls given
      // up during the freeze that the server runs now; not a queue of polls (one per tick).
      const after = (await questions()) - before;
      expect(after).toBeLessThan(100);

      // The server works again, and nothing acknowledged is missing.
      await waitUntil(async () => (await post(t, "f/after")).status === 200, "an append to succeed again");
      const stored = (await readAllEvents(t.url)).map((e) => e.id);
      for (const id of acked) expect(stored).toContain(id);
      await waitUntil(
        () => live.parser.ids().at(-1) === stored.at(-1),
        "the live stream to reach the newest event",
      );
      expect(live.parser.ids()).toEqual(stored);
      expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
    } finally {
      live.close();
      grpcJs.close();
      web.close();
    }
  });
});

describe.runIf(selected("mysql"))("the MySQL pool while the database is frozen", () => {
  let db: MariaDb;
  beforeAll(async () => {
    db = await startMariaDb();
  });
  afterAll(() => db?.stop());

  it("refuses callers beyond POOL_QUEUE_LIMIT at once and times out the others", async () => {
    const dialect = createMysqlDialect(db.url, 1, 1000);
    const query = () =>
      dialect.db
        .selectNoFrom((eb) => eb.lit(1).as("one"))
        .execute()
        .then(
          () => "ok",
          (error: Error) => (error as { code?: string }).code ?? error.message,
        );
    try {
      expect(await query()).toBe("ok");
      process.kill(db.pid, "SIGSTOP");
      try {
        const outcomes = await within(
          Promise.all(Array.from({ length: POOL_QUEUE_LIMIT + 2 }, query)),
          ANSWER_WITHIN_MS,
          "an answer for every query",
        );
        const counts = new Map<string, number>();
        for (const o of outcomes) counts.set(o, (counts.get(o) ?? 0) + 1);
        // One query holds the only connection and POOL_QUEUE_LIMIT wait for it: all time out.
        // The one beyond the queue is refused at once.
        expect(Object.fromEntries(counts)).toEqual({
          EVENTSDB_DB_TIMEOUT: POOL_QUEUE_LIMIT + 1,
          "Queue limit reached.": 1,
        });
      } finally {
        process.kill(db.pid, "SIGCONT");
      }
      await waitUntil(async () => (await query()) === "ok", "a query to work again");
    } finally {
      await dialect.close();
    }
  });
});

describe.each(DIALECTS.filter((d) => d.name === "sqlite"))("a locked SQLite file", (dialect) => {
  let t: TestServer;
  let url: string;
  beforeAll(async () => {
    url = await dialect.url();
    t = await startTestServer(url, { "db-timeout": "1" });
  });
  afterAll(() => t?.close());

  it("answers appends 503 after --db-timeout while another process holds the write lock, then appends again", async () => {
    const file = url.slice("sqlite:".length);
    // Another process takes the write lock for 3 s (better-sqlite3 blocks: it cannot be this one).
    const holder = spawn(
      process.execPath,
      [
        "-e",
        `const db = new (require("better-sqlite3"))(${JSON.stringify(file)});
         db.exec("BEGIN IMMEDIATE"); console.log("locked");
         setTimeout(() => { db.exec("COMMIT"); db.close(); }, 3000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<void>((resolve) => holder.once("exit", () => resolve()));
    try {
      await new Promise<void>((resolve) => holder.stdout?.once("data", () => resolve()));
      expect(await outcome(post(t, "locked"))).toBe("503 retry-after 1");
    } finally {
      await exited;
    }
    await waitUntil(
      async () => (await post(t, "unlocked")).status === 200,
      "an append once the lock is gone",
    );
    expect((await readAllEvents(t.url)).map((e) => e.subject)).toEqual(["unlocked"]);
  });
});
