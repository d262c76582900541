import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import type { Page, PageQuery, StoredEvent } from "../../../src/events/event.js";
import { Hub } from "../../../src/hub/hub.js";
import { Metrics } from "../../../src/metrics.js";
import { newEvent } from "../../support/events.js";

/** An in-memory store whose page reads stay in flight until the next timer turn, and are counted. */
class SlowLog {
  readonly events: StoredEvent[] = [];
  pages = 0;

  append(subject: string): StoredEvent {
    const event = { ...newEvent(subject), id: this.events.length + 1, time: "2026-01-01T00:00:00.000000Z" };
    this.events.push(event);
    return event;
  }

  page = async (query: PageQuery): Promise<Page> => {
    this.pages++;
    // What is committed when the read starts is what it returns.
    const matching = this.events.filter(
      (e) => e.id > query.fromId && query.subjects.includes(e.subject ?? ""),
    );
    await new Promise((resolve) => setTimeout(resolve, 5));
    const events = matching.slice(0, query.limit);
    return {
      events,
      hasMore: matching.length > events.length,
      nextFromId: events.at(-1)?.id ?? query.fromId,
    };
  };
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

const STREAMS = 20;

describe("page reads of many subscriptions", () => {
  it("a burst that overflows every buffer on a subject costs one read per page, not one per stream", async () => {
    const log = new SlowLog();
    const hub = new Hub(
      loadConfig({}, { "client-buffer-size": "5" }).streams,
      new Metrics({ defaultMetrics: false }),
      log.page,
    );
    const subs = Array.from({ length: STREAMS }, () =>
      hub.subscribe({ filter: { subjects: ["fan"], recursive: false, type: undefined }, fromId: 0 }),
    );
    const iterators = subs.map((sub) => sub[Symbol.asyncIterator]());
    // Each catches up (nothing stored yet) and waits for live events.
    const first = iterators.map((iterator) => take(iterator, 1));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const before = log.pages;
    // One commit of 50 events (a stalled commit's backlog) published at once: every buffer of 5 overflows.
    const burst = Array.from({ length: 50 }, () => log.append("fan"));
    hub.publish(burst);
    const got = await Promise.all(
      first.map(async (pending, i) => {
        const head = await pending;
        const iterator = iterators[i] as AsyncIterator<StoredEvent[]>;
        return [...head, ...(await take(iterator, burst.length - head.length))];
      }),
    );
    for (const ids of got) expect(ids).toEqual(burst.map((event) => event.id));
    // Without sharing every stream reads its own pages: at least STREAMS reads.
    expect(log.pages - before).toBeLessThan(STREAMS);
    expect(log.pages - before).toBeGreaterThan(0);
    hub.close();
  });

  it("does not share a read issued before a publish with one issued after it", async () => {
    const log = new SlowLog();
    const hub = new Hub(loadConfig({}, {}).streams, new Metrics({ defaultMetrics: false }), log.page);
    const filter = { subjects: ["fan"], recursive: false, type: undefined };
    const a = hub.subscribe({ filter, fromId: 0 })[Symbol.asyncIterator]();
    const firstOfA = take(a, 1); // its catch-up read is in flight now, before event 1 exists
    const one = log.append("fan");
    hub.publish([one]);
    // Subscribed after the publish: its read must not be the one that started before event 1.
    const b = hub.subscribe({ filter, fromId: 0 })[Symbol.asyncIterator]();
    const missed = new Promise((resolve) => setTimeout(() => resolve("event 1 never came"), 2000));
    expect(await Promise.race([take(b, 1), missed])).toEqual([1]);
    expect(await firstOfA).toEqual([1]);
    hub.close();
  });
});
