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
});
