import { CompiledQuery } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { canRead, type Principal } from "../../../src/auth/tokens.js";
import { loadConfig } from "../../../src/config.js";
import type { EventLog, SubjectsRequest } from "../../../src/events/event-log.js";
import { openDialect } from "../../../src/storage/open.js";
import { subjectRanges, subjectsSelect } from "../../../src/storage/repository.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

/** Subjects that sort next to each other around `/`, spaces, prefixes and beyond the BMP. */
const TRICKY = [
  "a",
  "a ",
  "a!",
  "a-b",
  "a.b",
  "a/1",
  "a/1/x",
  "a/2",
  "a0",
  "ab",
  "b",
  "b/é",
  "c/x",
  "c/x/y",
  "c/xy",
  "é",
  "\u{1F600}/1",
  "z",
];

const reader = (...read: string[]): Principal => ({ name: "reader", read, write: [] });

/** Every page from the first, following nextAfter, at most `pages` of them. */
async function allPages(
  store: EventLog,
  request: Omit<SubjectsRequest, "after">,
  principal?: Principal,
): Promise<{ subjects: string[]; pages: number }> {
  const subjects: string[] = [];
  let after = "";
  for (let pages = 1; pages <= 1000; pages++) {
    const page = await store.subjectPage({ ...request, after }, principal);
    subjects.push(...page.subjects);
    if (!page.hasMore) {
      expect(page.nextAfter).toBe("");
      return { subjects, pages };
    }
    expect(page.subjects.length).toBe(request.limit);
    expect(page.nextAfter).toBe(page.subjects.at(-1));
    after = page.nextAfter;
  }
  throw new Error("paging did not end");
}

/** Code point order, as the stores sort. */
const sorted = (values: Iterable<string>) =>
  [...values].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));

