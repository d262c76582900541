import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../../src/config.js";
import type { EventFilter, Page, PageQuery, StoredEvent } from "../../../src/events/event.js";
import { CommitFeed } from "../../../src/hub/feed.js";
import { Hub } from "../../../src/hub/hub.js";
import type { Subscription } from "../../../src/hub/subscription.js";
import { Metrics } from "../../../src/metrics.js";
import { matchesSubjects, newEvent } from "../../support/events.js";

// The handover between paging and live delivery is where a lost or doubled event would come
// from: a subscription registers, pages from the store, takes its buffered live events past its
// cursor, drops the buffer when it overflows and pages again. These tests drive it against a
// model store whose page reads take their snapshot and return at moments the test chooses, so
// that every interleaving of commits, publishes, snapshots, returns, store errors and slow
// consumers can happen; each subscription must see exactly the matching events past its start
// cursor, each once, in id order.

/** Interleavings tried per property; hunt longer with EVENTSDB_HANDOVER_RUNS=200000. */
const RUNS = Number(process.env.EVENTSDB_HANDOVER_RUNS ?? 300);
/** Generous: a run takes a few milliseconds, far more on a loaded machine. */
const PROPERTY_TIMEOUT_MS = 30_000 + RUNS * 50;

/** undefined: an event without a subject, which only the filters for all subjects match. */
const SUBJECTS = ["a", "a/b", "a/b/c", "b", "c", undefined] as const;
const TYPES = ["t1", "t2"] as const;

/** Filters like the streams clients open: one subject, recursive, several (overlapping), all, by type. */
const FILTERS: readonly EventFilter[] = [
  { subjects: ["a"], recursive: false, type: undefined },
  { subjects: ["a"], recursive: true, type: undefined },
  { subjects: ["a", "a/b"], recursive: true, type: undefined }, // a/b/c matches through both
  { subjects: ["a/b", "b"], recursive: false, type: undefined },
  { subjects: [], recursive: false, type: undefined },
  { subjects: [], recursive: false, type: "t1" },
  { subjects: ["c", "b"], recursive: true, type: "t2" },
];

function matches(filter: EventFilter, event: StoredEvent): boolean {
  return matchesSubjects(filter, event.subject) && (filter.type === undefined || filter.type === event.type);
}

/**
 * The store: events are committed (readable by pages) before the feed publishes them, in id
 * order, as the commit feed does. A page read takes its snapshot at one scheduled moment and
 * returns at a later one; in between, more commits and publishes may happen. A read may fail.
 */
class ModelStore {
  readonly committed: StoredEvent[] = [];
  published = 0;
  pages = 0;
  failures = 0;
  readonly #failPlan: boolean[];

  constructor(
    readonly scheduler: fc.Scheduler,
    failPlan: readonly boolean[],
  ) {
    this.#failPlan = [...failPlan];
  }

  commit(subject: string | undefined, type: string): void {
    this.committed.push({
      ...newEvent(subject, { type }),
      id: this.committed.length + 1,
      time: "2026-01-01T00:00:00.000000Z",
    });
  }

  /** The next `count` committed events not yet published (one hub.publish, like one feed batch). */
  takeUnpublished(count: number): StoredEvent[] {
    const events = this.committed.slice(this.published, this.published + count);
    this.published += events.length;
    return events;
  }

  page = async (query: PageQuery): Promise<Page> => {
    this.pages++;
    const fail = this.#failPlan.shift() ?? false;
    await this.scheduler.schedule(Promise.resolve(), "page snapshot");
    if (fail) {
      this.failures++;
      throw new Error("store unreachable");
    }
    const matching = this.committed.filter((e) => e.id > query.fromId && matches(query, e));
    const events = matching.slice(0, query.limit);
    const page = {
      events,
      hasMore: matching.length > query.limit,
      nextFromId: events.at(-1)?.id ?? query.fromId,
    };
    await this.scheduler.schedule(Promise.resolve(), "page return");
    return page;
  };

  /** The last committed id, as the feed watches it (event_sequence.last_id). */
  lastCommitted = async (): Promise<number> => {
    await this.scheduler.schedule(Promise.resolve(), "last committed");
    return this.committed.length;
  };

