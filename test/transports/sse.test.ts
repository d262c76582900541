import { EventSource } from "eventsource";
import { describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import { appendConcurrently } from "../support/load.js";
import { metric } from "../support/metrics.js";
import { serversPerTest, type TestServer } from "../support/server.js";
import { openStream, RawStream, waitUntil } from "../support/sse.js";

describe.each(DIALECTS)("SSE streams on $name", (dialect) => {
  const { start, onCleanup } = serversPerTest(() => dialect.url());

  const publish = async (t: TestServer, subject: string | undefined, extra: Record<string, unknown> = {}) => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "sse", type: "t", subject, ...extra }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { id: number }).id;
  };
  const gauge = (t: TestServer) => metric(t.url, "app_active_event_streams");
  const counter = (t: TestServer, name: string) => metric(t.url, name);

  it("sends headers and retry at once, then catch-up, then live events, with no event field", async () => {
    const t = await start();
    const before = [await publish(t, "s/1"), await publish(t, "s/2"), await publish(t, "other")];
    const stream = await openStream(`${t.url}/events/stream?subject=s&recursive=true`);
    onCleanup(stream.close);
    expect(stream.response.status).toBe(200);
    expect(stream.response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(stream.response.headers.get("cache-control")).toBe("no-cache");
    expect(stream.response.headers.get("x-accel-buffering")).toBe("no");
    await waitUntil(() => stream.parser.events.length === 2, "catch-up");
    expect(stream.parser.retry).toBe(2000);
    const live = [await publish(t, "s/3"), await publish(t, "s")];
    await waitUntil(() => stream.parser.events.length === 4, "live events");
    expect(stream.parser.ids()).toEqual([before[0], before[1], ...live]);
    const first = JSON.parse(stream.parser.events[0]?.data ?? "{}");
    expect(first).toMatchObject({ id: before[0], source: "sse", type: "t", subject: "s/1", data: "" });
    expect(stream.parser.events[0]?.id).toBe(String(before[0]));
  });

  it("sends headers before the first event even when there is none", async () => {
    const t = await start();
    const stream = await openStream(`${t.url}/events/stream?subject=empty`);
    onCleanup(stream.close);
    expect(stream.response.status).toBe(200);
    await waitUntil(() => stream.parser.retry !== undefined, "the retry line");
    expect(stream.parser.events).toEqual([]);
  });

  it("every subscriber sees every event once, in order, while 8 writers append and 20 join at random", async () => {
    const t = await start();
    const total = 1500;
    const writers = 8;
    const streams: { ids: () => number[]; close: () => void }[] = [];
    const joins = Array.from({ length: 20 }, async (_, i) => {
      await new Promise((r) => setTimeout(r, Math.random() * 400));
      const url = `${t.url}/events/stream?subject=gap&recursive=true`;
      if (i % 2 === 0) {
        const stream = await openStream(url);
        streams.push({ ids: () => stream.parser.ids(), close: stream.close });
      } else {
        const es = new EventSource(url);
        const ids: number[] = [];
        es.onmessage = (e) => ids.push(Number(e.lastEventId));
        streams.push({ ids: () => ids, close: () => es.close() });
      }
    });
    const appends = appendConcurrently(t.url, "gap", total, writers);
    const [all] = await Promise.all([appends, Promise.all(joins)]);
    expect(all).toHaveLength(total);
    onCleanup(() => {
      for (const s of streams) s.close();
    });
    await waitUntil(
      () => streams.every((s) => s.ids().length >= total),
      "every subscriber to catch up",
      30_000,
    );
    for (const s of streams) expect(s.ids()).toEqual(all);
  });

  it("resumes after Last-Event-ID, which wins over from_id", async () => {
    const t = await start();
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await publish(t, "resume"));
    const stream = await openStream(`${t.url}/events/stream?subject=resume&from_id=0`, {
      "last-event-id": String(ids[2]),
    });
    onCleanup(stream.close);
    await waitUntil(() => stream.parser.events.length === 3, "resumed events");
    expect(stream.parser.ids()).toEqual(ids.slice(3));
    const fromId = await openStream(`${t.url}/events/stream?subject=resume&from_id=${ids[4]}`);
    onCleanup(fromId.close);
    await waitUntil(() => fromId.parser.events.length === 1, "from_id events");
    expect(fromId.parser.ids()).toEqual([ids[5]]);
  });

  it("filters by type and recursion, serves several subjects on one connection, and CloudEvents on request", async () => {
    const t = await start();
    const a = await publish(t, "multi/a", { type: "keep" });
    await publish(t, "multi/a", { type: "drop" });
    await publish(t, "multi/a/deep", { type: "keep" });
    const b = await publish(t, "multi/b", { type: "keep" });
    await publish(t, "multi/c", { type: "keep" });
    const stream = await openStream(
      `${t.url}/events/stream?subject=multi/a&subject=multi/b&type=keep&format=cloudevents`,
    );
    onCleanup(stream.close);
    const live = await publish(t, "multi/b", { type: "keep" });
    await waitUntil(() => stream.parser.events.length === 3, "filtered events");
    expect(stream.parser.ids()).toEqual([a, b, live]);
    const ce = JSON.parse(stream.parser.events[0]?.data ?? "{}");
    expect(ce).toMatchObject({ specversion: "1.0", id: String(a), subject: "multi/a", type: "keep" });

    const recursive = await openStream(`${t.url}/events/stream?subject=multi/a&recursive=true&type=keep`);
    onCleanup(recursive.close);
    await waitUntil(() => recursive.parser.events.length === 2, "recursive events");
    expect(recursive.parser.events.map((e) => JSON.parse(e.data).subject)).toEqual([
      "multi/a",
      "multi/a/deep",
    ]);
  });

  it("streams events without a subject to all-subject streams only, without the member in both formats", async () => {
    const t = await start();
    const none = await publish(t, undefined);
    const all = await openStream(`${t.url}/events/stream`);
    const ce = await openStream(`${t.url}/events/stream?format=cloudevents`);
    const some = await openStream(`${t.url}/events/stream?subject=n&recursive=true`);
    for (const stream of [all, ce, some]) onCleanup(stream.close);
    const live = await publish(t, undefined);
    const marker = await publish(t, "n/1");
    for (const stream of [all, ce]) {
      await waitUntil(() => stream.parser.ids().includes(marker), "the marker");
      expect(stream.parser.ids()).toEqual([none, live, marker]);
      for (const event of stream.parser.events.slice(0, 2))
        expect(JSON.parse(event.data)).not.toHaveProperty("subject");
    }
    await waitUntil(() => some.parser.ids().includes(marker), "the marker on the subject stream");
    expect(some.parser.ids()).toEqual([marker]);
  });

  it("answers bad parameters with 400 before streaming", async () => {
    const t = await start();
    for (const q of [
      "subject=x&from_id=-1",
      "subject=x&format=xml",
      "subject=x&subject=",
      "subject=x&recursive=maybe",
    ]) {
      const res = await fetch(`${t.url}/events/stream?${q}`);
      expect(res.status, q).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("invalid_argument");
    }
    const badHeader = await fetch(`${t.url}/events/stream?subject=x`, {
      headers: { "last-event-id": "abc" },
    });
    expect(badHeader.status).toBe(400);
  });

  it("caps streams at --max-total-clients with 429, keeps the gauge exact, and frees the slot", async () => {
    const t = await start({ "max-total-clients": "2" });
    const one = await openStream(`${t.url}/events/stream?subject=cap`);
    const two = await openStream(`${t.url}/events/stream?subject=cap`);
    onCleanup(one.close, two.close);
    expect(await gauge(t)).toBe(2);
    const third = await fetch(`${t.url}/events/stream?subject=cap`);
    expect(third.status).toBe(429);
    expect(third.headers.get("retry-after")).not.toBeNull();
    expect(await third.json()).toMatchObject({ error: { code: "too_many_requests" } });
    one.close();
    await waitUntil(async () => (await gauge(t)) === 1, "the slot to be freed");
    const again = await openStream(`${t.url}/events/stream?subject=cap`);
    onCleanup(again.close);
    expect(again.response.status).toBe(200);
    expect(await gauge(t)).toBe(2);
  });

  it("sends comment heartbeats every --heartbeat-interval seconds", async () => {
    const t = await start({ "heartbeat-interval": "1" });
    const stream = await openStream(`${t.url}/events/stream?subject=quiet`);
    onCleanup(stream.close);
    await waitUntil(() => stream.parser.comments.length >= 2, "two heartbeats", 10_000);
    expect(stream.parser.comments[0]).toBe("heartbeat");
  });

  it("does not let a stalled reader hold back others; it catches up in order once it reads again", async () => {
    const t = await start({ "client-buffer-size": "20" });
    const stalled = new RawStream(t.server.restPort, "/events/stream?subject=big");
    onCleanup(() => stalled.close());
    await waitUntil(() => stalled.parser.retry !== undefined, "the stalled reader's stream");
    stalled.pause();
    const readers = [
      await openStream(`${t.url}/events/stream?subject=big`),
      await openStream(`${t.url}/events/stream?subject=big`),
    ];
    onCleanup(...readers.map((r) => r.close));
    const data = Buffer.alloc(60 * 1024, 7).toString("base64");
    const ids: number[] = [];
    for (let i = 0; i < 400; i += 8) {
      const results = await Promise.all(Array.from({ length: 8 }, () => publish(t, "big", { data })));
      ids.push(...results);
    }
    ids.sort((a, b) => a - b);
    await waitUntil(() => readers.every((r) => r.parser.events.length === 400), "the live readers");
    for (const r of readers) expect(r.parser.ids()).toEqual(ids);
    // The stalled reader's buffer overflowed and was dropped instead of growing.
    expect(await counter(t, "eventsdb_stream_buffer_overflows_total")).toBeGreaterThan(0);
    expect(stalled.parser.events.length).toBeLessThan(400);
    stalled.resume();
    await waitUntil(() => stalled.parser.events.length >= 400, "the stalled reader to catch up", 30_000);
    expect(stalled.parser.ids()).toEqual(ids);
    expect(await counter(t, "eventsdb_stream_catch_up_fallbacks_total")).toBeGreaterThan(0);
  });

  it("drops a reader that stays unwritable past --write-timeout", async () => {
    const t = await start({ "write-timeout": "1", "client-buffer-size": "10" });
    const stalled = new RawStream(t.server.restPort, "/events/stream?subject=timeout");
    onCleanup(() => stalled.close());
    await waitUntil(() => stalled.parser.retry !== undefined, "the stream");
    stalled.pause();
    const data = Buffer.alloc(60 * 1024, 1).toString("base64");
    for (let i = 0; i < 300; i += 10) {
      await Promise.all(Array.from({ length: 10 }, () => publish(t, "timeout", { data })));
    }
    await waitUntil(async () => (await gauge(t)) === 0, "the stalled stream to be dropped", 15_000);
  });

  it("ends streams cleanly on shutdown", async () => {
    const t = await start();
    await publish(t, "bye");
    const stream = await openStream(`${t.url}/events/stream?subject=bye`);
    await waitUntil(() => stream.parser.events.length === 1, "the event");
    await t.close();
    await expect(stream.ended).resolves.toBeUndefined();
  });
});
