import { afterAll, expect, it } from "vitest";
import { SILENT_LOGGER } from "../../../../src/log.js";
import { DeliveryManager } from "../../../../src/subscriptions/delivery/manager.js";
import { SubscriptionStore } from "../../../../src/subscriptions/store.js";
import type { Lease, SubscriptionSpec } from "../../../../src/subscriptions/types.js";
import { removeTempDirs, tempDir } from "../../../support/process.js";
import { openTestStore } from "../../../support/server.js";

/** The manager's wake-ups: a poke must never be lost to a tick that had read the table already. */

afterAll(() => removeTempDirs());

/** A real store whose first claim waits for `letClaimAnswer`: the tick under way when the test pokes. */
class HeldClaimStore extends SubscriptionStore {
  claims = 0;
  #release: (() => void) | undefined;
  readonly #held = new Promise<void>((resolve) => {
    this.#release = resolve;
  });
  letClaimAnswer(): void {
    this.#release?.();
  }
  override async claim(holder: string, leaseMs: number, limit: number): Promise<Lease[]> {
    this.claims++;
    // The first claim reads the table now, as a tick would, then is slow to come back.
    const leases = super.claim(holder, leaseMs, limit);
    if (this.claims === 1) await this.#held;
    return leases;
  }
}

const spec: SubscriptionSpec = {
  source: undefined,
  types: undefined,
  config: { subject: "orders", recursive: false, type: undefined, window: 1 },
  filters: [],
  sink: "http://sink.test/",
  sinkcredential: undefined,
  protocol: "HTTP",
  protocolsettings: { method: "POST", headers: {}, contentmode: "structured" },
  description: undefined,
};

it("claims a subscription created during a tick whose claim had already read the table", async () => {
  const { store } = await openTestStore(`sqlite:${tempDir("eventsdb-manager-")}/events.db`);
  const subscriptions = new HeldClaimStore(store.dialect);
  const manager = new DeliveryManager({
    eventLog: store,
    store: subscriptions,
    sink: { allowPrivate: false, timeoutMs: 1000, responseBytes: 1024 },
    retry: { baseMs: 10_000, maxMs: 10_000, maxAttempts: 1, maxRetryMs: 10_000 },
    origin: "test",
    owners: () => ({ open: true, readScopes: () => ["*"] }),
    counters: { delivered: () => {}, failed: () => {}, handshake: () => {}, forget: () => {} },
    log: SILENT_LOGGER,
    // The next tick of its own is 20 s away: only a poke can claim it within the test.
    leaseMs: 60_000,
    maxSubscriptions: 10,
  });
  try {
    const first = manager.poke();
    // Its claim has read the empty table and is held.
    await expect.poll(() => subscriptions.claims).toBe(1);
    await subscriptions.create({ id: "late", spec, owner: "o", ownerScopes: ["*"], position: 0 });
    const second = manager.poke();
    subscriptions.letClaimAnswer();
    await first;
    expect(manager.delivering).toEqual([]);
    await second;
    expect(manager.delivering).toEqual(["late"]);
    expect(subscriptions.claims).toBe(2);
  } finally {
    await manager.close(5000);
    await store.close();
  }
});