  /** Stops failing (so that every subscription can finish catching up). */
  heal(): void {
    this.#failPlan.length = 0;
  }
}

interface Reader {
  readonly subscription: Subscription;
  readonly filter: EventFilter;
  readonly fromId: number;
  readonly received: number[];
  readonly done: Promise<void>;
}

type Action =
  | { readonly kind: "commit"; readonly subjects: readonly number[]; readonly type: number }
  | { readonly kind: "publish"; readonly count: number }
  | { readonly kind: "step"; readonly count: number }
  | {
      readonly kind: "subscribe";
      readonly filter: number;
      readonly from: "zero" | "committed" | "published";
    };

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant("commit" as const),
      subjects: fc.array(fc.nat(SUBJECTS.length - 1), { minLength: 1, maxLength: 3 }),
      type: fc.nat(TYPES.length - 1),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("publish" as const), count: fc.integer({ min: 1, max: 4 }) }),
    weight: 3,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("step" as const), count: fc.integer({ min: 1, max: 6 }) }),
    weight: 5,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("subscribe" as const),
      filter: fc.nat(FILTERS.length - 1),
      from: fc.constantFrom("zero" as const, "committed" as const, "published" as const),
    }),
    weight: 1,
  },
);

/** Runs the actions, then publishes the rest and lets everything settle; returns the readers. */
async function run(
  s: fc.Scheduler,
  flags: Record<string, string>,
  failPlan: readonly boolean[],
  actions: readonly Action[],
): Promise<{ store: ModelStore; readers: Reader[]; hub: Hub }> {
  const store = new ModelStore(s, failPlan);
  const metrics = new Metrics({ defaultMetrics: false });
  const hub = new Hub(loadConfig({}, { "stream-flush-ms": "0", ...flags }).streams, metrics, store.page);
  const readers: Reader[] = [];
  const subscribe = (filter: EventFilter, fromId: number) => {
    const subscription = hub.subscribe({ filter, fromId });
    const received: number[] = [];
    const done = (async () => {
      for await (const batch of subscription) {
        received.push(...batch.map((e) => e.id));
        // A consumer that takes its time: live events pile up (and overflow) meanwhile.
        await s.schedule(Promise.resolve(), "consumer");
      }
    })();
    readers.push({ subscription, filter, fromId, received, done });
  };
  subscribe(FILTERS[1] as EventFilter, 0);
  for (const a of actions) {
    switch (a.kind) {
      case "commit":
        for (const i of a.subjects) store.commit(SUBJECTS[i], TYPES[a.type] as string);
        break;
      case "publish": {
        const events = store.takeUnpublished(a.count);
        if (events.length > 0) hub.publish(events);
        break;
      }
      case "step":
        for (let i = 0; i < a.count && s.count() > 0; i++) await s.waitNext(1);
        break;
      case "subscribe": {
        const fromId =
          a.from === "zero" ? 0 : a.from === "committed" ? store.committed.length : store.published;
        subscribe(FILTERS[a.filter] as EventFilter, fromId);
        break;
      }
    }
  }
  store.heal();
  for (;;) {
    const events = store.takeUnpublished(Number.MAX_SAFE_INTEGER);
    if (events.length === 0) break;
    hub.publish(events);
  }
  // Settle: run every scheduled step; wake subscriptions that wait out a store error's back-off.
  for (let round = 0; round < 50; round++) {
    await s.waitIdle();
    const behind = readers.some((r) => r.received.length < expected(store, r).length);
    if (!behind) break;
    for (const r of readers) r.subscription.wake();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { store, readers, hub };
}

function expected(store: ModelStore, reader: Reader): number[] {
  return store.committed.filter((e) => e.id > reader.fromId && matches(reader.filter, e)).map((e) => e.id);
}

describe("subscription handover between paging and live delivery", () => {
  it(
    "delivers every matching event past the cursor exactly once, in order, for any interleaving",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.scheduler(),
          fc.record({
            "client-buffer-size": fc.integer({ min: 1, max: 4 }).map(String),
            "stream-batch-size": fc.integer({ min: 1, max: 3 }).map(String),
          }),
          fc.array(fc.boolean(), { maxLength: 12 }),
          fc.array(action, { minLength: 5, maxLength: 80, size: "max" }),
          async (s, flags, failPlan, actions) => {
            const { store, readers, hub } = await run(s, flags, failPlan, actions);
            try {
              for (const reader of readers) {
                expect({ filter: reader.filter, fromId: reader.fromId, ids: reader.received }).toEqual({
                  filter: reader.filter,
                  fromId: reader.fromId,
                  ids: expected(store, reader),
                });
              }
            } finally {
              hub.close();
              await s.waitFor(Promise.all(readers.map((r) => r.done)));
            }
          },
        ),
        { numRuns: RUNS },
      );
    },
    PROPERTY_TIMEOUT_MS,
  );
});

