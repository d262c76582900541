import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { DIALECTS } from "../support/dialects.js";
import {
  CONNECT_KINDS,
  type ConnectPeer,
  connectPeer,
  FAST_PATH_MODES,
  GrpcJsClient,
  openConnectStream,
  type ProtoCreateEventRequest,
  type ProtoStreamReply,
  type ProtoStreamRequest,
} from "../support/grpc.js";
import { appendConcurrently } from "../support/load.js";
import { metric } from "../support/metrics.js";
import { serversPerTest, type TestServer } from "../support/server.js";
import { waitUntil } from "../support/sse.js";

/** RFC 3339 in UTC as the server writes it: seconds, then up to 6 fraction digits, then Z. */
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

/** The code a connect-node call fails with; fails the test when it succeeds or is no ConnectError. */
async function connectFailure(call: Promise<unknown>): Promise<Code> {
  try {
    await call;
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return (error as ConnectError).code;
  }
  throw new Error("the call succeeded unexpectedly");
}

function largestMessage(replies: readonly { events: readonly unknown[] }[]): number {
  return Math.max(0, ...replies.map((reply) => reply.events.length));
}

/** Every test on both stores, with the unary fast path and without: the answers must not differ. */
const SERVERS = DIALECTS.flatMap((dialect) => FAST_PATH_MODES.map((mode) => ({ dialect, ...mode })));

