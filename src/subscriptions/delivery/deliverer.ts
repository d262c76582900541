import { setMaxListeners } from "node:events";
import { EventsDbError } from "../../errors.js";
import type { Page, StoredEvent } from "../../events/event.js";
import { DEFAULT_PAGE_LIMIT, type EventLog } from "../../events/event-log.js";
import { errorReason, type Logger } from "../../log.js";
import { configFilter, matches, type OwnerLookup, OwnerRevoked, ownerPrincipal } from "../filters.js";
import type { SubscriptionStore } from "../store.js";
import type { Lease } from "../types.js";
import { backoffMs, Pacer, type RetryPolicy, retryAfterMs, sleep } from "./retry.js";
import type { SinkClient } from "./sink-request.js";
import { SinkRequestError } from "./sink-request.js";
import { deliver, deliveryRequest, handshake, type Outcome } from "./webhook.js";

/**
 * How long a caught-up deliverer waits for a commit before it reads the store again anyway: commits
 * wake it (EventLog.onCommitted, other processes' through the store's poll), so this is only a
 * safety net, kept long so that a thousand idle subscriptions do not query the store all the time.
 */
export const IDLE_RECHECK_MS = 30_000;
/**
 * Checkpoint writes gather the acknowledgements of this long into one commit: one commit (an fsync)
 * per event would make the database, not the sink, the limit of a fast subscription.
 */
export const CHECKPOINT_GATHER_MS = 5;
/** The same where a commit blocks the event loop (SQLite: a synchronous fsync stalls every delivery). */
export const ON_LOOP_CHECKPOINT_MS = 20;
/**
 * The most deliveries one subscription has in flight (`config.window` is cut to it): a page's worth,
 * and below the sink connections one host gets (SinkClient's agents).
 */
export const MAX_WINDOW = 64;
/** How long a deliverer waits before it tries the store again after a failed read or write. */
const STORE_RETRY_MS = 1000;

/** What a deliverer counts (metrics.ts's eventsdb_subscription_* counters). */
export interface DeliveryCounters {
  delivered(subscription: string): void;
  failed(subscription: string, reason: string): void;
  handshake(result: "accepted" | "refused" | "failed"): void;
  /** This process stopped delivering the subscription: its counters may go. */
  forget(subscription: string): void;
}

export interface DelivererOptions {
  readonly eventLog: EventLog;
  readonly store: SubscriptionStore;
  readonly client: SinkClient;
  readonly retry: RetryPolicy;
  /** WebHook-Request-Origin: --webhook-origin, the host name by default. */
  readonly origin: string;
  /** The token registry as it is now (SIGHUP replaces it). */
  readonly owners: () => OwnerLookup;
  readonly counters: DeliveryCounters;
  readonly log: Logger;
  /** Milliseconds a checkpoint write waits for more acknowledgements (CHECKPOINT_GATHER_MS, ON_LOOP_CHECKPOINT_MS). */
  readonly checkpointDelayMs: number;
}

/** Why a deliverer ended. */
export type Ending = "stopped" | "parked" | "lease-lost" | "failed";

/** A delivery that gave up: the subscription is parked with this. */
interface GiveUp {
  readonly reason: string;
  readonly eventId: number | undefined;
}

type AttemptResult = "ok" | "aborted" | GiveUp;

interface Slot {
  readonly event: StoredEvent;
  result: AttemptResult | undefined;
  settled: Promise<void>;
}

/**
 * Delivers one leased subscription: from its checkpoint, pages the owner-readable events of its
 * read filter through the EventLog, keeps those its filters match, and sends them in id order with
 * up to `config.window` in flight. The checkpoint moves (store.acknowledge, fenced by the lease)
 * only past a contiguous acknowledged prefix, so a crash redelivers at most what was in flight.
 * Failed deliveries are retried with backoff; one that exhausts --webhook-max-attempts or
 * --webhook-max-retry-seconds parks the subscription on that event.
 */
