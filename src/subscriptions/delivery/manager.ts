import os from "node:os";
import type { EventLog } from "../../events/event-log.js";
import { errorReason, type Logger } from "../../log.js";
import type { OwnerLookup } from "../filters.js";
import type { SubscriptionStore } from "../store.js";
import type { Lease } from "../types.js";
import {
  CHECKPOINT_GATHER_MS,
  Deliverer,
  type DeliveryCounters,
  ON_LOOP_CHECKPOINT_MS,
} from "./deliverer.js";
import type { RetryPolicy } from "./retry.js";
import { SinkClient, type SinkClientOptions } from "./sink-request.js";

export interface DeliveryManagerOptions {
  readonly eventLog: EventLog;
  readonly store: SubscriptionStore;
  readonly sink: SinkClientOptions;
  readonly retry: RetryPolicy;
  readonly origin: string;
  readonly owners: () => OwnerLookup;
  readonly counters: DeliveryCounters;
  readonly log: Logger;
  /** --subscription-lease-seconds, in ms. */
  readonly leaseMs: number;
  /** --subscriptions-per-process: most subscriptions this process delivers at once (0 = none). */
  readonly maxSubscriptions: number;
  /** The lease holder's name: host:pid by default. */
  readonly holder?: string;
}

/** One subscription's numbers for the eventsdb_subscription_* gauges. */
export interface SubscriptionGauge {
  readonly id: string;
  readonly lagEvents: number;
  readonly lagSeconds: number;
  readonly parked: boolean;
}

/**
 * Runs this process's share of the push subscriptions: every lease/3 it renews the leases it holds
 * (stopping the deliverers of those it lost — taken over, deleted, parked — and restarting those
 * the API changed), then claims free ones up to its cap and starts a Deliverer for each. A process
 * killed without releasing its leases loses them when they expire on the database clock; the next
 * claim of another process (within lease/3) takes them over. Closing releases every lease at once.
 */
export class DeliveryManager {
  readonly holder: string;
  readonly #options: DeliveryManagerOptions;
  readonly #client: SinkClient;
  readonly #held = new Map<string, Deliverer>();
  /** Parked subscriptions, as of the last tick (for the parked gauge). */
  #parked: readonly string[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** The tick a poke during a tick asked for, after that one. */
  #again: Promise<void> | undefined;
  #unlisten: (() => void) | undefined;
  #ticking: Promise<void> | undefined;
  /** When a renewal last succeeded (performance.now()). */
  #renewedAt = performance.now();
  #closed = false;

  constructor(options: DeliveryManagerOptions) {
    this.#options = options;
    this.holder = options.holder ?? `${os.hostname()}:${process.pid}`;
    this.#client = new SinkClient(options.sink);
  }

