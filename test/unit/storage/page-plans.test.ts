import { CompiledQuery, type KyselyPlugin, type QueryId, type RootOperationNode } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import type { PageQuery, StoredEvent } from "../../../src/events/event.js";
import type { EventLog } from "../../../src/events/event-log.js";
import type { StorageDialect } from "../../../src/storage/dialect.js";
import { openDialect } from "../../../src/storage/open.js";
import { EventRepository } from "../../../src/storage/repository.js";
import { DIALECTS } from "../../support/dialects.js";
import { matchesSubjects, newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

const NOW = "2026-12-02T00:00:00.000000Z";

/** Rows read from `events` in a MariaDB ANALYZE FORMAT=JSON plan: each access's loops × rows. */
function rowsRead(plan: unknown): number {
  if (Array.isArray(plan)) return plan.reduce((sum: number, item) => sum + rowsRead(item), 0);
  if (plan === null || typeof plan !== "object") return 0;
  const node = plan as Record<string, unknown>;
  let sum = 0;
  if (node.table_name === "events") sum += Number(node.r_loops ?? 1) * Number(node.r_rows ?? 0);
  for (const value of Object.values(node)) sum += rowsRead(value);
  return sum;
}

/**
 * A repository whose statements are recorded as they run (a Kysely plugin on the dialect's
 * database), so a test can ask the engine how it ran each one.
 */
function recording(dialect: StorageDialect): { repository: EventRepository; statements: CompiledQuery[] } {
  const statements: CompiledQuery[] = [];
  const compiled = new Map<QueryId, CompiledQuery>();
  const executor = dialect.db.getExecutor();
  const plugin: KyselyPlugin = {
    transformQuery(args: { node: RootOperationNode; queryId: QueryId }) {
      compiled.set(args.queryId, executor.compileQuery(args.node, args.queryId));
      return args.node;
    },
    // Only what ran (MariaDB's estimate is compiled here but only EXPLAINed).
    async transformResult(args) {
      const statement = compiled.get(args.queryId);
      if (statement !== undefined) statements.push(statement);
      return args.result;
    },
  };
  return { repository: new EventRepository({ ...dialect, db: dialect.db.withPlugin(plugin) }), statements };
}

describe.each(DIALECTS)("page plans at scale on $name", (dialect) => {
  const open: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  /** A migrated store and its dialect, opened apart, with `subjects` appended in order (id 1, 2, …). */
  const storeWith = async (subjects: readonly (readonly [string, string])[], owner = open) => {
    const url = await dialect.url();
    const { store } = await openTestStore(url);
    owner.push(store as EventLog);
    const config = loadConfig({}, { "database-url": url });
    const db = openDialect(config.store, config.dbTimeoutMs);
    owner.push(db);
    const repository = new EventRepository(db);
    for (let at = 0; at < subjects.length; at += 500) {
      await repository.append(
        subjects.slice(at, at + 500).map(([subject, type]) => newEvent(subject, { type })),
        NOW,
      );
    }
    return db;
  };

  /**
   * `total` events: every `every`-th in a subtree `small` (spread over the ids), then 3 in 8 on a
   * hot subject (one of them of a rare type), the rest below `big`.
   */
  const scaleData = (total: number, every: number): [string, string][] => {
    const rows: [string, string][] = [];
    const small = ["small", "small/a", "small/b/c", "small/b"];
    for (let i = 0; i < total; i++) {
      if (i % every === every / 2)
        rows.push([small[Math.floor(i / every) % small.length] as string, "common"]);
      else if (i % 8 < 3) rows.push(["hot", i === 1601 ? "rare" : "common"]);
      else rows.push([`big/x${i % 50}`, i % 7 === 0 ? "other" : "common"]);
    }
    return rows;
  };

  /**
   * 20,000 events, `small` 1 % of them (200), shared by the plan tests: at this size MariaDB's
   * planner, left alone, walks the primary key for `small` (about 500 rows for a page of 5).
   */
  const LARGE = scaleData(20_000, 100);
  const shared: { close(): Promise<void> }[] = [];
  let large: Promise<StorageDialect> | undefined;
  const largeStore = () => {
    large ??= storeWith(LARGE, shared);
    return large;
  };
  // Loaded once before the tests, under the hook's longer timeout.
  beforeAll(async () => {
    await largeStore();
  });
  afterAll(async () => {
    await Promise.all(shared.splice(0).map((s) => s.close()));
  });

  /** What each statement a page ran read: rows on MariaDB, the plan's lines on SQLite. */
  const examine = async (db: StorageDialect, statements: readonly CompiledQuery[]) => {
    const selects = statements.filter((s) => /^\s*select/i.test(s.sql) && /\bevents\b/.test(s.sql));
    const found: { sql: string; rows: number; plan: string }[] = [];
    for (const statement of selects) {
      if (dialect.name === "sqlite") {
        const plan = await db.db.executeQuery(
          CompiledQuery.raw(`EXPLAIN QUERY PLAN ${statement.sql}`, [...statement.parameters]),
        );
        const lines = plan.rows.map((r) => String((r as { detail: string }).detail));
        found.push({ sql: statement.sql, rows: Number.NaN, plan: lines.join("\n") });
      } else {
        const result = await db.db.executeQuery(
          CompiledQuery.raw(`ANALYZE FORMAT=JSON ${statement.sql}`, [...statement.parameters]),
        );
        const json = JSON.parse(String(Object.values(result.rows[0] as object)[0]));
        found.push({ sql: statement.sql, rows: rowsRead(json), plan: JSON.stringify(json) });
      }
    }
    return found;
  };

  const page = (query: Partial<PageQuery>): PageQuery => ({
    subjects: [],
    recursive: false,
    type: undefined,
    fromId: 0,
    limit: 100,
    maxBytes: 1 << 20,
    ...query,
  });

  it("a rare type on a hot subject seeks (subject, type, id) instead of reading the subject", async () => {
    const db = await largeStore();
    const { repository, statements } = recording(db);
    const found = await repository.page(page({ subjects: ["hot"], type: "rare" }));
    expect(found.events.map((e) => [e.subject, e.type])).toEqual([["hot", "rare"]]);
    const examined = await examine(db, statements);
    expect(examined.length).toBeGreaterThan(0);
    for (const statement of examined) {
      if (dialect.name === "sqlite") {
        expect(statement.plan).toMatch(
          /USING (COVERING )?INDEX events_subject_type_id \(subject=\? AND type=\?/,
        );
      } else {
        expect(statement.plan).toMatch(/"key":"events_subject_type_id"/);
        // The 7,500 events of the subject are not read: only the one of the type.
        expect(statement.rows, statement.sql).toBeLessThan(10);
      }
    }
  });

  it("a recursive page reads a small subtree from the subject index and a large one in id order, never the table", async () => {
    const data = LARGE;
    const db = await largeStore();
    const cases: { subjects: string[]; type?: string; small: boolean }[] = [
      { subjects: ["small"], small: true },
      { subjects: ["small/b", "small/a"], small: true },
      { subjects: ["hot"], type: "rare", small: true },
      { subjects: ["small"], type: "common", small: true },
      { subjects: ["big"], small: false },
    ];
    for (const { subjects, type, small } of cases) {
      for (const fromId of [0, 10_000]) {
        const { repository, statements } = recording(db);
        const query = page({ subjects, recursive: true, type, fromId, limit: 5 });
        const found = await repository.page(query);
        const expected = data
          .map(([subject, t], i) => ({ id: i + 1, subject, type: t }))
          .filter(
            (e) =>
              e.id > fromId && matchesSubjects(query, e.subject) && (type === undefined || e.type === type),
          )
          .slice(0, 5)
          .map((e) => e.id);
        const label = `${subjects.join(",")} ${type ?? ""} from ${fromId}`;
        expect(
          found.events.map((e) => e.id),
          label,
        ).toEqual(expected);
        const examined = await examine(db, statements);
        expect(examined.length, label).toBeGreaterThan(0);
        if (dialect.name === "sqlite" && !small) {
          // The count that tells a large subtree stops at its bound; then the walk by rowid.
          expect(examined.map((s) => `${s.sql}\n${s.plan}`).join("\n"), label).toMatch(
            /INTEGER PRIMARY KEY \(rowid>\?\)/,
          );
        }
        for (const statement of examined) {
          if (dialect.name === "sqlite") {
            // A small subtree never walks the table by rowid; a large one is never sorted whole.
            if (small)
              expect(statement.plan, label).not.toMatch(/INTEGER PRIMARY KEY \(rowid>\?\)|SCAN events/);
            else expect(statement.plan, label).not.toMatch(/TEMP B-TREE/);
          } else {
            // The walk reads ~500 rows for `small`; the index read, 12,300 for `big`.
            expect(statement.rows, `${label}: ${statement.sql}`).toBeLessThan(300);
          }
        }
      }
    }
  });

  it("recursive pages through the subject index return what the filter matches, page by page", async () => {
    const db = await storeWith(scaleData(3200, 160));
    const repository = new EventRepository(db);
    // Delete some: tombstones are never read by a filter.
    await repository.delete({ subjects: ["small/a"], recursive: false, type: undefined }, 0);
    await repository.delete({ subjects: ["big/x3"], recursive: true, type: undefined }, 2000);
    const stored = await repository.page(page({ limit: 10_000, maxBytes: undefined }));
    const filters: Omit<PageQuery, "fromId" | "limit">[] = [
      { subjects: ["small"], recursive: true, type: undefined },
      { subjects: ["small", "small/b", "big/x7"], recursive: true, type: undefined },
      { subjects: ["small/b"], recursive: true, type: "common" },
      { subjects: ["big/x1", "hot"], recursive: true, type: "other" },
      { subjects: ["nothing"], recursive: true, type: undefined },
    ];
    for (const filter of filters) {
      const expected = stored.events
        .filter(
          (e: StoredEvent) =>
            matchesSubjects(filter, e.subject) && (filter.type === undefined || e.type === filter.type),
        )
        .map((e) => e.id);
      for (const [limit, maxBytes] of [
        [3, 1 << 20],
        [7, 40],
        [2, undefined],
      ] as const) {
        const read: number[] = [];
        let fromId = 0;
        for (let pages = 0; pages < 1000; pages++) {
          const found = await repository.page({ ...filter, fromId, limit, maxBytes });
          read.push(...found.events.map((e) => e.id));
          fromId = found.nextFromId;
          if (!found.hasMore) break;
        }
        expect(read, `${filter.subjects.join(",")} ${filter.type} by ${limit}/${maxBytes}`).toEqual(expected);
      }
    }
  });
});
