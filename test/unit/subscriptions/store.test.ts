import { afterEach, describe, expect, it } from "vitest";
import type { EventLog } from "../../../src/events/event-log.js";
import { SubscriptionStore } from "../../../src/subscriptions/store.js";
import type { SubscriptionSpec } from "../../../src/subscriptions/types.js";
import { DIALECTS } from "../../support/dialects.js";
import { openTestStore } from "../../support/server.js";

/** The subscriptions table on both stores: the API's writes, and leases that fence deliverers. */

function spec(sink: string): SubscriptionSpec {
  return {
    source: undefined,
    types: undefined,
    config: { subject: "orders", recursive: true, type: undefined, window: 1 },
    filters: [{ prefix: { type: "com.example." } }],
    sink,
    sinkcredential: undefined,
    protocol: "HTTP",
    protocolsettings: { method: "POST", headers: {}, contentmode: "structured" },
    description: undefined,
  };
}

describe.each(DIALECTS)("subscription store on $name", (dialect) => {
  const open: EventLog[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });
  const newStores = async (count: number): Promise<SubscriptionStore[]> => {
    const url = await dialect.url();
    const stores: SubscriptionStore[] = [];
    for (let i = 0; i < count; i++) {
      const { store } = await openTestStore(url);
      open.push(store);
      stores.push(new SubscriptionStore(store.dialect));
    }
    return stores;
  };
  const create = (store: SubscriptionStore, id: string, owner = "alice") =>
    store.create({ id, spec: spec(`http://sink.test/${id}`), owner, ownerScopes: ["orders"], position: 7 });

  it("creates, reads, lists, updates and deletes", async () => {
    const [store] = await newStores(1);
    if (store === undefined) throw new Error("no store");
    const created = await create(store, "a");
    expect(created).toMatchObject({
      id: "a",
      owner: "alice",
      ownerScopes: ["orders"],
      position: 7,
      state: "active",
    });
    expect(created.spec).toEqual(spec("http://sink.test/a"));
    expect(created.generation).toBe(1);
    await create(store, "b", "bob");
    expect((await store.list()).map((s) => s.id)).toEqual(["a", "b"]);
    expect((await store.list("bob")).map((s) => s.id)).toEqual(["b"]);

    const updated = await store.update("a", {
      spec: spec("http://other.test/"),
      ownerScopes: ["*"],
      position: 3,
    });
    expect(updated).toMatchObject({ generation: 2, position: 3, ownerScopes: ["*"] });
    expect(updated?.spec.sink).toBe("http://other.test/");
    expect(await store.update("missing", { spec: spec("http://x.test/"), ownerScopes: [] })).toBeUndefined();

    expect(await store.delete("a")).toBe(true);
    expect(await store.delete("a")).toBe(false);
    expect(await store.get("a")).toBeUndefined();
  });

  it("leases each subscription to one claimer at a time; a lost lease writes nothing", async () => {
    const [one, two] = await newStores(2);
    if (one === undefined || two === undefined) throw new Error("no stores");
    for (const id of ["s1", "s2", "s3", "s4"]) await create(one, id);
    const [a, b] = await Promise.all([one.claim("p1", 60_000, 10), two.claim("p2", 60_000, 10)]);
    const ids = [...a, ...b].map((l) => l.subscription.id).sort();
    expect(ids).toEqual(["s1", "s2", "s3", "s4"]);
    expect(await one.claim("p3", 60_000, 10)).toEqual([]);

    const lease = [...a, ...b].find((l) => l.subscription.id === "s1");
    if (lease === undefined) throw new Error("s1 not leased");
    expect(await one.acknowledge(lease, 10)).toBe(true);
    expect(await one.acknowledge(lease, 9)).toBe(true); // never backwards
    expect((await one.get("s1"))?.position).toBe(10);
    expect(await one.renew([lease.token, "nope"], 60_000)).toEqual(new Set([lease.token]));

    // The lease expires (0 ms) and another process takes it over: the old holder is fenced off.
    await one.renew([lease.token], -1);
    const [taken] = (await two.claim("p2", 60_000, 10)).filter((l) => l.subscription.id === "s1");
    expect(taken?.subscription.position).toBe(10);
    expect(await one.acknowledge(lease, 11)).toBe(false);
    expect(await one.park(lease, "x", 11)).toBe(false);
    expect(await one.renew([lease.token], 60_000)).toEqual(new Set());
    expect((await one.get("s1"))?.lease?.holder).toBe("p2");
  });

  it("parks with the failing event and reason; redrive makes it claimable again", async () => {
    const [store] = await newStores(1);
    if (store === undefined) throw new Error("no store");
    await create(store, "p");
    const [lease] = await store.claim("me", 60_000, 1);
    if (lease === undefined) throw new Error("not leased");
    expect(await store.validated(lease, "http://sink.test/p", 120)).toBe(true);
    expect(await store.park(lease, "sink answered 500 eight times", 8)).toBe(true);
    const parked = await store.get("p");
    expect(parked).toMatchObject({ state: "parked", validatedRate: 120, lease: undefined });
    expect(parked?.parked).toMatchObject({ reason: "sink answered 500 eight times", eventId: 8 });
    expect(await store.claim("me", 60_000, 1)).toEqual([]);
    expect(await store.renew([lease.token], 60_000)).toEqual(new Set());
    expect(await store.parkedIds()).toEqual(["p"]);

    const redriven = await store.redrive("p");
    expect(redriven).toMatchObject({ state: "active", parked: undefined, generation: 2, position: 7 });
    expect(await store.parkedIds()).toEqual([]);
    const [again] = await store.claim("me", 60_000, 1);
    if (again === undefined) throw new Error("not leased again");
    expect(again.subscription.id).toBe("p");
    // Renewal reports the generation: a change by the API (here a PUT) shows up there.
    expect(await store.renewGenerations([again.token], 60_000)).toEqual(new Map([[again.token, 2]]));
    await store.update("p", { spec: spec("http://sink.test/p"), ownerScopes: [] });
    expect(await store.renewGenerations([again.token], 60_000)).toEqual(new Map([[again.token, 3]]));
    // A new sink needs a new handshake; the same sink keeps it.
    expect(
      (await store.update("p", { spec: spec("http://sink.test/p"), ownerScopes: [] }))?.validatedSink,
    ).toBe("http://sink.test/p");
    expect(
      (await store.update("p", { spec: spec("http://new.test/"), ownerScopes: [] }))?.validatedSink,
    ).toBeUndefined();
  });
});
