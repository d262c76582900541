import { describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { eventSize, type Page, type PageQuery, type StoredEvent } from "../../../src/events/event.js";
import { Hub, WAKE_SLICE } from "../../../src/hub/hub.js";
import { SubjectIndex } from "../../../src/hub/subject-index.js";
import { Subscription } from "../../../src/hub/subscription.js";
import { Metrics } from "../../../src/metrics.js";
import { matchesSubjects, newEvent } from "../../support/events.js";

/** An in-memory log standing in for the store: what is "committed" is readable by pages. */
class MemoryLog {
  readonly events: StoredEvent[] = [];
  pages = 0;

  append(subject: string | undefined, type = "t", bytes?: number): StoredEvent {
    const event = {
      ...newEvent(subject, { type, ...(bytes === undefined ? {} : { data: Buffer.alloc(bytes) }) }),
      id: this.events.length + 1,
      time: "2026-01-01T00:00:00.000000Z",
    };
    this.events.push(event);
    return event;
  }

  page = async (query: PageQuery): Promise<Page> => {
    this.pages++;
    const matching = this.events.filter(
      (e) =>
        e.id > query.fromId &&
        matchesSubjects(query, e.subject) &&
        (query.type === undefined || e.type === query.type),
    );
    // As the repository: at most `limit` events and `maxBytes` bytes of them, the first always.
    const events: StoredEvent[] = [];
    let bytes = 0;
    for (const event of matching) {
      const size = eventSize(event);
      if (events.length === query.limit || (events.length > 0 && bytes + size > (query.maxBytes ?? Infinity)))
        break;
      events.push(event);
      bytes += size;
    }
    return {
      events,
      hasMore: matching.length > events.length,
      nextFromId: events.at(-1)?.id ?? query.fromId,
    };
  };
}

function hubFor(log: MemoryLog, flags: Record<string, string> = {}) {
  const metrics = new Metrics({ defaultMetrics: false });
  const hub = new Hub(loadConfig({}, flags).streams, metrics, log.page);
  return { hub, metrics };
}

async function take(iterator: AsyncIterator<StoredEvent[]>, count: number): Promise<number[]> {
  const ids: number[] = [];
  while (ids.length < count) {
    const next = await iterator.next();
    if (next.done) break;
    ids.push(...next.value.map((e) => e.id));
  }
  return ids;
}

describe("subject index", () => {
  it("matches exact subjects, recursive ancestors by segment, and all-subject entries", () => {
    const index = new SubjectIndex<string>();
    index.add("exact", ["a/b"], false);
    index.add("rec", ["a"], true);
    index.add("all", [], false);
    index.add("other", ["ab"], true);
    const matches = (subject: string | undefined) => {
      const out: string[] = [];
      index.forEachMatch(subject, (item) => out.push(item));
      return out.sort();
    };
    expect(matches("a/b")).toEqual(["all", "exact", "rec"]);
    expect(matches("a")).toEqual(["all", "rec"]);
    expect(matches("a/b/c")).toEqual(["all", "rec"]);
    expect(matches("ab/c")).toEqual(["all", "other"]);
    expect(matches("a-b")).toEqual(["all"]);
    // An event without a subject: only the subscriptions to all subjects.
    expect(matches(undefined)).toEqual(["all"]);
    index.delete("rec", ["a"], true);
    expect(matches("a/b")).toEqual(["all", "exact"]);
  });
});

describe("hub and subscription engine", () => {
  it("catches up, then goes live, without duplicates when a subscription matches an event twice", async () => {
    const log = new MemoryLog();
    const { hub } = hubFor(log);
    log.append("s/1");
    log.append("s/2");
    const sub = hub.subscribe({
      filter: { subjects: ["s", "s/3"], recursive: true, type: undefined },
      fromId: 0,
    });
    const it = sub[Symbol.asyncIterator]();
    expect(await take(it, 2)).toEqual([1, 2]);
    hub.publish([log.append("s/3"), log.append("x"), log.append("s/4")]);
    expect(await take(it, 2)).toEqual([3, 5]);
    sub.close();
    expect(await it.next()).toEqual({ done: true, value: undefined });
    expect(hub.size).toBe(0);
  });

  it("delivers events published between registration and the end of catch-up exactly once", async () => {
    const log = new MemoryLog();
    const { hub } = hubFor(log, { "stream-batch-size": "2" });
    for (let i = 0; i < 5; i++) log.append("s");
    const sub = hub.subscribe({ filter: { subjects: ["s"], recursive: false, type: undefined }, fromId: 0 });
    const it = sub[Symbol.asyncIterator]();
    const first = await take(it, 2);
    // Committed and published while the subscription is still paging.
    hub.publish([log.append("s"), log.append("s")]);
    expect([...first, ...(await take(it, 5))]).toEqual([1, 2, 3, 4, 5, 6, 7]);
    sub.close();
  });

  it("drops an overflowing buffer and pages from the last delivered id instead", async () => {
    const log = new MemoryLog();
    const { hub, metrics } = hubFor(log, { "client-buffer-size": "3" });
    const sub = hub.subscribe({ filter: { subjects: ["s"], recursive: false, type: undefined }, fromId: 0 });
    const it = sub[Symbol.asyncIterator]();
    const pending = it.next(); // caught up (empty), now waiting live
    hub.publish([log.append("s")]);
    expect((await pending).value?.map((e) => e.id)).toEqual([1]);
    // The consumer is busy: ten events arrive, far more than the buffer holds.
    for (let i = 0; i < 10; i++) hub.publish([log.append("s")]);
    expect((await metrics.streamOverflows.get()).values[0]?.value).toBe(1);
    expect(await take(it, 10)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect((await metrics.streamCatchUps.get()).values[0]?.value).toBe(1);
    hub.publish([log.append("s")]);
    expect(await take(it, 1)).toEqual([12]);
    sub.close();
  });

  it("caps the live buffer and each batch in bytes too (--client-buffer-bytes), at least one event each", async () => {
    const log = new MemoryLog();
    const { hub, metrics } = hubFor(log, { "client-buffer-bytes": "1000", "client-buffer-size": "100" });
    const sub = hub.subscribe({
      filter: { subjects: ["s"], recursive: false, type: undefined },
      fromId: 0,
      batchSize: 100,
    });
    const it = sub[Symbol.asyncIterator]();
    const pending = it.next(); // caught up (empty), now waiting live
    hub.publish([log.append("s", "t", 2000)]); // larger than the budget: alone, never an overflow
    expect((await pending).value?.map((e) => e.id)).toEqual([1]);
    hub.publish([2, 3, 4].map(() => log.append("s", "t", 300)));
    expect((await it.next()).value?.map((e) => e.id)).toEqual([2, 3, 4]);
    expect((await metrics.streamOverflows.get()).values[0]?.value ?? 0).toBe(0);
    // The consumer is busy: 5 × 300 bytes is more than 1000 bytes, far fewer than 100 events.
    for (let i = 0; i < 5; i++) hub.publish([log.append("s", "t", 300)]);
    expect((await metrics.streamOverflows.get()).values[0]?.value).toBe(1);
    // It pages from the store instead, a budget at a time.
    expect((await it.next()).value?.map((e) => e.id)).toEqual([5, 6, 7]); // 900 bytes, not 1500
    expect((await it.next()).value?.map((e) => e.id)).toEqual([8, 9]);
    sub.close();
  });

  it("ends subscriptions whose credential no longer holds with reason revoked; shutdown says shutdown", async () => {
    const log = new MemoryLog();
    const { hub } = hubFor(log);
    let valid = true;
    const filter = { subjects: ["s"], recursive: false, type: undefined };
    const revoked = hub.subscribe({ filter, fromId: 0, stillValid: async () => valid });
    const failing = hub.subscribe({
      filter,
      fromId: 0,
      stillValid: async () => {
        throw new Error("the store is unreachable");
      },
    });
    const plain = hub.subscribe({ filter, fromId: 0 });
    await hub.revalidate();
    expect([revoked.closed, failing.closed, plain.closed]).toEqual([false, false, false]);
    valid = false;
    await hub.revalidate();
    expect(revoked.closeReason).toBe("revoked");
    expect([failing.closed, plain.closed]).toEqual([false, false]); // an outage is no revocation
    hub.close();
    expect([failing.closeReason, plain.closeReason]).toEqual(["shutdown", "shutdown"]);
  });

  it("refuses a client's streams beyond --max-streams-per-client, others' not", async () => {
    const log = new MemoryLog();
    const { hub, metrics } = hubFor(log, { "max-streams-per-client": "2" });
    const filter = { subjects: ["s"], recursive: false, type: undefined };
    const mine = [
      hub.subscribe({ filter, fromId: 0, client: "a" }),
      hub.subscribe({ filter, fromId: 0, client: "a" }),
    ];
    expect(() => hub.subscribe({ filter, fromId: 0, client: "a" })).toThrow(
      expect.objectContaining({ code: "too_many_requests" }),
    );
    expect(() => hub.admit("a")).toThrow(expect.objectContaining({ code: "too_many_requests" }));
    const theirs = hub.subscribe({ filter, fromId: 0, client: "b" });
    expect((await metrics.streamRefusals.get()).values).toEqual([
      expect.objectContaining({ labels: { limit: "max_streams_per_client" }, value: 2 }),
    ]);
    mine[0]?.close();
    hub.admit("a");
    for (const sub of [...mine, theirs]) sub.close();
  });

  it("filters by type, closes on abort, and refuses beyond --max-total-clients", async () => {
    const log = new MemoryLog();
    const { hub, metrics } = hubFor(log, { "max-total-clients": "1" });
    const controller = new AbortController();
    const sub = hub.subscribe({
      filter: { subjects: [], recursive: false, type: "keep" },
      fromId: 0,
      signal: controller.signal,
    });
    expect(() =>
      hub.subscribe({ filter: { subjects: [], recursive: false, type: undefined }, fromId: 0 }),
    ).toThrow(expect.objectContaining({ code: "too_many_requests" }));
    expect((await metrics.activeStreams.get()).values[0]?.value).toBe(1);
    const it = sub[Symbol.asyncIterator]();
    const pending = it.next();
    hub.publish([log.append("a", "drop"), log.append("b", "keep")]);
    expect((await pending).value?.map((e) => e.id)).toEqual([2]);
    const waiting = it.next();
    controller.abort();
    expect(await waiting).toEqual({ done: true, value: undefined });
    expect(hub.size).toBe(0);
    expect((await metrics.activeStreams.get()).values[0]?.value).toBe(0);
  });

  it("wakes more than a slice of consumers at most every --stream-flush-ms, with everything published meanwhile", async () => {
    const log = new MemoryLog();
    const { hub } = hubFor(log, { "stream-flush-ms": "200" });
    // One more than a slice: waking them all costs more than one turn of the event loop.
    const subs = Array.from({ length: WAKE_SLICE + 1 }, () =>
      hub.subscribe({ filter: { subjects: ["s"], recursive: false, type: undefined }, fromId: 0 }),
    );
    const its = subs.map((sub) => sub[Symbol.asyncIterator]());
    const firsts = its.map((it) => it.next()); // caught up, waiting live
    await new Promise((r) => setTimeout(r, 10));
    hub.publish([log.append("s")]); // the first wake-up is immediate
    for (const first of firsts) expect((await first).value?.map((e) => e.id)).toEqual([1]);
    const seconds = its.map((it) => it.next());
    for (let i = 0; i < 5; i++) hub.publish([log.append("s")]); // separate commits within the window
    for (const second of seconds) expect((await second).value?.map((e) => e.id)).toEqual([2, 3, 4, 5, 6]);
    for (const sub of subs) sub.close();
  });

  it("runs one wake-up at a time: what is published during one waits for the next, never a second slice in a turn", async () => {
    const log = new MemoryLog();
    // No flush window: every commit is due at once, as on a server whose turns take longer than it.
    const { hub } = hubFor(log, { "stream-flush-ms": "0" });
    const count = WAKE_SLICE * 4;
    const subs = Array.from({ length: count }, () =>
      hub.subscribe({ filter: { subjects: ["s"], recursive: false, type: undefined }, fromId: 0 }),
    );
    const received = subs.map(() => [] as number[]);
    const consumers = subs.map(async (sub, i) => {
      for await (const batch of sub) {
        for (const event of batch) (received[i] as number[]).push(event.id);
        if ((received[i] as number[]).length === 3) return;
      }
    });
    await new Promise((r) => setTimeout(r, 10)); // all caught up, waiting live
    const wake = vi.spyOn(Subscription.prototype, "wake");
    try {
      // Three commits in one turn of the loop: the first wakes a slice now and the rest over the
      // next turns; the two after it join the next wake-up instead of starting slices of their own.
      for (let i = 0; i < 3; i++) {
        hub.publish([log.append("s")]);
        for (let j = 0; j < 10; j++) await Promise.resolve();
      }
      const perTurn = [wake.mock.calls.length];
      while (received.some((ids) => ids.length < 3) && perTurn.length <= count) {
        const before = wake.mock.calls.length;
        await new Promise((r) => setImmediate(r));
        perTurn.push(wake.mock.calls.length - before);
      }
      expect(perTurn[0]).toBe(WAKE_SLICE);
      expect(Math.max(...perTurn)).toBe(WAKE_SLICE);
    } finally {
      wake.mockRestore();
    }
    await Promise.all(consumers);
    for (const ids of received) expect(ids).toEqual([1, 2, 3]); // nothing lost, in order
  });

  it("wakes a slice of consumers or fewer at once, every commit", async () => {
    const log = new MemoryLog();
    const { hub } = hubFor(log, { "stream-flush-ms": "1000" });
    const sub = hub.subscribe({ filter: { subjects: ["s"], recursive: false, type: undefined }, fromId: 0 });
    const it = sub[Symbol.asyncIterator]();
    const first = it.next();
    await new Promise((r) => setTimeout(r, 10));
    hub.publish([log.append("s")]);
    expect((await first).value?.map((e) => e.id)).toEqual([1]);
    // Within the flush window (a second): not held back for its timer, delivered in the same turn.
    let second: number[] | undefined;
    void it.next().then((r) => {
      second = r.value?.map((e) => e.id);
    });
    hub.publish([log.append("s")]);
    for (let i = 0; i < 50 && second === undefined; i++) await Promise.resolve();
    expect(second).toEqual([2]);
    sub.close();
  });

  it("ends every subscription on close", async () => {
    const log = new MemoryLog();
    const { hub } = hubFor(log);
    const subs = [1, 2, 3].map(() =>
      hub.subscribe({ filter: { subjects: ["s"], recursive: false, type: undefined }, fromId: 0 }),
    );
    const ends = subs.map(async (sub) => {
      for await (const _ of sub) {
        // nothing is published
      }
    });
    hub.close();
    await Promise.all(ends);
    expect(hub.size).toBe(0);
    expect(() =>
      hub.subscribe({ filter: { subjects: [], recursive: false, type: undefined }, fromId: 0 }),
    ).toThrow(expect.objectContaining({ code: "unavailable" }));
  });
});

describe("a subscription whose store read fails", () => {
  it("tells the hub's onStoreError, waits and reads again from the same cursor", async () => {
    const log = new MemoryLog();
    log.append("s");
    let failures = 2;
    const errors: unknown[] = [];
    const hub = new Hub(
      loadConfig({}, {}).streams,
      new Metrics({ defaultMetrics: false }),
      async (query) => {
        if (failures-- > 0) throw new Error("store down");
        return log.page(query);
      },
      (error) => errors.push(error),
    );
    const subscription = hub.subscribe({
      filter: { subjects: ["s"], recursive: false, type: undefined },
      fromId: 0,
    });
    try {
      expect(await take(subscription[Symbol.asyncIterator](), 1)).toEqual([1]);
      expect(errors.map((e) => (e as Error).message)).toEqual(["store down", "store down"]);
    } finally {
      subscription.close();
    }
  });
});
