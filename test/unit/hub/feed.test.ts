import { afterEach, describe, expect, it, vi } from "vitest";
import type { NewEvent, Page } from "../../../src/events/event.js";
import type { EventLog } from "../../../src/events/event-log.js";
import { CommitFeed } from "../../../src/hub/feed.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";
import { waitUntil } from "../../support/sse.js";

const event = (subject: string): NewEvent => newEvent(subject);

// Two stores on one database stand for two server processes; better-sqlite3 being synchronous,
// SQLite (one process per file) cannot play this in one thread, so this runs on MySQL.
describe.each(DIALECTS.filter((d) => d.name === "mysql"))(
  "live delivery across processes on $name",
  (dialect) => {
    const open: EventLog[] = [];
    afterEach(async () => {
      await Promise.all(open.splice(0).map((s) => s.close()));
    });

    it("streams events appended by another process, interleaved with local ones, in id order without gaps", async () => {
      const url = await dialect.url();
      const [a, b] = await Promise.all(
        [1, 2].map(async () => (await openTestStore(url, { "store-poll-ms": "50" })).store),
      );
      open.push(a as EventLog, b as EventLog);
      const storeA = a as EventLog;
      const storeB = b as EventLog;
      const subscription = storeA.subscribe({
        filter: { subjects: ["x"], recursive: true, type: undefined },
        fromId: 0,
        batchSize: 100,
      });
      const received: number[] = [];
      const reading = (async () => {
        for await (const batch of subscription) received.push(...batch.map((e) => e.id));
      })();

      const written: number[] = [];
      await Promise.all(
        [storeA, storeB, storeA, storeB].map(async (store, w) => {
          for (let i = 0; i < 40; i++) {
            const results = await store.append([event(`x/${w}/${i}`), event(`x/${w}/${i}/b`)]);
            written.push(...results.map((r) => r.id));
          }
        }),
      );
      written.sort((p, q) => p - q);
      await waitUntil(() => received.length >= written.length, "every event on the subscriber of A");
      expect(received).toEqual(written);

      // While A appends nothing, B's events still arrive (by polling).
      const [late] = await storeB.append([event("x/late")]);
      await waitUntil(() => received.at(-1) === late?.id, "B's event with A idle");
      subscription.close();
      await reading;
    });
  },
);

describe("polls for other processes' commits", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("skips a poll while one is running instead of queueing it behind a frozen store", async () => {
    vi.useFakeTimers();
    let thaw = () => {};
    const frozen = new Promise<void>((resolve) => {
      thaw = resolve;
    });
    let reads = 0;
    const feed = new CommitFeed({
      lastId: 0,
      page: async (): Promise<Page> => {
        reads++;
        await frozen;
        return { events: [], hasMore: false, nextFromId: 0 };
      },
      publish: () => {},
      listening: () => true,
      pollMs: 10,
      onError: () => {},
    });
    try {
      // A 10 s freeze: a thousand poll ticks while the first read waits.
      await vi.advanceTimersByTimeAsync(10_000);
      expect(reads).toBe(1);
      thaw();
      // Everything that was waiting runs now, without the clock moving.
      for (let i = 0; i < 20; i++) await Promise.resolve();
      expect(reads).toBe(1);
      await vi.advanceTimersByTimeAsync(10);
      expect(reads).toBe(2);
    } finally {
      feed.close();
    }
  });
});
