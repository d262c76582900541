import { afterEach, describe, expect, it } from "vitest";
import type { NewEvent, StoredEvent } from "../../../src/events/event.js";
import type { EventLog } from "../../../src/events/event-log.js";
import { Writer } from "../../../src/events/writer.js";
import { Metrics } from "../../../src/metrics.js";
import type { EventRepository } from "../../../src/storage/repository.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

function event(subject: string, data = "x", ceId?: string): NewEvent {
  return newEvent(subject, { source: "w", type: "t", ceId, data: Buffer.from(data) });
}

async function transactions(metrics: Metrics): Promise<{ count: number; sum: number }> {
  const { values } = await metrics.writerBatchEvents.get();
  const pick = (suffix: string) => values.find((v) => v.metricName?.endsWith(suffix))?.value ?? 0;
  return { count: pick("_count"), sum: pick("_sum") };
}

describe.each(DIALECTS)("group-commit writer on $name", (dialect) => {
  const open: EventLog[] = [];
  const newStore = async (flags: Record<string, string> = {}) => {
    const opened = await openTestStore(await dialect.url(), flags);
    open.push(opened.store);
    return opened;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it("coalesces concurrent appends into few transactions and answers each with its own ids", async () => {
    const { store, metrics } = await newStore();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => store.append([event(`c/${i}`, `d${i}`)])),
    );
    for (const [i, [result]] of results.entries()) {
      expect((await store.get(result?.id as number)).data.toString()).toBe(`d${i}`);
    }
    const { count, sum } = await transactions(metrics);
    expect(sum).toBe(50);
    expect(count).toBeLessThan(50);
  });

  it("never splits a request's batch and respects --commit-events", async () => {
    const { store, metrics } = await newStore({ "commit-events": "10" });
    await Promise.all(
      Array.from({ length: 5 }, (_, j) => store.append([1, 2, 3, 4].map((i) => event(`b/${j}/${i}`)))),
    );
    // Appends of one tick share transactions: whole batches of 4, 8 at most under the cap of 10.
    expect(await transactions(metrics)).toEqual({ count: 3, sum: 20 });
  });

  it("splits a burst that finds the writer idle in two commits when commits leave the loop free", async () => {
    const { store, metrics } = await newStore();
    await Promise.all(Array.from({ length: 16 }, (_, i) => store.append([event(`burst/${i}`)])));
    // MySQL: half now, half while the first half is answered (no lockstep); SQLite's commit
    // blocks the loop, so there is nothing to overlap and the burst stays one transaction.
    expect(await transactions(metrics)).toEqual(
      dialect.name === "mysql" ? { count: 2, sum: 16 } : { count: 1, sum: 16 },
    );
    // Fewer appends than BURST_JOBS stay together on both.
    await Promise.all(Array.from({ length: 7 }, (_, i) => store.append([event(`small/${i}`)])));
    expect(await transactions(metrics)).toEqual(
      dialect.name === "mysql" ? { count: 3, sum: 23 } : { count: 2, sum: 23 },
    );
  });

  it("fails fast with resource_exhausted when the queue is full, and stores only what it acknowledged", async () => {
    const { store, metrics } = await newStore({ "write-queue-events": "3", "max-batch-events": "3" });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => store.append([event(`q/${i}`)])),
    );
    const accepted = outcomes.filter((o) => o.status === "fulfilled");
    const rejected = outcomes.filter((o) => o.status === "rejected");
    expect(accepted).toHaveLength(3);
    for (const r of rejected) {
      expect(r.reason).toMatchObject({ code: "resource_exhausted", retryAfterSeconds: 1 });
    }
    const page = await store.page({
      subjects: ["q"],
      recursive: true,
      type: undefined,
      fromId: 0,
      limit: 100,
    });
    expect(page.events).toHaveLength(3);
    expect((await metrics.writerRejected.get()).values[0]?.value).toBe(7);
  });

  it("bounds the queue in bytes too", async () => {
    const { store } = await newStore({ "write-queue-bytes": "100", "max-event-bytes": "100" });
    const outcomes = await Promise.allSettled([
      store.append([event("bytes", "a".repeat(60))]),
      store.append([event("bytes", "b".repeat(60))]),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected"]);
  });

  it("publishes created events after COMMIT, in id order, and never a duplicate", async () => {
    const { store } = await newStore();
    const published: StoredEvent[] = [];
    store.onCommitted((events) => published.push(...events));
    await Promise.all([
      store.append([event("p", "1", "k1"), event("p", "2")]),
      store.append([event("p", "3", "k1"), event("p", "4")]),
    ]);
    await store.append([event("p", "5", "k1")]);
    expect(published.map((e) => e.data.toString())).toEqual(["1", "2", "4"]);
    const ids = published.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    for (const e of published) expect((await store.get(e.id)).data).toEqual(e.data);
  });

  it("flushes queued appends on close, then refuses new ones", async () => {
    const { store } = await newStore();
    const pending = Promise.all(Array.from({ length: 20 }, (_, i) => store.append([event(`f/${i}`)])));
    const closing = store.close();
    const results = await pending;
    await closing;
    expect(results.flat()).toHaveLength(20);
    await expect(store.append([event("late")])).rejects.toMatchObject({ code: "unavailable" });
  });
});

