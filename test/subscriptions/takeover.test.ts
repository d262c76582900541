import { afterAll, afterEach, describe, expect, it } from "vitest";
import { EventsDbClient } from "../../src/client/lib/index.js";
import type { EventLog } from "../../src/events/event-log.js";
import { SubscriptionStore } from "../../src/subscriptions/store.js";
import { freshMysqlDatabase, selected } from "../support/dialects.js";
import {
  killServerProcesses,
  removeTempDirs,
  type ServerProcess,
  startServerProcess,
} from "../support/process.js";
import { openTestStore } from "../support/server.js";
import { Sink, subscriptionSpec, waitFor, withoutRepeats } from "./sinks.js";

/**
 * Leases across processes: three server processes on one MariaDB, one subscription. Exactly one
 * process delivers it; kill -9 that one and another takes over once the lease expires — nothing
 * lost, in order, and only what was in flight (delivered, not yet checkpointed) delivered twice.
 */

const PROCESSES = 3;
/** --subscription-lease-seconds: short, so the takeover comes quickly. */
const LEASE_SECONDS = 2;
const EVENTS_BEFORE = 40;
const EVENTS_AFTER = 40;

afterEach(killServerProcesses);
afterAll(removeTempDirs);

describe.runIf(selected("mysql"))("push delivery across processes", () => {
  const sinks: Sink[] = [];
  const stores: EventLog[] = [];
  afterEach(async () => {
    await Promise.all(sinks.splice(0).map((s) => s.close()));
    await Promise.all(stores.splice(0).map((s) => s.close()));
  });

  it("hands a subscription over when its delivering process is killed", async () => {
    const databaseUrl = await freshMysqlDatabase();
    const servers: ServerProcess[] = [];
    for (let i = 0; i < PROCESSES; i++) {
      servers.push(
        await startServerProcess({
          databaseUrl,
          args: [
            "--webhook-allow-private",
            "true",
            "--subscription-lease-seconds",
            String(LEASE_SECONDS),
            "--webhook-backoff-ms",
            "50",
            "--store-poll-ms",
            "50",
          ],
        }),
      );
    }
    const sink = await new Sink().start();
    sinks.push(sink);
    // A slow sink: deliveries are in flight when the holder dies.
    sink.answer = () => ({ status: 204, delayMs: 25 });
    const { store: eventLog } = await openTestStore(databaseUrl);
    stores.push(eventLog);
    const subscriptions = new SubscriptionStore(eventLog.dialect);
    await subscriptions.create({
      id: "takeover",
      spec: subscriptionSpec(sink.url),
      owner: "anonymous",
      ownerScopes: ["*"],
      position: 0,
    });

    // Appends go through every process, one event per request, so they interleave.
    const clients = servers.map((server) => new EventsDbClient({ url: server.url, retries: 0 }));
    const sent: string[] = [];
    /** CloudEvents id → server id. */
    const serverIds = new Map<string, number>();
    const appendThrough = async (live: EventsDbClient[], count: number, prefix: string) => {
      for (let i = 0; i < count; i++) {
        const id = `${prefix}-${i}`;
        const serverId = await (live[i % live.length] as EventsDbClient).appendCloudEvent({
          specversion: "1.0",
          id,
          source: "takeover",
          type: "t",
          subject: "orders/1",
        });
        serverIds.set(id, serverId);
        sent.push(id);
      }
    };
    await appendThrough(clients, EVENTS_BEFORE, "before");
    await waitFor("the first events", () => sink.received.length >= EVENTS_BEFORE / 2, 30_000);

    const leased = await subscriptions.get("takeover");
    const holder = leased?.lease?.holder ?? "";
    const pid = Number(holder.split(":").at(-1));
    const victim = servers.find((server) => server.pid === pid);
    expect(victim, `holder ${holder}`).toBeDefined();
    await (victim as ServerProcess).kill();
    // What the dead process delivered, and the checkpoint it had written: nothing changes either
    // until another process holds the lease (not before it expires). A moment first, for requests
    // that left it just before the kill to be read here.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const beforeKill = [...sink.ids];
    const checkpoint = (await subscriptions.get("takeover"))?.position ?? 0;

    const survivors = servers.filter((server) => server !== victim);
    await appendThrough(
      clients.filter((_, i) => servers[i] !== victim),
      EVENTS_AFTER,
      "after",
    );
    await waitFor("every event", () => new Set(sink.ids).size >= sent.length, 60_000);
    // Before the kill: in order, nothing twice. After it: the new holder starts right after the
    // checkpoint, so what reaches the sink twice is exactly what the dead process had in flight —
    // delivered (or being delivered) but not yet checkpointed — and then everything, in order.
    expect(withoutRepeats(beforeKill)).toEqual(beforeKill);
    expect(beforeKill).toEqual(sent.slice(0, beforeKill.length));
    const resumed = sent.filter((id) => (serverIds.get(id) as number) > checkpoint);
    expect(sink.ids.slice(beforeKill.length)).toEqual(resumed);
    const inFlight = beforeKill.filter((id) => (serverIds.get(id) as number) > checkpoint);
    expect(sink.ids.length - sent.length).toBe(inFlight.length);
    const now = await subscriptions.get("takeover");
    expect(now?.lease?.holder).not.toBe(holder);
    expect(survivors.map((server) => String(server.pid))).toContain(now?.lease?.holder.split(":").at(-1));
    await waitFor(
      "the checkpoint",
      async () =>
        (await subscriptions.get("takeover"))?.position ===
        (await eventLog.page({ subjects: [], recursive: false, type: undefined, fromId: 0, limit: 1000 }))
          .nextFromId,
    );
  });
});
