import { afterEach, describe, expect, it, vi } from "vitest";
import type { NewEvent, Page, StoredEvent } from "../../../src/events/event.js";
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

describe("watches for other processes' commits", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A feed over a fake store whose last committed id the test sets; counts looks and page reads. */
  function watched(options: { listening: boolean; lastCommitted?: () => Promise<number> }) {
    const state = { end: 0, looks: 0, pages: 0, published: [] as number[], errors: 0 };
    const feed = new CommitFeed({
      lastId: 0,
      page: async (query): Promise<Page> => {
        state.pages++;
        const ids = [];
        for (let id = query.fromId + 1; id <= state.end && ids.length < query.limit; id++) ids.push(id);
        const events = ids.map((id) => ({ ...stored(id) }));
        return {
          events,
          hasMore: (ids.at(-1) ?? state.end) < state.end,
          nextFromId: ids.at(-1) ?? query.fromId,
        };
      },
      lastCommitted:
        options.lastCommitted ??
        (async () => {
          state.looks++;
          return state.end;
        }),
      publish: (events) => state.published.push(...events.map((e) => e.id)),
      listening: () => options.listening,
      pollMs: 50,
      pollMinMs: 5,
      onError: () => {
        state.errors++;
      },
    });
    return { feed, state };
  }

  it("looks once per --store-poll-ms while nothing moves, every --store-poll-min-ms right after a move", async () => {
    vi.useFakeTimers();
    const { feed, state } = watched({ listening: true });
    try {
      await vi.advanceTimersByTimeAsync(1000);
      expect(state.looks).toBe(20);
      expect(state.pages).toBe(0);
      state.end = 3;
      await vi.advanceTimersByTimeAsync(50);
      expect(state.published).toEqual([1, 2, 3]);
      // Right after the move: 5, 10, 20 ms apart, then back to 50.
      const before = state.looks;
      await vi.advanceTimersByTimeAsync(5);
      expect(state.looks).toBe(before + 1);
      await vi.advanceTimersByTimeAsync(10);
      expect(state.looks).toBe(before + 2);
      await vi.advanceTimersByTimeAsync(20 + 40 + 50);
      expect(state.looks).toBe(before + 5);
    } finally {
      feed.close();
    }
  });

  it("reads nothing others appended while nobody listens: its cursor jumps to the end", async () => {
    vi.useFakeTimers();
    const { feed, state } = watched({ listening: false });
    try {
      state.end = 200_000;
      await vi.advanceTimersByTimeAsync(100);
      expect(state.pages).toBe(0);
      // The next local commit follows the jump: no hole to read before it.
      await feed.committed([stored(200_001)]);
      expect(state.pages).toBe(0);
      expect(state.published).toEqual([200_001]);
    } finally {
      feed.close();
    }
  });

  it("waits for a frozen store with one look instead of piling them up, and goes on when it thaws", async () => {
    vi.useFakeTimers();
    let thaw = () => {};
    const frozen = new Promise<void>((resolve) => {
      thaw = resolve;
    });
    let looks = 0;
    const { feed } = watched({
      listening: true,
      lastCommitted: async () => {
        looks++;
        if (looks === 1) await frozen;
        return 0;
      },
    });
    try {
      await vi.advanceTimersByTimeAsync(10_000);
      expect(looks).toBe(1);
      thaw();
      for (let i = 0; i < 20; i++) await Promise.resolve();
      expect(looks).toBe(1);
      await vi.advanceTimersByTimeAsync(50);
      expect(looks).toBe(2);
    } finally {
      feed.close();
    }
  });

  it("a failed look is reported and the feed keeps looking", async () => {
    vi.useFakeTimers();
    let looks = 0;
    const { feed, state } = watched({
      listening: true,
      lastCommitted: async () => {
        looks++;
        if (looks <= 2) throw new Error("store unreachable");
        return 0;
      },
    });
    try {
      await vi.advanceTimersByTimeAsync(200);
      expect(state.errors).toBe(2);
      expect(looks).toBe(4);
    } finally {
      feed.close();
    }
  });
});

function stored(id: number): StoredEvent {
  return {
    id,
    source: "s",
    type: "t",
    subject: "x",
    ceId: undefined,
    time: "2026-01-01T00:00:00.000000Z",
    datacontenttype: undefined,
    dataschema: undefined,
    extensions: undefined,
    data: Buffer.alloc(0),
  };
}