describe.each(DIALECTS.filter((d) => d.name === "mysql"))("writer failures on $name", (dialect) => {
  it("fails only the job the database rejects, not the others of its group", async () => {
    const { store } = await openTestStore(await dialect.url());
    try {
      // Bypasses validation on purpose: MariaDB's strict mode refuses this DATETIME.
      const bad = { ...event("bad"), time: "0000-00-00T99:99:99.000000Z" };
      const outcomes = await Promise.allSettled([
        store.append([event("good/1")]),
        store.append([event("good/2")]),
        store.append([bad]),
        store.append([event("good/3")]),
      ]);
      expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
      expect((outcomes[2] as PromiseRejectedResult).reason).toMatchObject({ code: "unavailable" });
      const page = await store.page({
        subjects: ["good"],
        recursive: true,
        type: undefined,
        fromId: 0,
        limit: 10,
      });
      expect(page.events).toHaveLength(3);
    } finally {
      await store.close();
    }
  });
});

describe("a group commit that fails", () => {
  const config = { queueEvents: 1000, queueBytes: 1 << 20, commitEvents: 1000, commitBytes: 1 << 20 };
  /** A writer whose store fails every commit with `error` after `gate` resolves. */
  const failingWriter = (error: unknown, gate: Promise<void>) => {
    let commits = 0;
    const repository = {
      appendJobs: async () => {
        commits++;
        await gate;
        throw error;
      },
    } as unknown as EventRepository;
    const writer = new Writer(
      repository,
      config,
      new Metrics({ defaultMetrics: false }),
      async () => {},
      false,
    );
    return { writer, commits: () => commits };
  };

  it.each([
    [
      "a lost connection",
      Object.assign(new Error("lost"), { code: "PROTOCOL_CONNECTION_LOST", fatal: true }),
    ],
    ["a store that refuses the group", Object.assign(new Error("full"), { code: "SQLITE_FULL" })],
  ])("answers every caller of the group with unavailable on %s", async (_, error) => {
    let open = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const { writer } = failingWriter(error, gate);
    // The first append starts a commit; the other 15 queue behind it and form the next group.
    const first = writer.append([event("g/0")]);
    await new Promise((r) => setImmediate(r));
    const rest = Array.from({ length: 15 }, (_, i) => writer.append([event(`g/${i + 1}`)]));
    open();
    const outcomes = await Promise.allSettled([first, ...rest]);
    for (const outcome of outcomes) {
      expect(outcome.status).toBe("rejected");
      expect((outcome as PromiseRejectedResult).reason).toMatchObject({
        code: "unavailable",
        retryAfterSeconds: 1,
      });
    }
  });
});