describe.each(SERVERS)("gRPC on $dialect.name, fast path $fastPath", ({ dialect, flags }) => {
  const { start, onCleanup } = serversPerTest(() => dialect.url(), flags);

  const grpcJs = (port: number, ownConnection = false) => {
    const client = new GrpcJsClient(port, ownConnection);
    onCleanup(() => client.close());
    return client;
  };
  const peer = (kind: (typeof CONNECT_KINDS)[number], t: TestServer): ConnectPeer => {
    const p = connectPeer(kind, t);
    onCleanup(p.close);
    return p;
  };
  const publish = async (t: TestServer, subject: string, extra: Record<string, unknown> = {}) => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "rest", type: "t", subject, ...extra }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { id: number }).id;
  };
  const gauge = (t: TestServer) => metric(t.url, "app_active_event_streams");

  describe.each([
    { port: "REST", of: (t: TestServer) => t.server.restPort },
    { port: "gRPC", of: (t: TestServer) => t.server.grpcPort },
  ])("@grpc/grpc-js on the $port port", ({ of }) => {
    const open = async (flags: Record<string, string> = {}) => {
      const t = await start(flags);
      return { t, c: grpcJs(of(t)) };
    };

    it("CreateEvent stores an event with the simple fields of the Go client; GetEventByID reads it", async () => {
      const { t, c } = await open();
      const data = Buffer.from('{"total":10}');
      const before = Date.now();
      const { id } = await c.unary("CreateEvent", {
        source: "go-client",
        type: "order.created",
        subject: "orders/42",
        data,
      });
      expect(id).toMatch(/^[1-9]\d*$/);
      const event = await c.unary("GetEventByID", { id });
      expect(event).toEqual({
        id,
        source: "go-client",
        type: "order.created",
        subject: "orders/42",
        time: expect.stringMatching(RFC3339_UTC),
        data,
        ce_id: "",
        datacontenttype: "",
        dataschema: "",
        extensions: {},
        // The chain fields (new field numbers): a server without a signing key signs nothing.
        hash: expect.any(Buffer),
        prev_hash: expect.any(Buffer),
        signature: Buffer.alloc(0),
      });
      expect(event.hash).toHaveLength(32);
      expect(event.prev_hash).toHaveLength(32);
      expect(Math.abs(Date.parse(event.time) - before)).toBeLessThan(60_000);
      // Without a CloudEvents id every append is a new event.
      const second = await c.unary("CreateEvent", { source: "go-client", type: "t", subject: "orders/42" });
      expect(Number(second.id)).toBeGreaterThan(Number(id));
      expect((await c.unary("GetEventByID", { id: second.id })).data).toEqual(Buffer.alloc(0));
      // The same event through REST.
      const rest = (await (await fetch(`${t.url}/events/get?id=${id}`)).json()) as Record<string, unknown>;
      expect(rest).toMatchObject({ id: Number(id), subject: "orders/42", data: data.toString("base64") });
    });

    it("CreateEvent with a CloudEvents id is idempotent and keeps every attribute", async () => {
      const { c } = await open();
      const request: ProtoCreateEventRequest = {
        source: "shop",
        type: "order.created",
        subject: "orders/43",
        id: "o-43",
        time: "2026-11-23T11:00:00.123456+01:00",
        datacontenttype: "application/json",
        dataschema: "https://example.com/schemas/order.json",
        extensions: {
          traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
          tenant: "acme",
        },
        data: Buffer.from('{"total":10}'),
      };
      const first = await c.unary("CreateEvent", request);
      const again = await c.unary("CreateEvent", request);
      expect(again.id).toBe(first.id);
      // A repeat inside one batch, and a retry of the stored one, answer the same id.
      const batch = await c.unary("CreateEvents", { events: [request, { ...request, id: "o-44" }, request] });
      expect(batch.ids[0]).toBe(first.id);
      expect(batch.ids[2]).toBe(first.id);
      expect(Number(batch.ids[1])).toBeGreaterThan(Number(first.id));
      // The same CloudEvents id from another source is another event.
      const other = await c.unary("CreateEvent", { ...request, source: "other-shop" });
      expect(other.id).not.toBe(first.id);

      const event = await c.unary("GetEventByID", { id: first.id });
      expect(event).toEqual({
        id: first.id,
        source: "shop",
        type: "order.created",
        subject: "orders/43",
        time: "2026-11-23T10:00:00.123456Z",
        data: request.data,
        ce_id: "o-43",
        datacontenttype: "application/json",
        dataschema: "https://example.com/schemas/order.json",
        extensions: request.extensions,
        hash: expect.any(Buffer),
        prev_hash: expect.any(Buffer),
        signature: Buffer.alloc(0),
      });
      expect(event.hash).toHaveLength(32);
      const page = await c.unary("GetHistoricEventsFromSubject", { subject: "orders/43" });
      expect(page.events.map((e) => e.ce_id)).toEqual(["o-43", "o-44", "o-43"]);
      expect(page.events.map((e) => e.source)).toEqual(["shop", "shop", "other-shop"]);
    });

    it("CreateEvents is atomic: ids in request order, or INVALID_ARGUMENT and nothing stored", async () => {
      const { c } = await open();
      const event = (subject: string): ProtoCreateEventRequest => ({ source: "b", type: "t", subject });
      const ok = await c.unary("CreateEvents", {
        events: [event("atomic/1"), event("atomic/2"), event("atomic/3")],
      });
      const ids = ok.ids.map(Number);
      expect(ids).toHaveLength(3);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(new Set(ids).size).toBe(3);

      for (const bad of [
        { source: "" },
        { time: "yesterday" },
        { extensions: { "Bad-Name": "x" } },
        { dataschema: "relative/path" },
      ]) {
        const failure = await c.failure("CreateEvents", {
          events: [event("atomic/4"), { ...event("atomic/5"), ...bad }, event("atomic/6")],
        });
        expect(failure.code, JSON.stringify(bad)).toBe(grpc.status.INVALID_ARGUMENT);
        expect(failure.details).toMatch(/event 1/);
      }
      const page = await c.unary("GetHistoricEventsFromSubject", { subject: "atomic", recursive: true });
      expect(page.events.map((e) => e.subject)).toEqual(["atomic/1", "atomic/2", "atomic/3"]);
      expect(page.events.map((e) => e.id)).toEqual(ok.ids);
    });

    it('CreateEvent(s) without a subject ("" = none): read back with "", only by all-subject reads and streams', async () => {
      const { t, c } = await open();
      const all = c.stream({ subject: "" });
      const some = c.stream({ subject: "x", recursive: true });
      onCleanup(() => {
        all.cancel();
        some.cancel();
      });
      const one = Number((await c.unary("CreateEvent", { source: "s", type: "t" })).id);
      const batch = (
        await c.unary("CreateEvents", {
          events: [
            { source: "s", type: "t", subject: "" },
            { source: "s", type: "t", subject: "x/1" },
          ],
        })
      ).ids.map(Number);
      const none = [one, batch[0] as number];
      expect((await c.unary("GetEventByID", { id: String(one) })).subject).toBe("");
      const rest = (await (await fetch(`${t.url}/events/${one}`)).json()) as Record<string, unknown>;
      expect(rest).not.toHaveProperty("subject");
      expect(
        (await c.unary("GetHistoricEventsFromSubject", { subject: "" })).events.map((e) => Number(e.id)),
      ).toEqual([...none, batch[1]]);
      expect(
        (await c.unary("GetHistoricEventsFromSubject", { subject: "x", recursive: true })).events.map((e) =>
          Number(e.id),
        ),
      ).toEqual([batch[1]]);
      expect((await c.unary("ListSubjects", { prefix: "" })).subjects).toEqual(["x/1"]);
      await waitUntil(() => all.ids().length === 3, "the all-subject stream");
      expect(all.ids()).toEqual([...none, batch[1]]);
      await waitUntil(() => some.ids().length === 1, "the subject stream");
      expect(some.ids()).toEqual([batch[1]]);
    });

    it("GetEventByID answers NOT_FOUND for a missing id", async () => {
      const { c } = await open();
      const { id } = await c.unary("CreateEvent", { source: "s", type: "t", subject: "x" });
      const missing = await c.failure("GetEventByID", { id: String(Number(id) + 1000) });
      expect(missing.code).toBe(grpc.status.NOT_FOUND);
      expect(missing.details).toMatch(/not found/);
    });

    it("answers INVALID_ARGUMENT for bad input, out-of-range field values included, and stores nothing", async () => {
      const { c } = await open();
      const valid = { source: "s", type: "t", subject: "bad" };
      const cases: [string, () => Promise<{ code: grpc.status }>][] = [
        ["empty source", () => c.failure("CreateEvent", { ...valid, source: "" })],
        ["empty type", () => c.failure("CreateEvent", { ...valid, type: "" })],
        ["bad time", () => c.failure("CreateEvent", { ...valid, time: "2026-13-01T00:00:00Z" })],
        ["time without zone", () => c.failure("CreateEvent", { ...valid, time: "2026-01-01T00:00:00" })],
        ["bad media type", () => c.failure("CreateEvent", { ...valid, datacontenttype: "json" })],
        ["reserved extension", () => c.failure("CreateEvent", { ...valid, extensions: { time: "x" } })],
        ["control character", () => c.failure("CreateEvent", { ...valid, subject: "a\nb" })],
        ["empty batch member", () => c.failure("CreateEvents", { events: [valid, {}] })],
        ["id -1", () => c.failure("GetEventByID", { id: "-1" })],
        ["id beyond 2^53", () => c.failure("GetEventByID", { id: "9223372036854775807" })],
        ["from_id -1", () => c.failure("GetHistoricEventsFromSubject", { subject: "bad", from_id: "-1" })],
        [
          "from_id beyond 2^53",
          () => c.failure("GetHistoricEventsFromSubject", { subject: "bad", from_id: "9007199254740993" }),
        ],
        ["limit 0", () => c.failure("GetHistoricEventsFromSubject", { subject: "bad", limit: 0 })],
        ["limit 1001", () => c.failure("GetHistoricEventsFromSubject", { subject: "bad", limit: 1001 })],
        ["limit -1", () => c.failure("GetHistoricEventsFromSubject", { subject: "bad", limit: -1 })],
        ["delete without subject", () => c.failure("DeleteFromSubject", { subject: "" })],
        ["delete from_id -1", () => c.failure("DeleteFromSubject", { subject: "bad", from_id: "-1" })],
      ];
      for (const [what, call] of cases) expect((await call()).code, what).toBe(grpc.status.INVALID_ARGUMENT);

      const stream = c.stream({ subject: "bad", from_id: "-1" });
      const status = await stream.ended;
      expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(stream.replies).toEqual([]);

      expect((await c.unary("ListSubjects", { prefix: "" })).subjects).toEqual([]);
    });

    it("GetHistoricEventsFromSubject pages by limit and from_id with has_more, and filters by recursion and type", async () => {
      const { c } = await open();
      const spec: [string, string][] = [
        ["h", "a"],
        ["h/1", "a"],
        ["h/1/x", "b"],
        ["h-archive", "a"],
        ["h/2", "a"],
        ["other", "a"],
      ];
      const { ids } = await c.unary("CreateEvents", {
        events: spec.map(([subject, type]) => ({ source: "hist", type, subject })),
      });
      const [h, h1, h1x, hArchive, h2, other] = ids as [string, string, string, string, string, string];
      const page = (request: ProtoStreamRequest) => c.unary("GetHistoricEventsFromSubject", request);
      const idsOf = (reply: ProtoStreamReply) => reply.events.map((e) => e.id);

      const exact = await page({ subject: "h" });
      expect(idsOf(exact)).toEqual([h]);
      expect(exact.has_more).toBe(false);
      expect(exact.events[0]).toEqual(await c.unary("GetEventByID", { id: h }));

      expect(idsOf(await page({ subject: "h", recursive: true }))).toEqual([h, h1, h1x, h2]);
      expect(idsOf(await page({ subject: "h", recursive: false }))).toEqual([h]);
      expect(idsOf(await page({ subject: "h", recursive: true, type: "b" }))).toEqual([h1x]);
      expect(idsOf(await page({ subject: "", type: "a" }))).toEqual([h, h1, hArchive, h2, other]);

      // next_from_id (field 3) is the cursor: the last id of the page, else the from_id given.
      const first = await page({ subject: "h", recursive: true, limit: 2 });
      expect(idsOf(first)).toEqual([h, h1]);
      expect(first.has_more).toBe(true);
      expect(first.next_from_id).toBe(h1);
      const second = await page({ subject: "h", recursive: true, limit: 2, from_id: first.next_from_id });
      expect(idsOf(second)).toEqual([h1x, h2]);
      expect(second.has_more).toBe(false);
      expect(second.next_from_id).toBe(h2);
      const third = await page({ subject: "h", recursive: true, limit: 2, from_id: h2 });
      expect(third).toEqual({ events: [], has_more: false, next_from_id: h2 });
      expect(await page({ subject: "nothing" })).toEqual({ events: [], has_more: false, next_from_id: "0" });
    });

    it("DeleteFromSubject deletes the subject (recursive: and below it) after from_id; ids are not reused", async () => {
      const { c } = await open();
      const { ids } = await c.unary("CreateEvents", {
        events: ["d", "d", "d/1", "d/1/x", "d-other", "e"].map((subject) => ({
          source: "del",
          type: "t",
          subject,
        })),
      });
      const [d0, , , , dOther, e] = ids as [string, string, string, string, string, string];
      expect(await c.unary("DeleteFromSubject", { subject: "d/1" })).toEqual({ deleted: "1" });
      expect(await c.unary("DeleteFromSubject", { subject: "d", recursive: true, from_id: d0 })).toEqual({
        deleted: "2",
      });
      expect(await c.unary("DeleteFromSubject", { subject: "e", type: "other" })).toEqual({ deleted: "0" });
      expect(await c.unary("DeleteFromSubject", { subject: "d" })).toEqual({ deleted: "1" });
      const left = await c.unary("GetHistoricEventsFromSubject", { subject: "" });
      expect(left.events.map((event) => event.id)).toEqual([dOther, e]);
      expect((await c.failure("GetEventByID", { id: d0 })).code).toBe(grpc.status.NOT_FOUND);
      const next = await c.unary("CreateEvent", { source: "del", type: "t", subject: "d" });
      expect(Number(next.id)).toBeGreaterThan(Number(e));
    });

    it("ListSubjects lists distinct subjects starting with the plain prefix, sorted", async () => {
      const { c } = await open();
      const subjects = ["a/2", "a/1", "a/1", "a%/x", "a_b", "ab", "b"];
      await c.unary("CreateEvents", {
        events: subjects.map((subject) => ({ source: "l", type: "t", subject })),
      });
      const list = async (prefix?: string) =>
        (await c.unary("ListSubjects", prefix === undefined ? {} : { prefix })).subjects;
      expect(await list("a/")).toEqual(["a/1", "a/2"]);
      expect(await list("a%")).toEqual(["a%/x"]);
      expect(await list("a_")).toEqual(["a_b"]);
      expect(await list("zzz")).toEqual([]);
      expect(await list()).toEqual([...new Set(subjects)].sort());
    });

    it("StreamEventsFromSubject sends catch-up, then live events, in order, never more than --stream-batch-size per message", async () => {
      const { t, c } = await open({ "stream-batch-size": "5" });
      const events = (n: number, subject: (i: number) => string) =>
        Array.from({ length: n }, (_, i) => ({
          source: "st",
          type: i % 2 === 0 ? "even" : "odd",
          subject: subject(i),
        }));
      const stored = (await c.unary("CreateEvents", { events: events(23, (i) => `st/${i}`) })).ids.map(
        Number,
      );
      await c.unary("CreateEvent", { source: "st", type: "t", subject: "st-not" });
      const stream = c.stream({ subject: "st", recursive: true });
      await waitUntil(() => stream.ids().length === 23, "the catch-up");
      expect(stream.ids()).toEqual(stored);

      const live: number[] = [];
      for (let i = 0; i < 3; i++)
        live.push(Number((await c.unary("CreateEvent", { source: "st", type: "t", subject: "st" })).id));
      // 17 events committed together: split into messages of at most 5.
      live.push(
        ...(await c.unary("CreateEvents", { events: events(17, (i) => `st/live/${i}`) })).ids.map(Number),
      );
      live.push(await publish(t, "st/rest"));
      await publish(t, "other");
      await waitUntil(() => stream.ids().length === 23 + 21, "the live events");
      expect(stream.ids()).toEqual([...stored, ...live]);
      for (const reply of stream.replies) {
        expect(reply.events.length).toBeGreaterThanOrEqual(1);
        expect(reply.events.length).toBeLessThanOrEqual(5);
      }
      expect(largestMessage(stream.replies)).toBe(5);
      const first = stream.replies[0]?.events[0];
      expect(first).toEqual(await c.unary("GetEventByID", { id: String(stored[0]) }));

      // from_id and type.
      const resumed = c.stream({ subject: "st", recursive: true, from_id: String(stored[20]), type: "even" });
      const evens = (
        await c.unary("GetHistoricEventsFromSubject", {
          subject: "st",
          recursive: true,
          type: "even",
          from_id: String(stored[20]),
          limit: 1000,
        })
      ).events.map((e) => Number(e.id));
      await waitUntil(() => resumed.ids().length === evens.length, "the resumed stream");
      expect(resumed.ids()).toEqual(evens);
      expect(largestMessage(resumed.replies)).toBeLessThanOrEqual(5);

      stream.cancel();
      resumed.cancel();
      expect((await stream.ended).code).toBe(grpc.status.CANCELLED);
      await waitUntil(async () => (await gauge(t)) === 0, "the streams to close");
    });

    it("frees the slot when the client cancels; beyond --max-total-clients answers RESOURCE_EXHAUSTED", async () => {
      const { t, c } = await open({ "max-total-clients": "2" });
      const one = c.stream({ subject: "cap" });
      const two = c.stream({ subject: "cap" });
      await waitUntil(async () => (await gauge(t)) === 2, "two open streams");
      const third = c.stream({ subject: "cap" });
      const refused = await third.ended;
      expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(refused.details).toMatch(/max-total-clients/);
      expect(third.replies).toEqual([]);
      expect(await gauge(t)).toBe(2);

      one.cancel();
      expect((await one.ended).code).toBe(grpc.status.CANCELLED);
      await waitUntil(async () => (await gauge(t)) === 1, "the slot to be freed");
      const again = c.stream({ subject: "cap" });
      await waitUntil(async () => (await gauge(t)) === 2, "the slot to be taken again");
      const id = await publish(t, "cap");
      await waitUntil(() => again.ids().length === 1 && two.ids().length === 1, "the event on both streams");
      expect(again.ids()).toEqual([id]);
      expect(one.ids()).toEqual([]);

      two.cancel();
      again.cancel();
      await waitUntil(async () => (await gauge(t)) === 0, "every slot to be freed");
    });
  });

  describe.each(CONNECT_KINDS)("@connectrpc/connect-node, %s", (kind) => {
    it("round-trips CreateEvent and GetEventByID, reads a server stream, and maps error codes", async () => {
      const t = await start({ "stream-batch-size": "5" });
      const { client } = peer(kind, t);
      const data = new TextEncoder().encode("hello");
      const { id } = await client.createEvent({
        source: "connect",
        type: "t",
        subject: "cn/1",
        data,
        id: "c-1",
        extensions: { tenant: "acme" },
      });
      expect(typeof id).toBe("bigint");
      const event = await client.getEventByID({ id });
      expect(event).toMatchObject({
        id,
        source: "connect",
        type: "t",
        subject: "cn/1",
        ceId: "c-1",
        extensions: { tenant: "acme" },
      });
      expect(event.time).toMatch(RFC3339_UTC);
      expect(Buffer.from(event.data)).toEqual(Buffer.from(data));
      expect(
        (await client.createEvent({ source: "connect", type: "t", subject: "cn/1", id: "c-1" })).id,
      ).toBe(id);

      const { ids } = await client.createEvents({
        events: Array.from({ length: 6 }, (_, i) => ({
          source: "connect",
          type: "t",
          subject: `cn/${i + 2}`,
        })),
      });
      const stored = [id, ...ids].map(Number);
      const stream = openConnectStream((signal) =>
        client.streamEventsFromSubject({ subject: "cn", recursive: true }, { signal }),
      );
      onCleanup(stream.close);
      await waitUntil(() => stream.ids().length === 7, "the catch-up");
      const live = (
        await client.createEvents({
          events: Array.from({ length: 8 }, () => ({ source: "connect", type: "t", subject: "cn" })),
        })
      ).ids.map(Number);
      await waitUntil(() => stream.ids().length === 15, "the live events");
      expect(stream.ids()).toEqual([...stored, ...live]);
      expect(largestMessage(stream.replies)).toBeLessThanOrEqual(5);
      await waitUntil(async () => (await gauge(t)) === 1, "the gauge");
      stream.close();
      await stream.ended;
      await waitUntil(async () => (await gauge(t)) === 0, "the stream to close");

      expect(await connectFailure(client.getEventByID({ id: 999_999n }))).toBe(Code.NotFound);
      expect(await connectFailure(client.createEvent({ source: "", type: "t", subject: "cn" }))).toBe(
        Code.InvalidArgument,
      );
      expect(
        await connectFailure(client.createEvent({ source: "s", type: "t", subject: "cn", time: "now" })),
      ).toBe(Code.InvalidArgument);
      expect(await connectFailure(client.getHistoricEventsFromSubject({ subject: "cn", fromId: -1n }))).toBe(
        Code.InvalidArgument,
      );
      const bad = openConnectStream((signal) =>
        client.streamEventsFromSubject({ subject: "cn", fromId: -1n }, { signal }),
      );
      onCleanup(bad.close);
      expect(await connectFailure(bad.ended)).toBe(Code.InvalidArgument);
      expect(bad.replies).toEqual([]);
    });

    it("GetHistoricEventsFromSubject's next_from_id pages through many events as REST's next_from_id does, cut by --client-buffer-bytes and by narrow read scopes", async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-cursor-"));
      onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
      const authFile = path.join(dir, "tokens.json");
      const tokens = { all: "cursor-all-token-0123", narrow: "cursor-narrow-token-4567" };
      fs.writeFileSync(
        authFile,
        JSON.stringify({
          tokens: [
            { name: "all", sha256: tokenDigest(tokens.all).toString("hex"), read: ["*"], write: ["*"] },
            { name: "narrow", sha256: tokenDigest(tokens.narrow).toString("hex"), read: ["pg/a"] },
          ],
        }),
      );
      const budget = 100_000;
      const t = await start({ "auth-file": authFile, "client-buffer-bytes": String(budget) });
      const { client } = peer(kind, t);
      // 300 events alternating pg/a and pg/b; every 12th carries 40 KB, so some pages are cut by
      // the byte budget before the limit; the last 20 are pg/b only (a narrow reader's last page
      // is empty and keeps the cursor where it was).
      const spec = Array.from({ length: 300 }, (_, i) => ({
        subject: i < 280 && i % 2 === 0 ? "pg/a" : "pg/b",
        size: i % 12 === 0 ? 40_000 : 10,
      }));
      const ids: number[] = [];
      for (let i = 0; i < spec.length; i += 100) {
        const res = await fetch(`${t.url}/events`, {
          method: "POST",
          headers: { authorization: `Bearer ${tokens.all}`, "content-type": "application/json" },
          body: JSON.stringify(
            spec.slice(i, i + 100).map(({ subject, size }) => ({
              source: "cursor",
              type: "t",
              subject,
              data: randomBytes(size).toString("base64"),
            })),
          ),
        });
        expect(res.status).toBe(200);
        ids.push(...((await res.json()) as { ids: number[] }).ids);
      }
      const sizeOf = new Map(ids.map((id, i) => [id, spec[i]?.size ?? 0]));

      /** Pages until has_more is false; each gRPC page must be REST's page for the same request. */
      const readAll = async (token: string, limit: number) => {
        const headers = { authorization: `Bearer ${token}` };
        const pages: { ids: number[]; hasMore: boolean; next: number }[] = [];
        for (let from = 0; ; ) {
          const reply = await client.getHistoricEventsFromSubject(
            { subject: "pg", recursive: true, limit, fromId: BigInt(from) },
            { headers },
          );
          const got = {
            ids: reply.events.map((e) => Number(e.id)),
            hasMore: reply.hasMore,
            next: Number(reply.nextFromId),
          };
          const rest = await fetch(
            `${t.url}/events?subject=pg&recursive=true&limit=${limit}&from_id=${from}`,
            {
              headers,
            },
          );
          const page = (await rest.json()) as {
            events: { id: number }[];
            has_more: boolean;
            next_from_id: number;
          };
          expect(got).toEqual({
            ids: page.events.map((e) => e.id),
            hasMore: page.has_more,
            next: page.next_from_id,
          });
          expect(got.next).toBe(got.ids.at(-1) ?? from);
          pages.push(got);
          if (!got.hasMore) return pages;
          expect(got.next).toBeGreaterThan(from);
          from = got.next;
        }
      };

      const all = await readAll(tokens.all, 40);
      expect(all.flatMap((p) => p.ids)).toEqual(ids);
      const cut = all.filter((p) => p.hasMore && p.ids.length < 40);
      expect(cut.length).toBeGreaterThan(0);
      for (const p of all) {
        const bytes = p.ids.reduce((sum, id) => sum + (sizeOf.get(id) ?? 0), 0);
        if (p.ids.length > 1) expect(bytes).toBeLessThanOrEqual(budget);
      }

      const narrow = await readAll(tokens.narrow, 30);
      expect(narrow.flatMap((p) => p.ids)).toEqual(ids.filter((_, i) => spec[i]?.subject === "pg/a"));
      expect(narrow.filter((p) => p.hasMore && p.ids.length < 30).length).toBeGreaterThan(0);
      expect(narrow.every((p) => p.ids.length > 0)).toBe(true);
      const last = await client.getHistoricEventsFromSubject(
        { subject: "pg", recursive: true, fromId: BigInt(narrow.at(-1)?.next ?? 0) },
        { headers: { authorization: `Bearer ${tokens.narrow}` } },
      );
      expect(last.events).toEqual([]);
      expect(last.hasMore).toBe(false);
      expect(last.nextFromId).toBe(BigInt(narrow.at(-1)?.next ?? -1));
    });
  });

  it("every subscriber sees every event once, in order, while 8 writers append and 20 join at random", async () => {
    const t = await start();
    const total = 1500;
    const writers = 8;
    const grpcJsClient = grpcJs(t.server.restPort);
    const { client } = peer("grpc (HTTP/2)", t);
    const streams: {
      ids: () => number[];
      replies: readonly { events: readonly unknown[] }[];
      close: () => void;
    }[] = [];
    const joins = Array.from({ length: 20 }, async (_, i) => {
      await new Promise((r) => setTimeout(r, Math.random() * 400));
      if (i % 2 === 0) {
        const stream = grpcJsClient.stream({ subject: "gap", recursive: true });
        streams.push({ ids: stream.ids, replies: stream.replies, close: stream.cancel });
      } else {
        const stream = openConnectStream((signal) =>
          client.streamEventsFromSubject({ subject: "gap", recursive: true }, { signal }),
        );
        streams.push(stream);
      }
    });
    const appends = appendConcurrently(t.url, "gap", total, writers);
    const [all] = await Promise.all([appends, Promise.all(joins)]);
    onCleanup(() => {
      for (const s of streams) s.close();
    });
    expect(all).toHaveLength(total);
    await waitUntil(
      () => streams.every((s) => s.ids().length >= total),
      "every subscriber to catch up",
      30_000,
    );
    expect(streams).toHaveLength(20);
    for (const s of streams) {
      expect(s.ids()).toEqual(all);
      expect(largestMessage(s.replies)).toBeLessThanOrEqual(10); // --stream-batch-size default
    }
  });

  it("does not let a stalled reader hold back others; it catches up in order once it reads again", async () => {
    const t = await start({ "client-buffer-size": "20" });
    // Connections of their own: a paused stream holds its connection's window, not the others'.
    const stalled = grpcJs(t.server.grpcPort, true).stream({ subject: "big" });
    await waitUntil(async () => (await gauge(t)) === 1, "the stalled reader's stream");
    stalled.call.pause();
    const reader = grpcJs(t.server.restPort, true).stream({ subject: "big" });
    const { client } = peer("grpc (HTTP/2)", t);
    const connectReader = openConnectStream((signal) =>
      client.streamEventsFromSubject({ subject: "big" }, { signal }),
    );
    onCleanup(connectReader.close);
    await waitUntil(async () => (await gauge(t)) === 3, "the readers' streams");
    const readers = [reader, connectReader];

    // 400 × 60 KB = 24 MB: far more than the HTTP/2 windows and socket buffers hold. Random bytes:
    // grpc-js accepts gzip and the server compresses, so uniform bytes would shrink to 1 KB each.
    const data = randomBytes(60 * 1024).toString("base64");
    const ids: number[] = [];
    for (let i = 0; i < 400; i += 8) {
      const results = await Promise.all(Array.from({ length: 8 }, () => publish(t, "big", { data })));
      ids.push(...results);
    }
    ids.sort((a, b) => a - b);
    await waitUntil(() => readers.every((r) => r.ids().length === 400), "the live readers", 30_000);
    for (const r of readers) expect(r.ids()).toEqual(ids);
    // The stalled reader's buffer overflowed and was dropped instead of growing.
    expect(await metric(t.url, "eventsdb_stream_buffer_overflows_total")).toBeGreaterThan(0);
    expect(stalled.ids().length).toBeLessThan(400);
    stalled.call.resume();
    await waitUntil(() => stalled.ids().length >= 400, "the stalled reader to catch up", 30_000);
    expect(stalled.ids()).toEqual(ids);
    expect(stalled.error).toBeUndefined();
    expect(await metric(t.url, "eventsdb_stream_catch_up_fallbacks_total")).toBeGreaterThan(0);
  });
  it("drops a stream that stays unwritable past --write-timeout", async () => {
    const t = await start({ "write-timeout": "1", "client-buffer-size": "10" });
    const stalled = grpcJs(t.server.grpcPort, true).stream({ subject: "timeout" });
    await waitUntil(async () => (await gauge(t)) === 1, "the stream");
    stalled.call.pause();
    const data = randomBytes(60 * 1024).toString("base64");
    for (let i = 0; i < 300; i += 10) {
      await Promise.all(Array.from({ length: 10 }, () => publish(t, "timeout", { data })));
    }
    await waitUntil(async () => (await gauge(t)) === 0, "the stalled stream to be dropped", 15_000);
    stalled.call.resume();
    const status = await stalled.ended;
    expect(status.code).toBe(grpc.status.CANCELLED); // RST_STREAM CANCEL
  });

  // Regression: shutdown used to cut HTTP/2 connections at once (only HTTP/1.1 requests counted
  // as busy), so streams ended UNAVAILABLE without trailers and committed unary calls were
  // answered UNAVAILABLE. Then they ended with OK trailers, which told clients the stream was
  // complete (issue 10, item 22): now the trailers say UNAVAILABLE, so clients resume.
  it("ends streams on shutdown with UNAVAILABLE trailers (reconnect and resume), on every protocol", async () => {
    const t = await start();
    const c = grpcJs(t.server.grpcPort);
    const id = await publish(t, "bye");
    const stream = c.stream({ subject: "bye" });
    const connectStreams = CONNECT_KINDS.map((kind) => {
      const { client } = peer(kind, t);
      return openConnectStream((signal) => client.streamEventsFromSubject({ subject: "bye" }, { signal }));
    });
    await waitUntil(
      () => [stream, ...connectStreams].every((s) => s.ids().length === 1),
      "the event on every stream",
    );
    expect(stream.ids()).toEqual([id]);
    await t.close();
    const status = await stream.ended;
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toContain("shutting down");
    for (const s of connectStreams) {
      const code = await s.ended.then(
        () => "ok",
        (error: unknown) => ConnectError.from(error).code,
      );
      expect(code).toBe(Code.Unavailable);
    }
  });
});
