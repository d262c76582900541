import { Code, ConnectError } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { type Connection, createConnection } from "mysql2/promise";
import { afterEach, describe, expect, it } from "vitest";
import { freshMysqlDatabase, selected } from "../support/dialects.js";
import { connectPeer, GrpcJsClient } from "../support/grpc.js";
import { within } from "../support/process.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { waitUntil } from "../support/sse.js";

/**
 * Connections running a statement on the id reservation row (waiting for its lock), longest first.
 * (The processlist, not innodb_trx: that one is a cache refreshed only when idle for 0.1 s.)
 */
async function lockWaits(admin: Connection): Promise<number[]> {
  const [rows] = await admin.query(
    "SELECT id FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND command = 'Query' AND info LIKE '%event_sequence%' ORDER BY time DESC, id",
  );
  return (rows as { id: number }[]).map((r) => Number(r.id));
}

describe.runIf(selected("mysql"))("a group commit whose connection is lost (MariaDB)", () => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("answers all 16 appends of the group on every transport and loses nothing acknowledged", async () => {
    const dbUrl = await freshMysqlDatabase();
    // A long --db-timeout: this test is about the lost connection, not the time bound.
    const t: TestServer = await startTestServer(dbUrl, { "db-timeout": "60" });
    cleanups.push(() => t.close());
    const connect = (): Promise<Connection> => createConnection(dbUrl);
    const [admin, first, second] = await Promise.all([connect(), connect(), connect()]);
    cleanups.push(() => Promise.all([admin, first, second].map((c) => c.end().catch(() => {}))));
    const grpcJs = new GrpcJsClient(t.server.grpcPort, true);
    const web = connectPeer("grpc-web (HTTP/1.1)", t);
    const connectH1 = connectPeer("connect (HTTP/1.1)", t);
    cleanups.push(() => {
      grpcJs.close();
      web.close();
      connectH1.close();
    });
    const post = (subject: string) =>
      fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ source: "g", type: "t", subject }),
      });

    // The id reservation row is held, so a commit waits for it in its first statement.
    await first.query("START TRANSACTION");
    await first.query("SELECT * FROM event_sequence FOR UPDATE");
    const plug = post("plug");
    await waitUntil(
      async () => (await lockWaits(admin)).length === 1,
      "the plug's commit to wait for the lock",
    );
    // 16 appends queue behind the plug's commit: the next group, all of them.
    const rest = async (i: number): Promise<string> => {
      const res = await post(`g/rest/${i}`);
      if (res.status === 200) return "ok";
      return `${res.status} retry-after ${res.headers.get("retry-after")}`;
    };
    const grpcCall = async (i: number): Promise<string> => {
      try {
        await grpcJs.unary("CreateEvent", { source: "g", type: "t", subject: `g/grpc/${i}` });
        return "ok";
      } catch (error) {
        return `grpc ${(error as grpc.ServiceError).code}`;
      }
    };
    const connectCall = async (peer: typeof web, name: string, i: number): Promise<string> => {
      try {
        await peer.client.createEvent({ source: "g", type: "t", subject: `g/${name}/${i}` });
        return "ok";
      } catch (error) {
        return `connect ${Code[ConnectError.from(error).code]}`;
      }
    };
    const group = [
      ...[0, 1, 2, 3].map(rest),
      ...[0, 1, 2, 3].map(grpcCall),
      ...[0, 1, 2, 3].map((i) => connectCall(web, "web", i)),
      ...[0, 1, 2, 3].map((i) => connectCall(connectH1, "connect", i)),
    ];
    await waitUntil(() => t.server.inFlight === 17, "the 16 appends to be in flight behind the plug");
    // A second holder queues for the lock before the group's commit asks for it, so the group
    // finds the row held again once the plug has committed.
    const relock = second
      .query("START TRANSACTION")
      .then(() => second.query("SELECT * FROM event_sequence FOR UPDATE"));
    await waitUntil(async () => (await lockWaits(admin)).length === 2, "the second holder to queue");
    await first.query("COMMIT");
    const plugged = await plug;
    expect(plugged.status).toBe(200);
    const plugId = ((await plugged.json()) as { id: number }).id;
    await relock;
    let writer = 0;
    await waitUntil(async () => {
      const waits = await lockWaits(admin);
      writer = waits[0] ?? 0;
      return waits.length === 1;
    }, "the group's commit to wait for the lock");

    // The writer's connection drops in the middle of the group's transaction.
    await admin.query(`KILL CONNECTION ${writer}`);
    await second.query("ROLLBACK");
    const outcomes = await within(Promise.all(group), 20_000, "an answer for every append of the group");
    expect(outcomes).toEqual([
      ...Array(4).fill("503 retry-after 1"),
      ...Array(4).fill("grpc 14"),
      ...Array(8).fill("connect Unavailable"),
    ]);

    // Nothing acknowledged is lost, and the server appends again once the pause is over.
    await waitUntil(async () => (await post("after")).status === 200, "an append to succeed again");
    const page = (await (await fetch(`${t.url}/events?limit=100`)).json()) as {
      events: { id: number; subject: string }[];
    };
    expect(page.events.map((e) => e.subject)).toEqual(["plug", "after"]);
    expect(page.events[0]?.id).toBe(plugId);
  });
});
