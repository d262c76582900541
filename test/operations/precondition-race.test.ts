import { afterAll, afterEach, describe, expect, it } from "vitest";
import { EventsDbClient, EventsDbError } from "../../src/client/lib/index.js";
import { ChainVerifier, linkFromJson } from "../../src/events/chain.js";
import { freshMysqlDatabase, selected } from "../support/dialects.js";
import {
  killServerProcesses,
  removeTempDirs,
  type ServerProcess,
  startServerProcess,
} from "../support/process.js";

/**
 * Issue 13 capability 1 end to end: three server processes on one MariaDB, clients on each. Every
 * round each client reads the subject's last event id, then all append "on" it (isSubjectOnEventId
 * through the client library, i.e. the EventsDB-Preconditions header): exactly one wins per round,
 * the others get 409 failed_precondition, and the subject holds one event per round. And the hash
 * chain (capability 2) stays one chain with the three processes appending at once.
 */

const PROCESSES = 3;
const CLIENTS_PER_PROCESS = 3;
const ROUNDS = 12;

afterEach(killServerProcesses);
afterAll(removeTempDirs);

describe.runIf(selected("mysql"))("precondition race across processes", () => {
  it("lets exactly one client per round append on the last event it read", async () => {
    const databaseUrl = await freshMysqlDatabase();
    const servers: ServerProcess[] = [];
    for (let i = 0; i < PROCESSES; i++) servers.push(await startServerProcess({ databaseUrl }));
    const clients = servers.flatMap((server) =>
      Array.from({ length: CLIENTS_PER_PROCESS }, () => new EventsDbClient({ url: server.url, retries: 0 })),
    );
    const subject = "race/order";
    const winners: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // All read before any appends: every client bases its append on the same last event.
      const seen = await Promise.all(clients.map((client) => client.newestId({ subject })));
      expect(new Set(seen).size).toBe(1);
      const outcomes = await Promise.all(
        clients.map((client, i) =>
          client
            .appendCloudEvent(
              { specversion: "1.0", id: `r${round}-${i}`, source: "race", type: "t", subject },
              {
                preconditions: [
                  seen[i] === 0
                    ? { kind: "pristine", subject }
                    : { kind: "on_event", subject, id: seen[i] as number },
                ],
              },
            )
            .then(
              (id) => ({ won: id }),
              (error: unknown) => {
                if (error instanceof EventsDbError && error.code === "failed_precondition")
                  return { won: undefined };
                throw error;
              },
            ),
        ),
      );
      const won = outcomes.flatMap((outcome) => (outcome.won === undefined ? [] : [outcome.won]));
      expect(won, `round ${round}`).toHaveLength(1);
      winners.push(won[0] as number);
    }
    const stored = [];
    for await (const event of (clients[0] as EventsDbClient).events({ subject })) stored.push(event.id);
    expect(stored).toEqual(winners);
  });

  it("keeps one chain that verifies while three processes append at once", async () => {
    const databaseUrl = await freshMysqlDatabase();
    const servers: ServerProcess[] = [];
    for (let i = 0; i < PROCESSES; i++) servers.push(await startServerProcess({ databaseUrl }));
    const clients = servers.map((server) => new EventsDbClient({ url: server.url, retries: 0 }));
    // Each process appends batches of varied sizes at the same time as the others: every commit
    // must chain onto whichever commit, of any process, took the lock before it.
    let sent = 0;
    await Promise.all(
      clients.map(async (client, p) => {
        for (let batch = 0; batch < 15; batch++) {
          const events = Array.from({ length: 1 + ((batch * 7 + p) % 23) }, (_, i) => ({
            specversion: "1.0",
            id: `p${p}-b${batch}-e${i}`,
            source: `p${p}`,
            type: "t",
            subject: `chain/${i % 4}`,
            data: `p${p}-b${batch}-e${i}`,
          }));
          await client.appendBatch(events);
          sent += events.length;
        }
      }),
    );
    const verifier = new ChainVerifier();
    for await (const link of (clients[1] as EventsDbClient).chain({ fromId: 0 })) {
      expect(verifier.check(linkFromJson(link))).toBeUndefined();
    }
    expect(verifier.checked).toBe(sent);
  });
});
