import { afterEach, describe, expect, it } from "vitest";
import type { Principal } from "../../../src/auth/tokens.js";
import type { NewEvent, Precondition } from "../../../src/events/event.js";
import { type EventLog, MAX_PRECONDITIONS } from "../../../src/events/event-log.js";
import type { Metrics } from "../../../src/metrics.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

/**
 * Preconditions (optimistic concurrency) as the store checks them, below the transports: each kind,
 * their combination, the exact subject, group commits and idempotent retries.
 */

function event(subject: string, ceId?: string): NewEvent {
  return newEvent(subject, { source: "pre", ceId });
}

const pristine = (subject: string): Precondition => ({ kind: "pristine", subject });
const populated = (subject: string): Precondition => ({ kind: "populated", subject });
const onEvent = (subject: string, id: number): Precondition => ({ kind: "on_event", subject, id });

/** Group-commit transactions so far (the writer's batch histogram counts one per commit). */
async function commits(metrics: Metrics): Promise<number> {
  const { values } = await metrics.writerBatchEvents.get();
  return values.find((v) => v.metricName?.endsWith("_count"))?.value ?? 0;
}

describe.each(DIALECTS)("preconditions on $name", (dialect) => {
  const open: EventLog[] = [];
  const newStore = async () => {
    const opened = await openTestStore(await dialect.url());
    open.push(opened.store);
    return opened;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });
  const ids = async (store: EventLog, subject: string) =>
    (
      await store.page({ subjects: [subject], recursive: false, type: undefined, fromId: 0, limit: 100 })
    ).events.map((e) => e.id);
  const failed = (message: string) => ({ code: "failed_precondition", message });

  it("pristine: passes on a subject without events, fails once it has one", async () => {
    const { store } = await newStore();
    const [first] = await store.append([event("orders/1")], undefined, [pristine("orders/1")]);
    await expect(store.append([event("orders/1")], undefined, [pristine("orders/1")])).rejects.toMatchObject(
      failed(`precondition failed: subject "orders/1" is not pristine (last event ${first?.id})`),
    );
    expect(await ids(store, "orders/1")).toEqual([first?.id]);
  });

  it("populated: fails on a subject without events, passes once it has one", async () => {
    const { store } = await newStore();
    await expect(store.append([event("orders/1")], undefined, [populated("orders/1")])).rejects.toMatchObject(
      failed('precondition failed: subject "orders/1" has no events'),
    );
    expect(await ids(store, "orders/1")).toEqual([]);
    await store.append([event("orders/1")]);
    await store.append([event("orders/1")], undefined, [populated("orders/1")]);
    expect(await ids(store, "orders/1")).toHaveLength(2);
  });

  it("on_event: passes on the subject's last event only", async () => {
    const { store } = await newStore();
    await expect(store.append([event("s")], undefined, [onEvent("s", 1)])).rejects.toMatchObject(
      failed('precondition failed: subject "s" has no events, not event 1'),
    );
    const [a, b] = await store.append([event("s"), event("s")]);
    // Another subject's later event does not move "s".
    await store.append([event("t")]);
    await expect(store.append([event("s")], undefined, [onEvent("s", a?.id ?? 0)])).rejects.toMatchObject(
      failed(`precondition failed: subject "s" is on event ${b?.id}, not ${a?.id}`),
    );
    const [c] = await store.append([event("s")], undefined, [onEvent("s", b?.id ?? 0)]);
    expect(await ids(store, "s")).toEqual([a?.id, b?.id, c?.id]);
  });

  it("takes the exact subject: events below it (a/b) do not make it (a) populated", async () => {
    const { store } = await newStore();
    const [below] = await store.append([event("a/b")]);
    await expect(store.append([event("a")], undefined, [populated("a")])).rejects.toMatchObject(
      failed('precondition failed: subject "a" has no events'),
    );
    await store.append([event("a")], undefined, [pristine("a")]);
    const [last] = await store.append([event("a/b")]);
    // "a" is on its own last event, whatever happens below it.
    const [a] = await store
      .page({ subjects: ["a"], recursive: false, type: undefined, fromId: 0, limit: 10 })
      .then((p) => p.events);
    expect(a?.id).toBeGreaterThan(below?.id ?? 0);
    expect(last?.id).toBeGreaterThan(a?.id ?? 0);
    await store.append([event("a")], undefined, [onEvent("a", a?.id ?? 0)]);
  });

  it("needs every precondition: one that fails stores nothing of the batch", async () => {
    const { store } = await newStore();
    const [x] = await store.append([event("x")]);
    const batch = [event("x"), event("y"), event("z")];
    await expect(
      store.append(batch, undefined, [onEvent("x", x?.id ?? 0), pristine("y"), populated("z")]),
    ).rejects.toMatchObject(failed('precondition failed: subject "z" has no events'));
    expect([await ids(store, "x"), await ids(store, "y"), await ids(store, "z")]).toEqual([[x?.id], [], []]);
    const stored = await store.append(batch, undefined, [
      onEvent("x", x?.id ?? 0),
      pristine("y"),
      pristine("z"),
    ]);
    expect(stored).toHaveLength(3);
  });

  it("checks subjects the batch does not write", async () => {
    const { store } = await newStore();
    // A projection of "cart/1" into "orders/1", valid only while the cart is on the event read.
    const [cart] = await store.append([event("cart/1")]);
    await store.append([event("orders/1"), event("audit")], undefined, [onEvent("cart/1", cart?.id ?? 0)]);
    await store.append([event("cart/1")]);
    await expect(
      store.append([event("orders/1")], undefined, [onEvent("cart/1", cart?.id ?? 0)]),
    ).rejects.toMatchObject({ code: "failed_precondition" });
    expect(await ids(store, "orders/1")).toHaveLength(1);
  });

  it("checks an empty batch alone", async () => {
    const { store } = await newStore();
    await expect(store.append([], undefined, [populated("s")])).rejects.toMatchObject(
      failed('precondition failed: subject "s" has no events'),
    );
    expect(await store.append([], undefined, [pristine("s")])).toEqual([]);
  });

  it("lets each job of a group commit see the jobs before it; a failing job fails alone", async () => {
    const { store, metrics } = await newStore();
    const before = await commits(metrics);
    // Issued together: one group commit (fewer than BURST_JOBS jobs, so not split).
    const outcomes = await Promise.allSettled([
      store.append([event("g")], undefined, [pristine("g")]),
      store.append([event("g")], undefined, [pristine("g")]),
      store.append([event("h")]),
      store.append([event("g")], undefined, [populated("g")]),
      store.append([event("i")], undefined, [pristine("i")]),
    ]);
    expect(await commits(metrics)).toBe(before + 1);
    expect(outcomes.map((o) => o.status)).toEqual([
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    const value = (i: number) => (outcomes[i] as PromiseFulfilledResult<{ id: number }[]>).value[0]?.id;
    expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject(
      failed(`precondition failed: subject "g" is not pristine (last event ${value(0)})`),
    );
    expect(await ids(store, "g")).toEqual([value(0), value(3)]);
    expect(await ids(store, "h")).toEqual([value(2)]);
    expect(await ids(store, "i")).toEqual([value(4)]);
    // Ids stay consecutive in commit order: the failed job took none.
    expect([value(0), value(2), value(3), value(4)]).toEqual([1, 2, 3, 4]);
  });

  it("checks on_event against an earlier job of the same group commit", async () => {
    const { store } = await newStore();
    const [first] = await store.append([event("k")]);
    const outcomes = await Promise.allSettled([
      store.append([event("k")], undefined, [onEvent("k", first?.id ?? 0)]),
      store.append([event("k")], undefined, [onEvent("k", first?.id ?? 0)]),
      store.append([event("k")], undefined, [onEvent("k", (first?.id ?? 0) + 1)]),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(await ids(store, "k")).toHaveLength(3);
  });

  it("answers a retry whose events are all stored with their ids, though the precondition no longer holds", async () => {
    const { store } = await newStore();
    const batch = [event("r", "r-1"), event("r", "r-2")];
    const stored = await store.append(batch, undefined, [pristine("r")]);
    const retry = await store.append(batch, undefined, [pristine("r")]);
    expect(retry).toEqual(stored.map((r) => ({ id: r.id, created: false })));
    // The same retry inside one group commit with its original.
    const again = [event("q", "q-1")];
    const [original, concurrent] = await Promise.all([
      store.append(again, undefined, [pristine("q")]),
      store.append(again, undefined, [pristine("q")]),
    ]);
    expect(concurrent).toEqual([{ id: original?.[0]?.id, created: false }]);
    expect(await ids(store, "r")).toEqual(stored.map((r) => r.id));
  });

  it("checks a retry with only some of its events stored, and stores the rest when they hold", async () => {
    const { store } = await newStore();
    const [one] = await store.append([event("p", "p-1")], undefined, [pristine("p")]);
    await expect(
      store.append([event("p", "p-1"), event("p", "p-2")], undefined, [pristine("p")]),
    ).rejects.toMatchObject({ code: "failed_precondition" });
    const results = await store.append([event("p", "p-1"), event("p", "p-2")], undefined, [
      onEvent("p", one?.id ?? 0),
    ]);
    expect(results[0]).toEqual({ id: one?.id, created: false });
    expect(results[1]?.created).toBe(true);
  });

  it("refuses malformed preconditions and those on subjects the token may not read", async () => {
    const { store } = await newStore();
    const bad: [Precondition, string][] = [
      [onEvent("s", 0), "id must be a positive integer"],
      [onEvent("s", 1.5), "id must be a positive integer"],
      [pristine(""), "subject must not be empty"],
      [populated("x".repeat(256)), "subject is longer than 255 characters"],
      [{ kind: "absent", subject: "s" } as unknown as Precondition, "kind must be one of"],
    ];
    for (const [precondition, message] of bad) {
      await expect(store.append([event("s")], undefined, [precondition])).rejects.toMatchObject({
        code: "invalid_argument",
        message: expect.stringContaining(message),
      });
    }
    const many = Array.from({ length: MAX_PRECONDITIONS + 1 }, (_, i) => pristine(`m/${i}`));
    await expect(store.append([event("s")], undefined, many)).rejects.toMatchObject({
      code: "invalid_argument",
    });
    const writerOnly: Principal = { name: "writer", read: ["s"], write: ["s", "w"] };
    await expect(store.append([event("w")], writerOnly, [pristine("elsewhere")])).rejects.toMatchObject({
      code: "permission_denied",
    });
    await store.append([event("w")], writerOnly, [pristine("s")]);
    expect(await ids(store, "s")).toEqual([]);
  });

  describe("checked from the subject heads a store knows, with another store on the same database", () => {
    // Two stores on one database stand for two processes: each knows the subjects' last events
    // from its own appends and must notice every append and delete of the other.
    const twoStores = async () => {
      const url = await dialect.url();
      const a = (await openTestStore(url)).store;
      const b = (await openTestStore(url)).store;
      open.push(a, b);
      return [a, b] as const;
    };

    it("notices the other store's append on the subject", async () => {
      const [a, b] = await twoStores();
      const [mine] = await a.append([event("cart")], undefined, [pristine("cart")]);
      const [theirs] = await b.append([event("cart")], undefined, [onEvent("cart", mine?.id as number)]);
      await expect(
        a.append([event("cart")], undefined, [onEvent("cart", mine?.id as number)]),
      ).rejects.toMatchObject(
        failed(`precondition failed: subject "cart" is on event ${theirs?.id}, not ${mine?.id}`),
      );
      const [next] = await a.append([event("cart")], undefined, [onEvent("cart", theirs?.id as number)]);
      expect(await ids(a, "cart")).toEqual([mine?.id, theirs?.id, next?.id]);
    });

    it("checks a precondition alone (no events) against the store, not only against what it knew", async () => {
      const [a, b] = await twoStores();
      const [mine] = await a.append([event("cart")], undefined, [pristine("cart")]);
      await a.append([], undefined, [onEvent("cart", mine?.id as number)]);
      const [theirs] = await b.append([event("cart")]);
      await expect(a.append([], undefined, [onEvent("cart", mine?.id as number)])).rejects.toMatchObject(
        failed(`precondition failed: subject "cart" is on event ${theirs?.id}, not ${mine?.id}`),
      );
    });

    it("notices the other store's append on another subject only as a change, not a failure", async () => {
      const [a, b] = await twoStores();
      const [mine] = await a.append([event("cart")], undefined, [pristine("cart")]);
      await b.append([event("other")]);
      const [next] = await a.append([event("cart")], undefined, [onEvent("cart", mine?.id as number)]);
      expect(await ids(a, "cart")).toEqual([mine?.id, next?.id]);
    });

    it("notices the other store's delete of the subject's last event", async () => {
      const [a, b] = await twoStores();
      const [first] = await a.append([event("cart")]);
      const [second] = await a.append([event("cart")], undefined, [onEvent("cart", first?.id as number)]);
      // b deletes the second event: the subject is back on the first.
      expect(
        await b.delete({ subjects: ["cart"], recursive: false, type: undefined }, first?.id as number),
      ).toBe(1);
      await expect(
        a.append([event("cart")], undefined, [onEvent("cart", second?.id as number)]),
      ).rejects.toMatchObject(
        failed(`precondition failed: subject "cart" is on event ${first?.id}, not ${second?.id}`),
      );
      await a.append([event("cart")], undefined, [onEvent("cart", first?.id as number)]);
    });

    it("notices its own delete", async () => {
      const [a] = await twoStores();
      const [first] = await a.append([event("cart")], undefined, [pristine("cart")]);
      await a.delete({ subjects: ["cart"], recursive: false, type: undefined }, 0);
      await expect(
        a.append([event("cart")], undefined, [onEvent("cart", first?.id as number)]),
      ).rejects.toMatchObject(
        failed(`precondition failed: subject "cart" has no events, not event ${first?.id}`),
      );
      await a.append([event("cart")], undefined, [pristine("cart")]);
    });
  });
});
