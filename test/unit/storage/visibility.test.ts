import { afterEach, describe, expect, it } from "vitest";
import type { EventFilter } from "../../../src/events/event.js";
import type { EventLog } from "../../../src/events/event-log.js";
import { DIALECTS } from "../../support/dialects.js";
import { matchesSubjects, newEvent } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

// What every stream relies on: ids are handed out in commit order across processes, so a reader
// paging by id never sees an id appear behind its cursor. If one could (a later commit visible
// before an earlier one), a stream that paged past the hole would skip the earlier event for good.

const WRITERS = 4;
const BATCHES = 40;
/** undefined: events without a subject, seen only by the readers of all subjects. */
const SUBJECTS = ["v/a", "v/b", "v/c", undefined];

describe.each(DIALECTS)("commit visibility on $name", (dialect) => {
  const open: EventLog[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it("readers paging by id while several processes append never skip an id", async () => {
    const url = await dialect.url();
    // Separate stores are separate writer connections, as separate processes have. SQLite is one
    // process per file (better-sqlite3 is synchronous): there the writers share one store.
    const count = dialect.name === "mysql" ? WRITERS : 1;
    for (let i = 0; i < count; i++) open.push((await openTestStore(url)).store);
    const reader = open[0] as EventLog;

    let writing = true;
    const filters: EventFilter[] = [
      { subjects: [], recursive: false, type: undefined },
      { subjects: ["v"], recursive: true, type: undefined },
      ...SUBJECTS.flatMap((s) =>
        s === undefined ? [] : [{ subjects: [s], recursive: false, type: undefined }],
      ),
    ];
    const readers = filters.map(async (filter) => {
      const seen: number[] = [];
      let fromId = 0;
      let done = false;
      while (!done) {
        const last = !writing; // one more pass after the writers stopped reads to the end
        for (;;) {
          const page = await reader.page({ ...filter, fromId, limit: 7 });
          seen.push(...page.events.map((e) => e.id));
          fromId = page.nextFromId;
          if (!page.hasMore) break;
        }
        done = last;
        // Let the writers' turns come (with SQLite every query here resolves without I/O).
        await new Promise((resolve) => setImmediate(resolve));
      }
      return { filter, seen };
    });
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        const store = open[w % count] as EventLog;
        for (let b = 0; b < BATCHES; b++) {
          const size = 1 + ((w + b) % 3);
          await store.append(
            Array.from({ length: size }, (_, i) => newEvent(SUBJECTS[(w + b + i) % SUBJECTS.length])),
          );
        }
      }),
    );
    writing = false;

    const all = [];
    for (let fromId = 0; ; ) {
      const page = await reader.page({
        subjects: [],
        recursive: false,
        type: undefined,
        fromId,
        limit: 1000,
      });
      all.push(...page.events);
      fromId = page.nextFromId;
      if (!page.hasMore) break;
    }
    for (const { filter, seen } of await Promise.all(readers)) {
      const expected = all.filter((e) => matchesSubjects(filter, e.subject)).map((e) => e.id);
      expect({ filter, seen }).toEqual({ filter, seen: expected });
    }
  });
});
