import { afterEach, describe, expect, it, vi } from "vitest";
import type { EventLog } from "../../../src/events/event-log.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

/**
 * A new event with a CloudEvents id (structured mode, gRPC with an id) is appended without first
 * looking its (source, id) up: the unique index finds a stored one, and only then is the group
 * tried again with the lookup. Counted as the queries the store's own Kysely instance runs outside
 * the append transaction (on MySQL: the pool's round trips before the writer's one).
 */
describe.each(DIALECTS)("keyed appends without a lookup first on $name", (dialect) => {
  const open: EventLog[] = [];
  afterEach(async () => {
    vi.restoreAllMocks();
    await Promise.all(open.splice(0).map((s) => s.close()));
  });
  const newStore = async () => {
    const { store } = await openTestStore(await dialect.url());
    open.push(store);
    // Counted, not replaced: every query still runs against the real database.
    const queries = vi.spyOn(store.dialect.db, "executeQuery");
    return { store, queries };
  };

  it("reads nothing before appending a new keyed event; a retry still gets its stored id", async () => {
    const { store, queries } = await newStore();
    expect(await store.append([newEvent("k", { ceId: "a" })])).toEqual([{ id: 1, created: true }]);
    expect(await store.append([newEvent("k", { ceId: "b" }), newEvent("k")])).toEqual([
      { id: 2, created: true },
      { id: 3, created: true },
    ]);
    expect(queries).not.toHaveBeenCalled();
    // A retry: the INSERT is refused by the unique index, then the lookup answers it.
    expect(await store.append([newEvent("k", { ceId: "a" }), newEvent("k", { ceId: "c" })])).toEqual([
      { id: 1, created: false },
      { id: 4, created: true },
    ]);
    expect(queries).toHaveBeenCalled();
    const page = await store.page({
      subjects: ["k"],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 10,
    });
    expect(page.events.map((e) => [e.id, e.ceId])).toEqual([
      [1, "a"],
      [2, "b"],
      [3, undefined],
      [4, "c"],
    ]);
    // The chain runs on unbroken over the refused attempt.
    for (const [i, e] of page.events.entries()) {
      if (i > 0) expect(e.prevHash).toEqual(page.events[i - 1]?.hash);
    }
  });

  it("answers a retry of a job with preconditions by its stored id, preconditions unchecked", async () => {
    const { store } = await newStore();
    const pristine = [{ kind: "pristine", subject: "p" }] as const;
    expect(await store.append([newEvent("p", { ceId: "x" })], undefined, [...pristine])).toEqual([
      { id: 1, created: true },
    ]);
    // "p" is not pristine any more, but this is the same event again: its id, not a failure.
    expect(await store.append([newEvent("p", { ceId: "x" })], undefined, [...pristine])).toEqual([
      { id: 1, created: false },
    ]);
  });

  it("plans again when another writer appended since this one's last append: ids in order, one chain", async () => {
    const url = await dialect.url();
    const a = (await openTestStore(url)).store;
    open.push(a);
    const b = (await openTestStore(url)).store;
    open.push(b);
    // One after the other (SQLite's two handles share a thread: no lock waits), so each append
    // starts from a state the other writer has moved on from.
    const ids: number[] = [];
    for (let i = 0; i < 6; i++) {
      const writer = i % 2 === 0 ? a : b;
      const [result] = await writer.append([newEvent("w", { ceId: `w${i}` })]);
      ids.push(result?.id ?? 0);
    }
    expect(ids).toEqual([1, 2, 3, 4, 5, 6]);
    const page = await a.page({ subjects: ["w"], recursive: false, type: undefined, fromId: 0, limit: 10 });
    expect(page.events.map((e) => e.ceId)).toEqual(["w0", "w1", "w2", "w3", "w4", "w5"]);
    for (const [i, e] of page.events.entries()) {
      if (i > 0) expect(e.prevHash).toEqual(page.events[i - 1]?.hash);
    }
  });
});

describe("SQLite appends from the state this process left", () => {
  it("go in one synchronous transaction on cached statements, not through a Kysely transaction", async () => {
    const sqlite = DIALECTS.find((d) => d.name === "sqlite");
    if (sqlite === undefined) throw new Error("no SQLite dialect in DIALECTS");
    const { store } = await openTestStore(await sqlite.url());
    try {
      // The first append reads the state under the lock (this process left none yet).
      await store.append([newEvent("f")]);
      const transactions = vi.spyOn(store.dialect.db, "transaction");
      const results = await Promise.all(
        [1, 2, 3].map((i) => store.append([newEvent("f", { ceId: `f${i}` })])),
      );
      expect(results.flat().map((r) => r.id)).toEqual([2, 3, 4]);
      await store.append([newEvent("f")]);
      expect(transactions).not.toHaveBeenCalled();
      // A precondition is checked in the same transaction, from the subject heads this process knows.
      await store.append([newEvent("f")], undefined, [{ kind: "populated", subject: "f" }]);
      expect(transactions).not.toHaveBeenCalled();
      const page = await store.page({
        subjects: ["f"],
        recursive: false,
        type: undefined,
        fromId: 0,
        limit: 10,
      });
      expect(page.events.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6]);
    } finally {
      vi.restoreAllMocks();
      await store.close();
    }
  });
});
