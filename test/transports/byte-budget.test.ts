import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import {
  CONNECT_KINDS,
  type ConnectPeer,
  connectPeer,
  GrpcJsClient,
  openConnectStream,
} from "../support/grpc.js";
import { metric } from "../support/metrics.js";
import { serversPerTest, type TestServer } from "../support/server.js";
import { RawStream, waitUntil } from "../support/sse.js";

/** --client-buffer-bytes in these tests. */
const BUDGET = 100_000;
/** Data sizes: pages of three 30 KB events, one event larger than the budget, small ones. */
const SIZES = [30_000, 30_000, 30_000, 30_000, 30_000, 250_000, 10, 10, 30_000, 30_000, 30_000, 30_000];
/** The pages a reader of everything sees: event indexes into SIZES. */
const PAGES = [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9, 10], [11]];

/** Bytes of data of the events of one page or message; at most the budget unless one event. */
function checkBudget(sizes: readonly number[], budget = BUDGET): void {
  expect(sizes.length).toBeGreaterThan(0);
  if (sizes.length > 1) expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(budget);
}

// Regression (issue 10, items 6 and 15): pages, catch-up reads and stream messages were bounded in
// events only: one read of 420 events of 1 MiB killed the server, a stalled stream held ~340 MB.
describe.each(DIALECTS)("byte budget (--client-buffer-bytes) on $name", (dialect) => {
  const { start, onCleanup } = serversPerTest(() => dialect.url());

  /** Appends SIZES to `subject` (random bytes: gRPC replies may be compressed); returns the ids. */
  const seed = async (t: TestServer, subject: string): Promise<number[]> => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(
        SIZES.map((n) => ({ source: "b", type: "t", subject, data: randomBytes(n).toString("base64") })),
      ),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { ids: number[] }).ids;
  };
  const pagesOf = (ids: readonly number[]) => PAGES.map((page) => page.map((i) => ids[i] as number));
  const peer = (kind: (typeof CONNECT_KINDS)[number], t: TestServer): ConnectPeer => {
    const p = connectPeer(kind, t);
    onCleanup(p.close);
    return p;
  };

  it("REST GET /events stops each page at the budget, says there is more, and paging on reads every event once", async () => {
    const t = await start({ "client-buffer-bytes": String(BUDGET) });
    const ids = await seed(t, "rest");
    const simple: number[][] = [];
    for (let from = 0; ; ) {
      const res = await fetch(`${t.url}/events?subject=rest&limit=1000&from_id=${from}`);
      const page = (await res.json()) as {
        events: { id: number; data: string }[];
        has_more: boolean;
        next_from_id: number;
      };
      checkBudget(page.events.map((e) => Buffer.from(e.data, "base64").length));
      simple.push(page.events.map((e) => e.id));
      if (!page.has_more) break;
      expect(page.next_from_id).toBe(page.events.at(-1)?.id);
      from = page.next_from_id;
    }
    expect(simple).toEqual(pagesOf(ids));

    const batches: number[][] = [];
    for (let from = 0; ; ) {
      const res = await fetch(`${t.url}/events?subject=rest&limit=1000&from_id=${from}`, {
        headers: { accept: "application/cloudevents-batch+json" },
      });
      const events = (await res.json()) as { id: string; data_base64: string }[];
      checkBudget(events.map((e) => Buffer.from(e.data_base64, "base64").length));
      batches.push(events.map((e) => Number(e.id)));
      if (res.headers.get("x-has-more") !== "true") break;
      from = Number(res.headers.get("x-next-from-id"));
      expect(from).toBe(Number(events.at(-1)?.id));
    }
    expect(batches).toEqual(pagesOf(ids));
  });

  it.each(CONNECT_KINDS)(
    "GetHistoricEventsFromSubject over %s stops at the budget with has_more; paging on reads every event once",
    async (kind) => {
      const t = await start({ "client-buffer-bytes": String(BUDGET) });
      const ids = await seed(t, "hist");
      const { client } = peer(kind, t);
      const pages: number[][] = [];
      for (let fromId = 0n; ; ) {
        const page = await client.getHistoricEventsFromSubject({ subject: "hist", fromId, limit: 1000 });
        checkBudget(page.events.map((e) => e.data.length));
        pages.push(page.events.map((e) => Number(e.id)));
        if (!page.hasMore) break;
        fromId = page.events.at(-1)?.id as bigint;
      }
      expect(pages).toEqual(pagesOf(ids));
    },
  );

  it("GetHistoricEventsFromSubject over grpc-js (an independent client) pages by the budget too", async () => {
    const t = await start({ "client-buffer-bytes": String(BUDGET) });
    const ids = await seed(t, "hist");
    const c = new GrpcJsClient(t.server.grpcPort);
    onCleanup(() => c.close());
    const pages: number[][] = [];
    for (let fromId = "0"; ; ) {
      const page = await c.unary("GetHistoricEventsFromSubject", {
        subject: "hist",
        from_id: fromId,
        limit: 1000,
      });
      checkBudget(page.events.map((e) => e.data.length));
      pages.push(page.events.map((e) => Number(e.id)));
      if (!page.has_more) break;
      fromId = page.events.at(-1)?.id as string;
    }
    expect(pages).toEqual(pagesOf(ids));
  });

  it("SSE catch-up writes at most the budget at once, and delivers every event once, in order", async () => {
    const t = await start({ "client-buffer-bytes": String(BUDGET) });
    const ids = await seed(t, "sse");
    const stream = new RawStream(t.server.restPort, "/events/stream?subject=sse");
    onCleanup(() => stream.close());
    await waitUntil(() => stream.parser.events.length === ids.length, "the catch-up");
    expect(stream.parser.ids()).toEqual(ids);
    // The 250 KB event is written in parts (head, data, tail): it arrives whole all the same.
    const sizes = stream.parser.events.map(
      (e) => Buffer.from((JSON.parse(e.data) as { data: string }).data, "base64").length,
    );
    expect(sizes).toEqual(SIZES);
    // One write = one HTTP/1.1 chunk: at most the budget of data (as base64 in JSON), or one event.
    const budgetAsFrames = (BUDGET * 4) / 3 + 5 * 1000;
    const largestEvent = (Math.max(...SIZES) * 4) / 3 + 1000;
    expect(stream.largestChunk).toBeLessThanOrEqual(Math.max(budgetAsFrames, largestEvent));
  });

  it.each(CONNECT_KINDS)(
    "StreamEventsFromSubject over %s sends messages within the budget, every event once",
    async (kind) => {
      const t = await start({ "client-buffer-bytes": String(BUDGET), "stream-batch-size": "100" });
      const ids = await seed(t, "grpc");
      const { client } = peer(kind, t);
      const stream = openConnectStream((signal) =>
        client.streamEventsFromSubject({ subject: "grpc" }, { signal }),
      );
      onCleanup(stream.close);
      await waitUntil(() => stream.ids().length >= ids.length, "the catch-up");
      expect(stream.ids()).toEqual(ids);
      for (const reply of stream.replies) {
        checkBudget((reply.events as unknown as { data: Uint8Array }[]).map((e) => e.data.length));
      }
      // Live events that arrive together are cut at the budget too.
      const live = await seed(t, "grpc");
      await waitUntil(() => stream.ids().length >= 2 * ids.length, "the live events");
      expect(stream.ids()).toEqual([...ids, ...live]);
      for (const reply of stream.replies) {
        checkBudget((reply.events as unknown as { data: Uint8Array }[]).map((e) => e.data.length));
      }
    },
  );

  it("a stalled SSE reader's live buffer overflows at the byte budget (not 1000 events later) and it catches up in order", async () => {
    const t = await start({ "client-buffer-bytes": "300000", "client-buffer-size": "1000" });
    const stalled = new RawStream(t.server.restPort, "/events/stream?subject=stall");
    onCleanup(() => stalled.close());
    await waitUntil(() => stalled.parser.retry !== undefined, "the stream");
    stalled.pause();
    const ids: number[] = [];
    // 400 × 60 KB = 24 MB: more than socket buffers hold, far fewer than 1000 events.
    const data = randomBytes(60 * 1024).toString("base64");
    for (let i = 0; i < 400; i += 20) {
      const res = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(
          Array.from({ length: 20 }, () => ({ source: "s", type: "t", subject: "stall", data })),
        ),
      });
      ids.push(...((await res.json()) as { ids: number[] }).ids);
    }
    await waitUntil(
      async () => (await metric(t.url, "eventsdb_stream_buffer_overflows_total")) > 0,
      "the buffer to overflow by bytes",
    );
    stalled.resume();
    await waitUntil(() => stalled.parser.events.length >= 400, "the stalled reader to catch up", 30_000);
    expect(stalled.parser.ids()).toEqual(ids);
  });

  it("a stalled gRPC reader's live buffer overflows at the byte budget and it catches up in order", async () => {
    const t = await start({ "client-buffer-bytes": "300000", "client-buffer-size": "1000" });
    const c = new GrpcJsClient(t.server.grpcPort, true);
    onCleanup(() => c.close());
    const stalled = c.stream({ subject: "stall" });
    await waitUntil(async () => (await metric(t.url, "app_active_event_streams")) === 1, "the stream");
    stalled.call.pause();
    const ids: number[] = [];
    const data = randomBytes(60 * 1024).toString("base64");
    for (let i = 0; i < 400; i += 20) {
      const res = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(
          Array.from({ length: 20 }, () => ({ source: "s", type: "t", subject: "stall", data })),
        ),
      });
      ids.push(...((await res.json()) as { ids: number[] }).ids);
    }
    await waitUntil(
      async () => (await metric(t.url, "eventsdb_stream_buffer_overflows_total")) > 0,
      "the buffer to overflow by bytes",
    );
    stalled.call.resume();
    await waitUntil(() => stalled.ids().length >= 400, "the stalled reader to catch up", 30_000);
    expect(stalled.ids()).toEqual(ids);
    for (const reply of stalled.replies)
      checkBudget(
        reply.events.map((e) => e.data.length),
        300_000,
      );
  });
});
