import { afterEach, describe, expect, it } from "vitest";
import type { EventLog } from "../../src/events/event-log.js";
import { DIALECTS } from "../support/dialects.js";
import { newEvent } from "../support/events.js";
import { openTestStore } from "../support/server.js";

/**
 * The point of on_event: writers that read a subject's last event and then append "on" it cannot
 * both succeed — the check runs inside the append's lock. On MariaDB three EventLogs with their own
 * connection pools and writer connections stand for three processes; better-sqlite3 is synchronous
 * (two connections in one thread would wait on each other's lock), so on SQLite the writers share
 * one store and race inside its group commits.
 */

const ROUNDS = 15;
const WRITERS_PER_STORE = 3;

describe.each(DIALECTS)("precondition race on $name", (dialect) => {
  const open: EventLog[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it("lets exactly one of the writers on the same last event win each round", async () => {
    const url = await dialect.url();
    const processes = dialect.name === "sqlite" ? 1 : 3;
    const stores: EventLog[] = [];
    for (let i = 0; i < processes; i++) stores.push((await openTestStore(url)).store);
    open.push(...stores);
    const writers = Array.from(
      { length: 3 * WRITERS_PER_STORE },
      (_, i) => stores[i % processes] as EventLog,
    );
    const subject = "race/1";
    const lastEvent = async (store: EventLog): Promise<number> => {
      const page = await store.page({
        subjects: [subject],
        recursive: false,
        type: undefined,
        fromId: 0,
        limit: 1000,
      });
      return page.events.at(-1)?.id ?? 0;
    };
    // Noise on a subject below it and another one: they must not move "race/1".
    await stores[0]?.append([newEvent("race/1/x"), newEvent("other")]);

    const winners: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Every writer reads before any appends: all of them hold the same last event.
      const seen = await Promise.all(writers.map((store) => lastEvent(store)));
      const outcomes = await Promise.allSettled(
        writers.map((store, w) =>
          store.append(
            [newEvent(subject, { source: `w${w}`, data: Buffer.from(`round ${round}`) })],
            undefined,
            [
              seen[w] === 0
                ? { kind: "pristine", subject }
                : { kind: "on_event", subject, id: seen[w] as number },
            ],
          ),
        ),
      );
      const won = outcomes.filter((o) => o.status === "fulfilled");
      expect(won, `round ${round}`).toHaveLength(1);
      for (const o of outcomes) {
        if (o.status === "rejected") expect(o.reason).toMatchObject({ code: "failed_precondition" });
      }
      winners.push((won[0] as PromiseFulfilledResult<{ id: number }[]>).value[0]?.id as number);
    }
    // The subject holds exactly the winners, one per round, in order.
    const stored = await stores[0]?.page({
      subjects: [subject],
      recursive: false,
      type: undefined,
      fromId: 0,
      limit: 1000,
    });
    expect(stored?.events.map((e) => e.id)).toEqual(winners);
    expect(stored?.events.map((e) => e.data.toString())).toEqual(winners.map((_, r) => `round ${r}`));
  });
});