export class Deliverer {
  readonly lease: Lease;
  /** Resolves when it has stopped, with why (never rejects). */
  readonly ended: Promise<Ending>;
  readonly #options: DelivererOptions;
  readonly #abort = new AbortController();
  /** The last acknowledged id (the stored checkpoint). */
  #position: number;
  /** The last id read from the store. */
  #cursor: number;
  /** The newest event id known to exist. */
  #head: number;
  /** New commits may have come since the last read (or the last read was not the end). */
  #readable = true;
  #wake: (() => void) | undefined;
  #pending: Slot[] = [];
  #buffered: StoredEvent[] = [];
  /** The store is failing for this deliverer (it said so once; EventLog logs the outage itself). */
  #storeFailing = false;
  /** The checkpoint asked for (≥ #position); a write of it may be in flight. */
  #wanted: number;
  #checkpointing: Promise<void> | undefined;
  /** A checkpoint write found the lease gone. */
  #leaseLost = false;

  constructor(lease: Lease, options: DelivererOptions) {
    this.lease = lease;
    this.#options = options;
    this.#position = lease.subscription.position;
    this.#wanted = this.#position;
    this.#cursor = this.#position;
    this.#head = this.#position;
    this.ended = this.#run().catch((error: unknown) => {
      options.log.error(
        { subscription: lease.subscription.id, err: error },
        "subscription delivery failed unexpectedly",
      );
      return "failed" as const;
    });
  }

  get id(): string {
    return this.lease.subscription.id;
  }

  /** Events were committed up to `lastId` (by this process or, through the store's poll, another). */
  notify(lastId: number): void {
    if (lastId > this.#head) this.#head = lastId;
    if (lastId > this.#cursor) {
      this.#readable = true;
      this.#wake?.();
    }
  }

  /** Events after the checkpoint, counted by id up to the newest event known (0 when caught up). */
  get lagEvents(): number {
    return Math.max(0, this.#head - this.#position);
  }

  /** Age of the oldest matching event not yet acknowledged, by its `time` (0 when caught up). */
  get lagSeconds(): number {
    const oldest = this.#pending[0]?.event ?? this.#buffered[0];
    if (oldest === undefined) return 0;
    return Math.max(0, (Date.now() - Date.parse(oldest.time)) / 1000);
  }

  /** Stops: requests in flight are cut (their events are delivered again by the next holder). */
  stop(): Promise<Ending> {
    this.#abort.abort();
    this.#wake?.();
    return this.ended;
  }

  get #stopped(): boolean {
    return this.#abort.signal.aborted;
  }

  async #run(): Promise<Ending> {
    const options = this.#options;
    const record = this.lease.subscription;
    const spec = record.spec;
    let rate = record.validatedRate;
    if (record.validatedSink !== spec.sink) {
      let granted: number | undefined;
      const result = await this.#retrying(undefined, async () => {
        const outcome = await this.#handshake();
        if (outcome.ok) granted = outcome.rate;
        return outcome;
      });
      if (result === "aborted") return "stopped";
      if (result !== "ok") return this.#park(result);
      rate = granted;
      if (!(await this.#write(() => options.store.validated(this.lease, spec.sink, granted))))
        return this.#lost();
    }
    const pacer = new Pacer(rate);
    const window = Math.min(MAX_WINDOW, Math.max(1, spec.config.window));
    // Every delivery in flight listens to the one stop signal.
    setMaxListeners(window * 2 + 10, this.#abort.signal);
    try {
      while (!this.#stopped) {
        while (this.#pending.length < window && !this.#stopped) {
          const event = this.#buffered.shift();
          if (event !== undefined) {
            this.#pending.push(this.#start(event, pacer));
            continue;
          }
          if (!this.#readable) break;
          const page = await this.#read();
          if (page === undefined) continue; // the read failed; retried after a pause
          if ("reason" in page) return this.#park(page);
          this.#cursor = page.nextFromId;
          if (this.#cursor > this.#head) this.#head = this.#cursor;
          this.#readable ||= page.hasMore;
          this.#buffered = page.events.filter((e) => matches(spec, e));
        }
        if (this.#stopped) break;
        if (this.#pending.length === 0) {
          // Caught up: the checkpoint moves past events no filter matched, then wait for commits.
          if (this.#cursor > this.#wanted) this.#checkpoint(this.#cursor);
          if (!this.#readable) await this.#idle();
          continue;
        }
        // Wait for one still in flight: the settled ones behind an unacknowledged head stay settled.
        const inFlight = this.#pending.filter((slot) => slot.result === undefined);
        if (inFlight.length > 0) await Promise.race(inFlight.map((slot) => slot.settled));
        const gaveUp = this.#pending.find(
          (slot) => slot.result !== undefined && typeof slot.result === "object",
        );
        if (gaveUp !== undefined) return this.#park(gaveUp.result as GiveUp);
        let last: Slot | undefined;
        while (this.#pending[0]?.result === "ok") last = this.#pending.shift();
        if (last !== undefined) this.#checkpoint(last.event.id);
        // Only "aborted" results are left when stopped: nothing else can settle a slot otherwise.
        if (inFlight.length === 0 && last === undefined) break;
      }
      return this.#leaseLost ? this.#lost() : "stopped";
    } finally {
      this.#abort.abort();
      await Promise.allSettled(this.#pending.map((slot) => slot.settled));
      // What the sink acknowledged is written before the lease goes (a graceful stop redelivers nothing).
      await this.#flush();
    }
  }

  /** One event's delivery, retried until acknowledged, given up or stopped. */
  #start(event: StoredEvent, pacer: Pacer): Slot {
    const spec = this.lease.subscription.spec;
    const request = deliveryRequest(spec, event, this.#options.origin);
    const slot: Slot = { event, result: undefined, settled: Promise.resolve() };
    slot.settled = this.#retrying(event.id, async () => {
      await pacer.turn(this.#abort.signal);
      if (this.#stopped)
        return { ok: false, reason: "aborted", message: "", retryAfter: undefined, permanent: false };
      return deliver(this.#options.client, spec.sink, request, this.#abort.signal);
    }).then((result) => {
      slot.result = result;
      if (result === "ok") this.#options.counters.delivered(this.id);
    });
    return slot;
  }

  /**
   * Runs `attempt` until it succeeds, it fails permanently, --webhook-max-attempts attempts failed
   * or --webhook-max-retry-seconds passed since the first failure; waits between attempts with
   * full-jitter backoff, or what a 429/503's Retry-After asks (capped).
   */
  async #retrying(eventId: number | undefined, attempt: () => Promise<Outcome>): Promise<AttemptResult> {
    const policy = this.#options.retry;
    let failures = 0;
    let firstFailure = 0;
    for (;;) {
      if (this.#stopped) return "aborted";
      const outcome = await attempt();
      if (outcome.ok) return "ok";
      if (this.#stopped || outcome.reason === "aborted") return "aborted";
      this.#options.counters.failed(this.id, outcome.reason);
      failures++;
      const now = Date.now();
      if (failures === 1) firstFailure = now;
      const elapsed = now - firstFailure;
      if (outcome.permanent) return { reason: outcome.message, eventId };
      if (failures >= policy.maxAttempts) {
        return { reason: `${outcome.message} (${failures} attempts)`, eventId };
      }
      if (elapsed >= policy.maxRetryMs) {
        return { reason: `${outcome.message} (failing for ${Math.round(elapsed / 1000)} s)`, eventId };
      }
      const wait = retryAfterMs(outcome.retryAfter, policy.maxMs, now) ?? backoffMs(policy, failures);
      await sleep(Math.min(wait, policy.maxRetryMs - elapsed), this.#abort.signal);
    }
  }

  /** The validation handshake as one attempt's outcome (accepted carries the granted rate). */
  async #handshake(): Promise<{ ok: true; rate: number | undefined } | (Outcome & { ok: false })> {
    const counters = this.#options.counters;
    try {
      const answer = await handshake(
        this.#options.client,
        this.lease.subscription.spec.sink,
        this.#options.origin,
        this.#abort.signal,
      );
      counters.handshake(answer.accepted ? "accepted" : "refused");
      if (answer.accepted) return { ok: true, rate: answer.rate };
      return {
        ok: false,
        reason: "handshake",
        message: answer.reason,
        retryAfter: undefined,
        permanent: false,
      };
    } catch (error) {
      if (!(error instanceof SinkRequestError)) throw error;
      if (error.reason !== "aborted") counters.handshake("failed");
      return {
        ok: false,
        reason: error.reason,
        message: `handshake failed: ${error.message}`,
        retryAfter: undefined,
        permanent: error.reason === "refused",
      };
    }
  }

  /**
   * The next page after the cursor, as the owner may read it now (the token's scopes are looked up
   * on every page: a token that lost them delivers less from then on). A GiveUp when the owner can
   * read nothing of it any more; undefined after a store failure (retried after a pause).
   */
  async #read(): Promise<Page | GiveUp | undefined> {
    const record = this.lease.subscription;
    this.#readable = false;
    try {
      const principal = ownerPrincipal(record, this.#options.owners());
      const page = await this.#options.eventLog.page(
        { ...configFilter(record.spec.config), fromId: this.#cursor, limit: DEFAULT_PAGE_LIMIT },
        principal,
      );
      this.#storeFailing = false;
      return page;
    } catch (error) {
      if (error instanceof OwnerRevoked) return { reason: error.message, eventId: undefined };
      if (error instanceof EventsDbError && error.code === "permission_denied") {
        return { reason: error.message, eventId: undefined };
      }
      if (!this.#storeFailing) {
        this.#storeFailing = true;
        this.#options.log.warn(
          { subscription: this.id, reason: errorReason(error) },
          "reading events for a subscription failed; trying again every second",
        );
      }
      this.#readable = true;
      await sleep(STORE_RETRY_MS, this.#abort.signal);
      return undefined;
    }
  }

  /**
   * Moves the checkpoint to `position` (store.acknowledge, fenced by the lease) without holding up
   * the next delivery: one write at a time, each of the newest position asked for, so a fast sink
   * is not slowed to one database commit per event. A crash loses at most the acknowledgements of
   * one write in flight and of the few milliseconds it gathers: those events are delivered again.
   * A lost lease stops the deliverer.
   */
  #checkpoint(position: number): void {
    if (position > this.#wanted) this.#wanted = position;
    this.#checkpointing ??= (async () => {
      while (this.#wanted > this.#position && !this.#stopped) {
        await sleep(this.#options.checkpointDelayMs, this.#abort.signal);
        if (this.#stopped) return; // the final flush writes it
        const target = this.#wanted;
        if (!(await this.#write(() => this.#options.store.acknowledge(this.lease, target)))) {
          if (!this.#stopped) {
            this.#leaseLost = true;
            this.#abort.abort();
            this.#wake?.();
          }
          return;
        }
        this.#position = Math.max(this.#position, target);
      }
    })().finally(() => {
      this.#checkpointing = undefined;
    });
  }

  /** A fenced store write, tried again after a pause while the store fails; false = lease lost (or stopped). */
  async #write(write: () => Promise<boolean>): Promise<boolean> {
    for (;;) {
      try {
        const held = await write();
        this.#storeFailing = false;
        return held;
      } catch (error) {
        if (!this.#storeFailing) {
          this.#storeFailing = true;
          this.#options.log.warn(
            { subscription: this.id, reason: errorReason(error) },
            "writing a subscription's checkpoint failed; trying again every second",
          );
        }
        await sleep(STORE_RETRY_MS, this.#abort.signal);
        if (this.#stopped) return false;
      }
    }
  }

  /** Writes the checkpoint asked for, if the lease still holds (before parking, and at the end). */
  async #flush(): Promise<void> {
    await this.#checkpointing;
    if (this.#leaseLost || this.#wanted <= this.#position) return;
    const target = this.#wanted;
    if (await this.#options.store.acknowledge(this.lease, target).catch(() => false)) this.#position = target;
  }

  async #park(giveUp: GiveUp): Promise<Ending> {
    // Park after the checkpoint of what went before: a redrive starts right at the parked event.
    await this.#flush();
    const parked = await this.#write(() =>
      this.#options.store.park(this.lease, giveUp.reason, giveUp.eventId),
    );
    if (!parked) return this.#lost();
    this.#options.log.warn(
      { subscription: this.id, reason: giveUp.reason, eventId: giveUp.eventId },
      "subscription parked",
    );
    return "parked";
  }

  #lost(): Ending {
    if (this.#stopped && !this.#leaseLost) return "stopped";
    this.#options.log.info({ subscription: this.id }, "subscription lease lost; its delivery stops here");
    return "lease-lost";
  }

  /** Waits for a commit after the cursor, a stop, or IDLE_RECHECK_MS (then reads anyway). */
  async #idle(): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#readable = true;
        resolve();
      }, IDLE_RECHECK_MS);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }
}