/**
 * Two processes on one database, each with its writer, commit feed and hub, over the model store.
 * A commit takes its ids and becomes visible at one moment (the sequence row is locked until
 * COMMIT, so ids are in commit order across processes); the writer hands the batch to its feed
 * a scheduled while later, and only then commits its next batch. Feeds fill holes before a local
 * batch from the store and poll (fake timers); their reads, like the streams', snapshot and
 * return at scheduled moments and may fail.
 */
type ProcessAction =
  | {
      readonly kind: "append";
      readonly process: number;
      readonly subjects: readonly number[];
      readonly type: number;
    }
  | { readonly kind: "step"; readonly count: number }
  | { readonly kind: "tick"; readonly ms: number }
  | {
      readonly kind: "subscribe";
      readonly process: number;
      readonly filter: number;
      readonly from: "zero" | "committed";
    };

const processAction: fc.Arbitrary<ProcessAction> = fc.oneof(
  {
    arbitrary: fc.record({
      kind: fc.constant("append" as const),
      process: fc.nat(1),
      subjects: fc.array(fc.nat(SUBJECTS.length - 1), { minLength: 1, maxLength: 3 }),
      type: fc.nat(TYPES.length - 1),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("step" as const), count: fc.integer({ min: 1, max: 8 }) }),
    weight: 5,
  },
  {
    arbitrary: fc.record({ kind: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 6 }) }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("subscribe" as const),
      process: fc.nat(1),
      filter: fc.nat(FILTERS.length - 1),
      from: fc.constantFrom("zero" as const, "committed" as const),
    }),
    weight: 1,
  },
);

async function runProcesses(
  s: fc.Scheduler,
  flags: Record<string, string>,
  failPlan: readonly boolean[],
  actions: readonly ProcessAction[],
): Promise<{ store: ModelStore; readers: Reader[]; close(): Promise<void> }> {
  const store = new ModelStore(s, failPlan);
  const config = loadConfig({}, { "stream-flush-ms": "0", ...flags }).streams;
  const processes = [3, 5].map((pollMs) => {
    const hub = new Hub(config, new Metrics({ defaultMetrics: false }), store.page);
    const feed = new CommitFeed({
      lastId: 0,
      page: store.page,
      lastCommitted: store.lastCommitted,
      publish: (events) => hub.publish(events),
      listening: () => hub.size > 0,
      pollMs,
      pollMinMs: 1,
      onError: () => {},
    });
    return { hub, feed, writer: Promise.resolve() };
  });
  const readers: Reader[] = [];
  const subscribe = (process: number, filter: EventFilter, fromId: number) => {
    const subscription = (processes[process] as (typeof processes)[number]).hub.subscribe({ filter, fromId });
    const received: number[] = [];
    const done = (async () => {
      for await (const batch of subscription) {
        received.push(...batch.map((e) => e.id));
        await s.schedule(Promise.resolve(), "consumer");
      }
    })();
    readers.push({ subscription, filter, fromId, received, done });
  };
  subscribe(0, FILTERS[1] as EventFilter, 0);
  subscribe(1, FILTERS[4] as EventFilter, 0);
  for (const a of actions) {
    switch (a.kind) {
      case "append": {
        const p = processes[a.process] as (typeof processes)[number];
        p.writer = p.writer.then(async () => {
          await s.schedule(Promise.resolve(), `process ${a.process} commits`);
          const first = store.committed.length;
          for (const i of a.subjects) store.commit(SUBJECTS[i], TYPES[a.type] as string);
          const events = store.committed.slice(first);
          await s.schedule(Promise.resolve(), `process ${a.process} has its COMMIT answered`);
          await p.feed.committed(events);
        });
        break;
      }
      case "step":
        for (let i = 0; i < a.count && s.count() > 0; i++) await s.waitNext(1);
        break;
      case "tick":
        await vi.advanceTimersByTimeAsync(a.ms);
        break;
      case "subscribe":
        subscribe(
          a.process,
          FILTERS[a.filter] as EventFilter,
          a.from === "zero" ? 0 : store.committed.length,
        );
        break;
    }
  }
  store.heal();
  await s.waitFor(Promise.all(processes.map((p) => p.writer)));
  for (let round = 0; round < 100; round++) {
    await s.waitIdle();
    if (readers.every((r) => r.received.length >= expected(store, r).length)) break;
    for (const r of readers) r.subscription.wake();
    await vi.advanceTimersByTimeAsync(5); // polls, and back-offs after store errors
  }
  return {
    store,
    readers,
    async close() {
      for (const p of processes) {
        p.feed.close();
        p.hub.close();
      }
      await s.waitFor(Promise.all(readers.map((r) => r.done)));
    },
  };
}