describe.each(DIALECTS)("paged subjects on $name", (dialect) => {
  const open: EventLog[] = [];
  const newStore = async (url?: string) => {
    const { store } = await openTestStore(url ?? (await dialect.url()));
    open.push(store);
    return store;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  /** A store holding TRICKY (each twice) and an event without a subject. */
  const tricky = async () => {
    const store = await newStore();
    await store.append([...TRICKY, undefined, ...TRICKY].map((s) => newEvent(s)));
    return store;
  };

  it("pages cover every subject exactly once, in order, for every page size", async () => {
    const store = await tricky();
    const expected = sorted(TRICKY);
    expect(await store.subjects("")).toEqual(expected);
    for (const limit of [1, 2, 5, TRICKY.length - 1, TRICKY.length, 1000]) {
      const { subjects, pages } = await allPages(store, { prefix: "", limit });
      expect(subjects, `limit ${limit}`).toEqual(expected);
      expect(pages).toBe(Math.max(1, Math.ceil(expected.length / limit)));
    }
    // Without a limit: one page, everything (the unpaged list).
    expect(await store.subjectPage({ prefix: "", after: "" })).toEqual({
      subjects: expected,
      hasMore: false,
      nextAfter: "",
    });
    // A page from any subject, stored or not, starts right after it.
    expect((await store.subjectPage({ prefix: "", after: "a/1", limit: 2 })).subjects).toEqual([
      "a/1/x",
      "a/2",
    ]);
    expect((await store.subjectPage({ prefix: "", after: "a/10", limit: 1 })).subjects).toEqual(["a/2"]);
    expect(await store.subjectPage({ prefix: "", after: "\u{1F600}/1", limit: 5 })).toEqual({
      subjects: [],
      hasMore: false,
      nextAfter: "",
    });
  });

  it("pages with a prefix stay inside it", async () => {
    const store = await tricky();
    for (const prefix of ["a", "a/", "c/x", "é", "\u{1F600}", "nothing"]) {
      const expected = sorted(TRICKY.filter((s) => s.startsWith(prefix)));
      expect(await store.subjects(prefix), prefix).toEqual(expected);
      for (const limit of [1, 3]) {
        expect((await allPages(store, { prefix, limit })).subjects, `${prefix} by ${limit}`).toEqual(
          expected,
        );
      }
    }
    // `after` before the prefix starts at the prefix; after it, nothing.
    expect((await store.subjectPage({ prefix: "c/", after: "b", limit: 1 })).subjects).toEqual(["c/x"]);
    expect((await store.subjectPage({ prefix: "c/", after: "d", limit: 1 })).subjects).toEqual([]);
  });

  it("a narrow token's pages hold only readable subjects, full, and end when no readable one follows", async () => {
    const store = await tricky();
    const cases: Principal[] = [
      reader("a"),
      reader("c/x", "a/1"),
      reader("a", "a/1", "b/é"), // a/1 lies below a: listed once
      reader("z", "a "),
      reader("nothing-stored"),
      reader(),
      reader("*"),
    ];
    for (const principal of cases) {
      const expected = sorted(TRICKY.filter((s) => canRead(principal, s)));
      const label = principal.read.join(",");
      expect(await store.subjects("", principal), label).toEqual(expected);
      for (const limit of [1, 2]) {
        const { subjects, pages } = await allPages(store, { prefix: "", limit }, principal);
        expect(subjects, `${label} by ${limit}`).toEqual(expected);
        // Filtered in the query: every page but the last is full, and none is empty but a lone one.
        expect(pages, `${label} by ${limit}`).toBe(Math.max(1, Math.ceil(expected.length / limit)));
      }
      for (const prefix of ["a/", "c/x/"]) {
        const inPrefix = expected.filter((s) => s.startsWith(prefix));
        expect((await allPages(store, { prefix, limit: 1 }, principal)).subjects).toEqual(inPrefix);
      }
    }
  });

  it("refuses limits outside 1..1000 and overlong cursors", async () => {
    const store = await newStore();
    for (const limit of [0, -1, 1001, 1.5, Number.NaN]) {
      await expect(store.subjectPage({ prefix: "", after: "", limit })).rejects.toMatchObject({
        code: "invalid_argument",
      });
    }
    await expect(store.subjectPage({ prefix: "", after: "x".repeat(1025), limit: 1 })).rejects.toMatchObject({
      code: "invalid_argument",
    });
  });

  it("reads a page from the (subject, id) index, never scanning the table", async () => {
    const url = await dialect.url();
    const store = await newStore(url);
    // 300 subjects with 3 events each: a scan would read 900 rows.
    const subjects = Array.from({ length: 300 }, (_, i) => `s/${String(i).padStart(3, "0")}`);
    await store.append([...subjects, ...subjects, ...subjects].map((s) => newEvent(s)));
    const config = loadConfig({}, { "database-url": url });
    const db = openDialect(config.store, config.dbTimeoutMs);
    try {
      const [range] = subjectRanges({ prefix: "s/", after: "s/100", scopes: ["s"] }).filter((r) =>
        r.from.startsWith("s/"),
      );
      expect(range).toBeDefined();
      const compiled = subjectsSelect(db.db, range as NonNullable<typeof range>, 10).compile();
      const plan = async (prefix: string) =>
        (await db.db.executeQuery(CompiledQuery.raw(`${prefix} ${compiled.sql}`, [...compiled.parameters])))
          .rows;
      if (dialect.name === "sqlite") {
        const details = (await plan("EXPLAIN QUERY PLAN")).map((r) =>
          String((r as { detail: string }).detail),
        );
        // A SEARCH on the subject range of the covering index; no SCAN, no sort of its own.
        expect(details.join("\n")).toMatch(
          /SEARCH events USING COVERING INDEX events_subject_id \(subject>\? AND subject<\?\)/,
        );
        expect(details.join("\n")).not.toMatch(/SCAN|TEMP B-TREE/);
      } else {
        const [row] = (await plan("EXPLAIN")) as Record<string, unknown>[];
        expect(row).toMatchObject({ table: "events", type: "range", key: "events_subject_id" });
        expect(String(row?.Extra)).toMatch(/Using index/);
        expect(String(row?.Extra)).not.toMatch(/filesort|temporary/);
        // What the statement really read: about the page's subjects, not the 900 rows.
        const [analyzed] = (await plan("ANALYZE")) as Record<string, unknown>[];
        expect(Number(analyzed?.r_rows)).toBeLessThan(100);
      }
      expect(
        (await store.subjectPage({ prefix: "s/", after: "s/100", limit: 10 }, reader("s"))).subjects,
      ).toEqual(subjects.slice(101, 111));
    } finally {
      await db.close();
    }
  });
});
