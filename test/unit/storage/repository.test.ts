import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { chainHash, GENESIS_HASH } from "../../../src/events/chain.js";
import type { NewEvent } from "../../../src/events/event.js";
import type { EventLog } from "../../../src/events/event-log.js";
import { loadMigrations, migrate } from "../../../src/storage/migrate.js";
import { openDialect } from "../../../src/storage/open.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

const event = newEvent;

/** A row as the dialect inserts it (what an older version of the server wrote). */
function row(dialect: ReturnType<typeof openDialect>, subject: string) {
  return {
    source: "old",
    type: "t",
    subject,
    ce_id: null,
    time: dialect.writeTime("2026-01-01T00:00:00.000000Z"),
    datacontenttype: null,
    dataschema: null,
    extensions: null,
    data: Buffer.alloc(0),
  };
}

describe.each(DIALECTS)("repository contract on $name", (dialect) => {
  const open: EventLog[] = [];
  const newStore = async (url?: string, flags: Record<string, string> = {}) => {
    const opened = await openTestStore(url ?? (await dialect.url()), flags);
    open.push(opened.store);
    return opened;
  };
  /**
   * Stores standing for separate writer processes on one database. better-sqlite3 is synchronous,
   * so two SQLite connections in one thread would wait on each other's lock until busy_timeout;
   * on SQLite the "processes" share one store (concurrent callers of one writer) instead.
   */
  const writerStores = async (count: number): Promise<EventLog[]> => {
    const url = await dialect.url();
    if (dialect.name === "sqlite") {
      const { store } = await newStore(url);
      return Array.from({ length: count }, () => store);
    }
    return Promise.all(Array.from({ length: count }, async () => (await newStore(url)).store));
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it("applies migrations once, also when two runners race", async () => {
    const url = await dialect.url();
    const config = loadConfig({}, { "database-url": url });
    const a = openDialect(config.store, config.dbTimeoutMs);
    const b = openDialect(config.store, config.dbTimeoutMs);
    try {
      const [first, second] = await Promise.all([migrate(a), migrate(b)]);
      // Every migration of the dialect exactly once (listed from sql/<dialect>/).
      const names = (await loadMigrations(a.name)).map((m) => m.name);
      expect(names.slice(0, 3)).toEqual(["001_events", "002_event_sequence", "003_sessions"]);
      expect([...first, ...second].sort()).toEqual(names);
      expect(await migrate(a)).toEqual([]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("stores every attribute and gives it back unchanged", async () => {
    const { store } = await newStore();
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const [result] = await store.append([
      event("tëst/ünïcode/😀", {
        ceId: "ce-1",
        time: "2026-01-02T03:04:05.123456Z",
        datacontenttype: "application/octet-stream",
        dataschema: "https://example.com/schema",
        extensions: { traceparent: "00-abc", count: 42, flag: true },
        data: bytes,
      }),
    ]);
    expect(result).toEqual({ id: 1, created: true });
    const stored = await store.get(1);
    const content = {
      id: 1,
      source: "test",
      type: "test.created",
      subject: "tëst/ünïcode/😀",
      ceId: "ce-1",
      time: "2026-01-02T03:04:05.123456Z",
      datacontenttype: "application/octet-stream",
      dataschema: "https://example.com/schema",
      extensions: { count: 42, flag: true, traceparent: "00-abc" },
      data: bytes,
    };
    // Read back with its place in the chain: the first event, hashed onto the genesis hash.
    expect(stored).toEqual({ ...content, prevHash: GENESIS_HASH, hash: chainHash(1, GENESIS_HASH, content) });
    await expect(store.get(2)).rejects.toMatchObject({ code: "not_found" });
  });

  it("gives the server time to events without one", async () => {
    const { store } = await newStore();
    const before = new Date().toISOString();
    await store.append([event("a")]);
    const stored = await store.get(1);
    expect(stored.time >= before.slice(0, 19)).toBe(true);
    expect(stored.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
  });

  it("pages by keyset with has_more and next_from_id", async () => {
    const { store } = await newStore();
    await store.append(Array.from({ length: 25 }, (_, i) => event(i % 2 === 0 ? "even" : "odd")));
    const all = { subjects: [], recursive: false, type: undefined };
    const first = await store.page({ ...all, fromId: 0, limit: 10 });
    expect(first.events.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(first).toMatchObject({ hasMore: true, nextFromId: 10 });
    const last = await store.page({ ...all, fromId: 20, limit: 10 });
    expect(last.events.map((e) => e.id)).toEqual([21, 22, 23, 24, 25]);
    expect(last).toMatchObject({ hasMore: false, nextFromId: 25 });
    const exact = await store.page({ ...all, fromId: 15, limit: 10 });
    expect(exact).toMatchObject({ hasMore: false, nextFromId: 25 });
    const empty = await store.page({ ...all, fromId: 25, limit: 10 });
    expect(empty).toMatchObject({ events: [], hasMore: false, nextFromId: 25 });
    const odd = await store.page({ ...all, subjects: ["odd"], fromId: 0, limit: 100 });
    expect(odd.events.map((e) => e.id)).toEqual([2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24]);
    await expect(store.page({ ...all, fromId: 0, limit: 0 })).rejects.toMatchObject({
      code: "invalid_argument",
    });
    await expect(store.page({ ...all, fromId: 0, limit: 1001 })).rejects.toMatchObject({
      code: "invalid_argument",
    });
  });

  // Regression (issue 10, items 6 and 15): pages were bounded in events only, so a page of 1000
  // events of 1 MiB was read, held and answered whole.
  it("bounds a page in bytes: the first event always, has_more at the budget, every event once when paging on", async () => {
    const budget = 10_000;
    const { store } = await newStore(undefined, { "client-buffer-bytes": String(budget) });
    const sized = (subject: string, bytes: number, extensions?: Record<string, string>) =>
      event(subject, { data: Buffer.alloc(bytes, 1), ...(extensions === undefined ? {} : { extensions }) });
    // Sizes in bytes of data (and extensions, which count too).
    const plan: [string, number, Record<string, string>?][] = [
      ["b/1", 3000],
      ["b/2", 3000],
      ["b", 3000],
      ["b/1", 3000],
      ["b", 25_000], // larger than the whole budget: a page of its own
      ["b/1", 10],
      ["b", 10, { big: "x".repeat(9_990) }], // 10 bytes of data, but ~10 KB with its extension
      ["b", 10],
    ];
    const ids = (await store.append(plan.map(([s, n, x]) => sized(s, n, x)))).map((r) => r.id);
    const pages = async (filter: { subjects: string[]; recursive: boolean }, expected: number[]) => {
      const seen: number[][] = [];
      for (let fromId = 0; ; ) {
        const page = await store.page({ ...filter, type: undefined, fromId, limit: 1000 });
        seen.push(page.events.map((e) => e.id));
        const bytes = page.events.reduce((n, e) => n + e.data.length, 0);
        if (page.events.length > 1) expect(bytes).toBeLessThanOrEqual(budget);
        expect(page.events.length).toBeGreaterThan(0);
        if (!page.hasMore) break;
        expect(page.nextFromId).toBe(page.events.at(-1)?.id);
        fromId = page.nextFromId;
      }
      expect(seen.flat()).toEqual(expected);
      return seen;
    };
    // The three query shapes: one subject (MariaDB's index hint), recursive, all subjects.
    const [a, b, c, d, e, f, g, h] = ids as [number, number, number, number, number, number, number, number];
    expect(await pages({ subjects: [], recursive: false }, ids)).toEqual([
      [a, b, c],
      [d],
      [e],
      [f],
      [g],
      [h],
    ]);
    expect(await pages({ subjects: ["b"], recursive: true }, ids)).toEqual([
      [a, b, c],
      [d],
      [e],
      [f],
      [g],
      [h],
    ]);
    expect(await pages({ subjects: ["b"], recursive: false }, [c, e, g, h])).toEqual([[c], [e], [g], [h]]);
    // The event count still bounds a page, and a caller may ask for fewer bytes, never more.
    expect(
      (await store.page({ subjects: ["b/1"], recursive: false, type: undefined, fromId: 0, limit: 1 }))
        .events,
    ).toHaveLength(1);
    const small = await store.page({
      subjects: [],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 10,
      maxBytes: 5000,
    });
    expect(small).toMatchObject({ hasMore: true, nextFromId: a });
    const large = await store.page({
      subjects: [],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 10,
      maxBytes: 10 ** 9,
    });
    expect(large.events.map((x) => x.id)).toEqual([a, b, c]);
  });

  it("weighs events stored before the event_size migration (the migration fills it in)", async () => {
    const url = await dialect.url();
    const config = loadConfig({}, { "database-url": url });
    const db = openDialect(config.store, config.dbTimeoutMs);
    try {
      await migrate(db);
      // As a database migrated by an older version: no event_size column, rows inserted without it.
      await db.runScript(
        dialect.name === "mysql"
          ? "ALTER TABLE events DROP INDEX events_subject_id, DROP COLUMN event_size, ADD INDEX events_subject_id (subject, id);"
          : "ALTER TABLE events DROP COLUMN event_size;",
      );
      await db.db.deleteFrom("eventsdb_migrations").where("name", "=", "006_event_size").execute();
      await db.db
        .insertInto("events")
        .values([
          { ...row(db, "old"), id: 1, data: Buffer.alloc(700, 1) },
          { ...row(db, "old"), id: 2, data: Buffer.alloc(20, 1), extensions: JSON.stringify({ ext: "v" }) },
        ])
        .execute();
      expect(await migrate(db)).toEqual(["006_event_size"]);
      const sizes = await db.db.selectFrom("events").select(["id", "event_size"]).orderBy("id").execute();
      expect(sizes.map((r) => Number(r.event_size))).toEqual([700, 20 + '{"ext":"v"}'.length]);
    } finally {
      await db.close();
    }
  });

  it("matches recursive subjects by path segment, with %, _ and \\ as plain characters", async () => {
    const { store } = await newStore();
    const subjects = [
      "orders",
      "orders/1",
      "orders/1/lines",
      "orders-archive",
      "orders1",
      "order",
      "a%b",
      "axb",
      "a%b/c",
      "a_b",
      "aXb",
      "a\\b",
      "a\\b/c",
      "Orders/2",
    ];
    await store.append(subjects.map((s) => event(s)));
    const read = async (subject: string, recursive: boolean) =>
      (
        await store.page({ subjects: [subject], recursive, type: undefined, fromId: 0, limit: 100 })
      ).events.map((e) => e.subject);
    expect(await read("orders", true)).toEqual(["orders", "orders/1", "orders/1/lines"]);
    expect(await read("orders", false)).toEqual(["orders"]);
    expect(await read("orders/1", true)).toEqual(["orders/1", "orders/1/lines"]);
    expect(await read("a%b", true)).toEqual(["a%b", "a%b/c"]);
    expect(await read("a_b", true)).toEqual(["a_b"]);
    expect(await read("a\\b", true)).toEqual(["a\\b", "a\\b/c"]);
    expect(await read("Orders", true)).toEqual(["Orders/2"]);
    expect(await read("ord", true)).toEqual([]);
  });

  it("filters by type", async () => {
    const { store } = await newStore();
    await store.append([
      event("s", { type: "created" }),
      event("s/x", { type: "deleted" }),
      event("s", { type: "deleted" }),
      event("t", { type: "deleted" }),
    ]);
    const page = await store.page({
      subjects: ["s"],
      recursive: true,
      type: "deleted",
      fromId: 0,
      limit: 10,
    });
    expect(page.events.map((e) => e.id)).toEqual([2, 3]);
    const anySubject = await store.page({
      subjects: [],
      recursive: false,
      type: "deleted",
      fromId: 0,
      limit: 10,
    });
    expect(anySubject.events.map((e) => e.id)).toEqual([2, 3, 4]);
  });

  it("lists subjects by plain prefix", async () => {
    const { store } = await newStore();
    await store.append(["b/1", "a/2", "a/1", "a%", "ab", "a/1", "c"].map((s) => event(s)));
    expect(await store.subjects("")).toEqual(["a%", "a/1", "a/2", "ab", "b/1", "c"]);
    expect(await store.subjects("a/")).toEqual(["a/1", "a/2"]);
    expect(await store.subjects("a%")).toEqual(["a%"]);
    expect(await store.subjects("z")).toEqual([]);
  });

  it("stores events without a subject as '' and reads them only over all subjects", async () => {
    const url = await dialect.url();
    const { store } = await newStore(url);
    const ids = (await store.append([event(undefined), event("a"), event("a/1"), event(undefined)])).map(
      (r) => r.id,
    );
    const [none1, a, a1, none2] = ids as [number, number, number, number];
    expect((await store.get(none1)).subject).toBeUndefined();
    expect((await store.get(a)).subject).toBe("a");
    const page = (subjects: string[], recursive: boolean) =>
      store.page({ subjects, recursive, type: undefined, fromId: 0, limit: 100 }).then((p) => p.events);
    const all = await page([], false);
    expect(all.map((e) => e.id)).toEqual([none1, a, a1, none2]);
    expect(all.map((e) => e.subject)).toEqual([undefined, "a", "a/1", undefined]);
    expect((await page(["a"], true)).map((e) => e.id)).toEqual([a, a1]);
    expect((await page(["a"], false)).map((e) => e.id)).toEqual([a]);
    // A byte-bounded page reads the same rows (the subject index path and the general one).
    const bounded = await store.page({
      subjects: [],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 100,
      maxBytes: 1,
    });
    expect(bounded.events.map((e) => e.id)).toEqual([none1]);
    expect(await store.subjects("")).toEqual(["a", "a/1"]);
    expect(await store.subjects("a")).toEqual(["a", "a/1"]);
    // The stored value, as an older eventsdb on the same database reads it: the subject ''.
    const config = loadConfig({}, { "database-url": url });
    const db = openDialect(config.store, config.dbTimeoutMs);
    try {
      const rows = await db.db.selectFrom("events").select(["id", "subject"]).orderBy("id").execute();
      expect(rows.map((r) => r.subject)).toEqual(["", "a", "a/1", ""]);
    } finally {
      await db.close();
    }
  });

  it("deletes by subject, type and from_id, and never reuses ids", async () => {
    const { store } = await newStore();
    await store.append(["x", "x/1", "x", "y", "x"].map((s) => event(s)));
    const filter = { subjects: ["x"], recursive: true, type: undefined };
    expect(await store.delete(filter, 2)).toBe(2); // ids 3 and 5
    const left = await store.page({
      subjects: [],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 10,
    });
    expect(left.events.map((e) => e.id)).toEqual([1, 2, 4]);
    await expect(store.delete({ subjects: [], recursive: false, type: undefined }, 0)).rejects.toMatchObject({
      code: "invalid_argument",
    });
    const [next] = await store.append([event("x")]);
    expect(next?.id).toBe(6);
  });

  it("is idempotent on (source, id): across calls and inside one batch", async () => {
    const { store } = await newStore();
    const results = await store.append([
      event("s", { ceId: "1" }),
      event("s", { ceId: "2" }),
      event("s", { ceId: "1" }),
      event("s", { ceId: "1", source: "other" }),
      event("s"),
    ]);
    expect(results).toEqual([
      { id: 1, created: true },
      { id: 2, created: true },
      { id: 1, created: false },
      { id: 3, created: true },
      { id: 4, created: true },
    ]);
    const again = await store.append([event("s", { ceId: "2" }), event("s", { ceId: "3" })]);
    expect(again).toEqual([
      { id: 2, created: false },
      { id: 5, created: true },
    ]);
    const page = await store.page({
      subjects: ["s"],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 100,
    });
    expect(page.events).toHaveLength(5);
  });

  it("stores one event when two processes append the same (source, id) at once", async () => {
    const [a, b] = (await writerStores(2)) as [EventLog, EventLog];
    for (let round = 0; round < 10; round++) {
      const [ra, rb] = await Promise.all([
        a.append([event("race", { ceId: `k${round}` })]),
        b.append([event("race", { ceId: `k${round}` })]),
      ]);
      expect(ra[0]?.id).toBe(rb[0]?.id);
      expect([ra[0]?.created, rb[0]?.created].filter(Boolean)).toHaveLength(1);
    }
    const page = await a.page({
      subjects: ["race"],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 100,
    });
    expect(page.events).toHaveLength(10);
  });

  it("maps every id to its row with several concurrent writer processes", async () => {
    const writers = await writerStores(4);
    const sent = new Map<number, string>();
    await Promise.all(
      writers.map(async (store, w) => {
        let lastId = 0;
        for (let batch = 0; batch < 15; batch++) {
          const events = Array.from({ length: 1 + ((batch * 7) % 40) }, (_, i) =>
            event(`w${w}`, { data: Buffer.from(`w${w}-b${batch}-e${i}`) }),
          );
          const results = await store.append(events);
          results.forEach((r, i) => {
            expect(r.id).toBeGreaterThan(lastId); // increasing within one writer, in commit order
            lastId = r.id;
            sent.set(r.id, (events[i] as NewEvent).data.toString());
          });
        }
      }),
    );
    const reader = writers[0] as EventLog;
    let fromId = 0;
    const seen = new Map<number, string>();
    for (;;) {
      const page = await reader.page({
        subjects: [],
        recursive: false,
        type: undefined,
        fromId,
        limit: 1000,
      });
      for (const e of page.events) seen.set(e.id, e.data.toString());
      fromId = page.nextFromId;
      if (!page.hasMore) break;
    }
    expect(seen).toEqual(sent);
  });
});