  /** Starts claiming (now, then every lease/3). */
  start(): void {
    if (this.#options.maxSubscriptions === 0) return;
    this.poke();
    this.#timer = setInterval(() => this.poke(), Math.max(1, Math.floor(this.#options.leaseMs / 3)));
    this.#timer.unref();
  }

  /**
   * Renews and claims now (a subscription was created or redriven): no wait for the next tick.
   * A tick already under way may have read the table before the change, so a poke during one
   * runs one more tick after it (pokes during the same tick share it); its promise settles then.
   */
  poke(): Promise<void> {
    if (this.#closed || this.#options.maxSubscriptions === 0) return Promise.resolve();
    if (this.#ticking === undefined) {
      this.#ticking = this.#tick().finally(() => {
        this.#ticking = undefined;
      });
      return this.#ticking;
    }
    this.#again ??= this.#ticking.then(() => {
      this.#again = undefined;
      return this.poke();
    });
    return this.#again;
  }

  /** The subscriptions delivered here (ids). */
  get delivering(): string[] {
    return [...this.#held.keys()];
  }

  /** The numbers of the eventsdb_subscription_* gauges: those delivered here, and every parked one. */
  gauges(): SubscriptionGauge[] {
    const out: SubscriptionGauge[] = [...this.#held.values()].map((d) => ({
      id: d.id,
      lagEvents: d.lagEvents,
      lagSeconds: d.lagSeconds,
      parked: false,
    }));
    for (const id of this.#parked) {
      if (!this.#held.has(id)) out.push({ id, lagEvents: 0, lagSeconds: 0, parked: true });
    }
    return out;
  }

  async #tick(): Promise<void> {
    const { store, leaseMs, log } = this.#options;
    try {
      await this.#renew();
      if (this.#closed) return;
      const room = this.#options.maxSubscriptions - this.#held.size;
      const leases = await store.claim(this.holder, leaseMs, room);
      for (const lease of leases) {
        if (this.#closed) {
          await store.release([lease.token]);
          break;
        }
        this.#begin(lease);
      }
      this.#parked = await store.parkedIds();
    } catch (error) {
      log.warn({ reason: errorReason(error) }, "subscription leases could not be renewed or claimed");
      // Without a renewal for a whole lease, others may hold these now: stop delivering them.
      if (performance.now() - this.#renewedAt > leaseMs) {
        for (const deliverer of [...this.#held.values()]) this.#end(deliverer);
      }
    }
  }

  async #renew(): Promise<void> {
    const { store, leaseMs } = this.#options;
    const held = [...this.#held.values()];
    const started = performance.now();
    const generations = await store.renewGenerations(
      held.map((d) => d.lease.token),
      leaseMs,
    );
    this.#renewedAt = started;
    for (const deliverer of held) {
      const generation = generations.get(deliverer.lease.token);
      if (generation === undefined) {
        this.#end(deliverer);
      } else if (generation !== deliverer.lease.subscription.generation) {
        // The API changed it (PUT): start over from the row with the same lease.
        this.#end(deliverer);
        await deliverer.ended;
        const subscription = await store.get(deliverer.id);
        if (subscription !== undefined && subscription.state === "active" && !this.#closed) {
          this.#begin({ subscription, token: deliverer.lease.token });
        }
      }
    }
  }

  #begin(lease: Lease): void {
    const deliverer = new Deliverer(lease, {
      eventLog: this.#options.eventLog,
      store: this.#options.store,
      client: this.#client,
      retry: this.#options.retry,
      origin: this.#options.origin,
      owners: this.#options.owners,
      counters: this.#options.counters,
      log: this.#options.log,
      checkpointDelayMs: this.#options.eventLog.dialect.commitsOffLoop
        ? CHECKPOINT_GATHER_MS
        : ON_LOOP_CHECKPOINT_MS,
    });
    this.#held.set(lease.subscription.id, deliverer);
    this.#listen();
    this.#options.log.info(
      { subscription: lease.subscription.id, holder: this.holder, position: lease.subscription.position },
      "delivering subscription",
    );
    void deliverer.ended.then(async (ending) => {
      this.#forget(deliverer);
      if (ending === "parked") this.#parked = [...this.#parked, deliverer.id];
      // An unexpected failure: let anyone (this process too) claim it again. A stop asked for
      // keeps the lease: the manager restarts it with the same one, or releases it on close.
      if (ending === "failed" && !this.#closed) {
        await this.#options.store.release([deliverer.lease.token]).catch(() => {});
      }
    });
  }

  #end(deliverer: Deliverer): void {
    this.#forget(deliverer);
    void deliverer.stop();
  }

  #forget(deliverer: Deliverer): void {
    if (this.#held.get(deliverer.id) === deliverer) {
      this.#held.delete(deliverer.id);
      this.#options.counters.forget(deliverer.id);
    }
    if (this.#held.size === 0) {
      this.#unlisten?.();
      this.#unlisten = undefined;
    }
  }

  /**
   * Wakes the deliverers on every commit — also other processes' commits, which the store's poll
   * (--store-poll-ms) finds only while someone listens: so only while this process delivers something.
   */
  #listen(): void {
    this.#unlisten ??= this.#options.eventLog.onCommitted((events) => {
      const last = events.at(-1);
      if (last === undefined) return;
      for (const deliverer of this.#held.values()) deliverer.notify(last.id);
    });
  }

  /**
   * Stops every deliverer (requests in flight are cut, their events redelivered by the next holder)
   * and releases the leases, so other processes take over at once. Waits at most `timeoutMs`.
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#unlisten?.();
    const deliverers = [...this.#held.values()];
    this.#held.clear();
    const work = (async () => {
      await this.#ticking?.catch(() => {});
      await Promise.all(deliverers.map((d) => d.stop()));
      await this.#options.store.release(deliverers.map((d) => d.lease.token));
    })();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      work.catch((error: unknown) =>
        this.#options.log.warn({ reason: errorReason(error) }, "releasing subscription leases failed"),
      ),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    this.#client.close();
  }
}