describe("two processes on one database: commit feeds, hubs and streams", () => {
  it(
    "every stream on either process gets each matching event exactly once, in order",
    async () => {
      vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval"] });
      try {
        await fc.assert(
          fc.asyncProperty(
            fc.scheduler(),
            fc.record({
              "client-buffer-size": fc.integer({ min: 1, max: 4 }).map(String),
              "stream-batch-size": fc.integer({ min: 1, max: 3 }).map(String),
            }),
            fc.array(fc.boolean(), { maxLength: 12 }),
            fc.array(processAction, { minLength: 5, maxLength: 80, size: "max" }),
            async (s, flags, failPlan, actions) => {
              const { store, readers, close } = await runProcesses(s, flags, failPlan, actions);
              try {
                for (const reader of readers) {
                  expect({ filter: reader.filter, fromId: reader.fromId, ids: reader.received }).toEqual({
                    filter: reader.filter,
                    fromId: reader.fromId,
                    ids: expected(store, reader),
                  });
                }
              } finally {
                await close();
              }
            },
          ),
          { numRuns: RUNS },
        );
      } finally {
        vi.useRealTimers();
      }
    },
    PROPERTY_TIMEOUT_MS,
  );
});

/** A page function whose reads the test answers by hand: each call waits in `calls`. */
class ManualStore {
  readonly committed: StoredEvent[] = [];
  readonly calls: { query: PageQuery; answer(): void; fail(): void }[] = [];

  commit(subject: string): StoredEvent {
    const event = {
      ...newEvent(subject),
      id: this.committed.length + 1,
      time: "2026-01-01T00:00:00.000000Z",
    };
    this.committed.push(event);
    return event;
  }

  /** The snapshot is taken when the read is called; the answer comes when the test says. */
  page = (query: PageQuery): Promise<Page> =>
    new Promise((resolve, reject) => {
      const matching = this.committed.filter((e) => e.id > query.fromId && matches(query, e));
      const events = matching.slice(0, query.limit);
      this.calls.push({
        query,
        answer: () =>
          resolve({
            events,
            hasMore: matching.length > query.limit,
            nextFromId: events.at(-1)?.id ?? query.fromId,
          }),
        fail: () => reject(new Error("store unreachable")),
      });
    });

  /** The pending read, once the subscription has made it. */
  async next(): Promise<{ query: PageQuery; answer(): void; fail(): void }> {
    for (let i = 0; i < 100 && this.calls.length === 0; i++) await new Promise((r) => setImmediate(r));
    const call = this.calls.shift();
    if (call === undefined) throw new Error("the subscription made no page read");
    return call;
  }
}

function manualHub(store: ManualStore, flags: Record<string, string>) {
  const metrics = new Metrics({ defaultMetrics: false });
  const hub = new Hub(loadConfig({}, { "stream-flush-ms": "0", ...flags }).streams, metrics, store.page);
  return { hub, metrics };
}

/** Reads the subscription into `ids` until it ends. */
function drain(subscription: Subscription, ids: number[]): Promise<void> {
  return (async () => {
    for await (const batch of subscription) ids.push(...batch.map((e) => e.id));
  })();
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

describe("subscription handover, scenario by scenario", () => {
  it("an overflow while a page is read, of events committed after the page's snapshot: it pages again", async () => {
    const store = new ManualStore();
    const { hub, metrics } = manualHub(store, { "client-buffer-size": "2", "stream-batch-size": "10" });
    for (let i = 0; i < 3; i++) hub.publish([store.commit("s")]); // nobody listens yet
    const subscription = hub.subscribe({
      filter: { subjects: ["s"], recursive: false, type: undefined },
      fromId: 0,
    });
    const ids: number[] = [];
    const done = drain(subscription, ids);
    const first = await store.next(); // snapshot: 1..3
    for (let i = 0; i < 3; i++) hub.publish([store.commit("s")]); // 4, 5 buffered; 6 overflows
    expect((await metrics.streamOverflows.get()).values[0]?.value).toBe(1);
    first.answer();
    const second = await store.next();
    expect(second.query.fromId).toBe(3);
    second.answer(); // 4..6
    await settle();
    hub.publish([store.commit("s")]);
    await settle();
    expect(ids).toEqual([1, 2, 3, 4, 5, 6, 7]);
    subscription.close();
    await done;
  });

  it("events committed before the snapshot but published after the page returned are not repeated", async () => {
    const store = new ManualStore();
    const { hub } = manualHub(store, { "client-buffer-size": "3", "stream-batch-size": "2" });
    const subscription = hub.subscribe({
      filter: { subjects: ["s"], recursive: true, type: undefined },
      fromId: 0,
    });
    const ids: number[] = [];
    const done = drain(subscription, ids);
    const pending = [store.commit("s/1"), store.commit("x"), store.commit("s")]; // committed, not yet published
    const first = await store.next(); // sees 1 and 3
    const late = store.commit("s/2"); // committed after the snapshot
    first.answer();
    await settle();
    hub.publish([...pending, late]); // the feed catches up: 1 and 3 again, then 4
    await settle();
    expect(ids).toEqual([1, 3, 4]);
    subscription.close();
    await done;
  });

  it("an event matching two of the subjects is buffered once and does not overflow a buffer of one", async () => {
    const store = new ManualStore();
    const { hub, metrics } = manualHub(store, { "client-buffer-size": "1" });
    const subscription = hub.subscribe({
      filter: { subjects: ["a", "a/b"], recursive: true, type: undefined },
      fromId: 0,
    });
    const ids: number[] = [];
    const done = drain(subscription, ids);
    (await store.next()).answer(); // nothing stored: live
    await settle();
    hub.publish([store.commit("a/b/c")]);
    await settle();
    expect(ids).toEqual([1]);
    expect((await metrics.streamOverflows.get()).values[0]?.value ?? 0).toBe(0);
    subscription.close();
    await done;
  });

  it("a failed read is retried from the same cursor; events published meanwhile come once, after it", async () => {
    const store = new ManualStore();
    const { hub } = manualHub(store, { "client-buffer-size": "2", "stream-batch-size": "1" });
    store.commit("s");
    store.commit("s");
    const subscription = hub.subscribe({
      filter: { subjects: ["s"], recursive: false, type: undefined },
      fromId: 0,
    });
    const ids: number[] = [];
    const done = drain(subscription, ids);
    (await store.next()).answer(); // page size 1: event 1, has more
    const failing = await store.next();
    expect(failing.query.fromId).toBe(1);
    failing.fail();
    await settle();
    for (let i = 0; i < 3; i++) hub.publish([store.commit("s")]); // wakes the back-off; 3, 4 buffered, 5 overflows
    const retry = await store.next();
    expect(retry.query.fromId).toBe(1);
    retry.answer();
    for (;;) {
      await settle();
      const call = store.calls.shift();
      if (call === undefined) break;
      call.answer();
    }
    expect(ids).toEqual([1, 2, 3, 4, 5]);
    subscription.close();
    await done;
  });
});
