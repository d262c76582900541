import type { StreamConfig } from "../config.js";
import { EventsDbError } from "../errors.js";
import type { EventFilter, Page, PageQuery, StoredEvent } from "../events/event.js";
import type { Metrics } from "../metrics.js";
import { SubjectIndex } from "./subject-index.js";
import { Subscription } from "./subscription.js";

/** Consumers woken per turn of the event loop; up to this many are woken without --stream-flush-ms. */
export const WAKE_SLICE = 50;
/** How often open streams ask whether their credential still holds (one timer for all of them). */
export const REVALIDATE_MS = 1000;

/** When each live event was published (for the delivery-lag metric); catch-up reads have none. */
const publishedAt = new WeakMap<StoredEvent, number>();

/** Seconds since the event was published live, or undefined for an event read from the store. */
export function secondsSincePublished(event: StoredEvent): number | undefined {
  const at = publishedAt.get(event);
  return at === undefined ? undefined : (performance.now() - at) / 1000;
}

export interface SubscribeRequest {
  readonly filter: EventFilter;
  /** Deliver events with id > fromId (the stream's resume cursor). */
  readonly fromId: number;
  /** Most events per yielded batch; defaults to --stream-batch-size. */
  readonly batchSize?: number;
  /** Aborting it closes the subscription (the transport's request signal). */
  readonly signal?: AbortSignal;
  /** Who the stream counts for in --max-streams-per-client (see clientKey in auth.ts). */
  readonly client?: string;
  /**
   * Whether the caller's credential still holds; asked every REVALIDATE_MS while the stream is
   * open, which ends with reason "revoked" when it answers false. Absent = always.
   */
  readonly stillValid?: () => Promise<boolean>;
}

/** What the hub keeps of an open subscription beside the subscription itself. */
interface Registration {
  readonly client: string;
  readonly stillValid: (() => Promise<boolean>) | undefined;
}

/**
 * The live fan-out. Subscriptions are indexed by subject (see SubjectIndex); a publish hands each
 * matching subscription the event and returns: it never awaits a consumer, so a stalled client
 * cannot slow the writer, the hub or the other clients. Each subscription's buffer is capped;
 * past the cap it falls back to paging from the store (Subscription).
 */
export class Hub {
  readonly #config: StreamConfig;
  readonly #metrics: Metrics;
  readonly #page: (query: PageQuery) => Promise<Page>;
  readonly #onStoreError: ((error: unknown) => void) | undefined;
  readonly #index = new SubjectIndex<Subscription>();
  readonly #subscriptions = new Map<Subscription, Registration>();
  /** Open subscriptions per client key. */
  readonly #perClient = new Map<string, number>();
  #closed = false;
  #revalidateTimer: NodeJS.Timeout | undefined;
  #revalidating = false;
  /** Subscriptions holding events their consumers have not been woken for yet. */
  #pending = new Set<Subscription>();
  #lastWake = 0;
  #wakeTimer: NodeJS.Timeout | undefined;
  /** A wake-up is going through its slices: the next one starts after it (see #wakeSlice). */
  #waking = false;
  /** Counts publish() calls: a page read may be shared only by reads issued with no publish between. */
  #generation = 0;
  /** Page reads in flight, by query (at most one per subscription: bounded by --max-total-clients). */
  readonly #reads = new Map<string, { readonly generation: number; readonly page: Promise<Page> }>();

  /** @param onStoreError a subscription's page read failed (it waits and retries) */
  constructor(
    config: StreamConfig,
    metrics: Metrics,
    page: (query: PageQuery) => Promise<Page>,
    onStoreError?: (error: unknown) => void,
  ) {
    this.#config = config;
    this.#metrics = metrics;
    this.#page = page;
    this.#onStoreError = onStoreError;
  }

  /** Open subscriptions. */
  get size(): number {
    return this.#subscriptions.size;
  }

  /**
   * Throws too_many_requests when a stream for `client` would be refused now (--max-total-clients,
   * --max-streams-per-client), unavailable while shutting down; registers nothing (HEAD asks it).
   */
  admit(client: string): void {
    if (this.#closed)
      throw new EventsDbError("unavailable", "the server is shutting down", { retryAfterSeconds: 1 });
    if (this.#subscriptions.size >= this.#config.maxTotalClients) {
      this.#metrics.streamRefusals.inc({ limit: "max_total_clients" });
      throw new EventsDbError(
        "too_many_requests",
        `too many open streams (--max-total-clients ${this.#config.maxTotalClients}); retry later`,
        { retryAfterSeconds: 5 },
      );
    }
    if ((this.#perClient.get(client) ?? 0) >= this.#config.maxStreamsPerClient) {
      this.#metrics.streamRefusals.inc({ limit: "max_streams_per_client" });
      throw new EventsDbError(
        "too_many_requests",
        `too many open streams for this client (--max-streams-per-client ${this.#config.maxStreamsPerClient}); ` +
          "close some or retry later",
        { retryAfterSeconds: 5 },
      );
    }
  }

  /**
   * Registers a subscription at once (live events buffer from now on); iterate it to receive
   * catch-up pages and then live events; close it (or finish iterating) to free its slot.
   * Throws too_many_requests beyond --max-total-clients or --max-streams-per-client, before
   * anything is sent.
   */
  subscribe(request: SubscribeRequest): Subscription {
    const client = request.client ?? "";
    this.admit(client);
    const { filter } = request;
    const subscription: Subscription = new Subscription(
      {
        filter,
        fromId: request.fromId,
        bufferSize: this.#config.clientBufferSize,
        bufferBytes: this.#config.clientBufferBytes,
        batchSize: request.batchSize ?? this.#config.streamBatchSize,
        page: (query) => this.#sharedPage(query),
        onOverflow: () => this.#metrics.streamOverflows.inc(),
        onCatchUp: () => this.#metrics.streamCatchUps.inc(),
        ...(this.#onStoreError === undefined ? {} : { onStoreError: this.#onStoreError }),
      },
      () => {
        if (!this.#subscriptions.delete(subscription)) return;
        this.#index.delete(subscription, filter.subjects, filter.recursive);
        const left = (this.#perClient.get(client) ?? 1) - 1;
        if (left > 0) this.#perClient.set(client, left);
        else this.#perClient.delete(client);
        this.#metrics.activeStreams.set(this.#subscriptions.size);
        if (this.#subscriptions.size === 0) this.#stopRevalidating();
      },
    );
    if (request.signal !== undefined) {
      const signal = request.signal;
      if (signal.aborted) subscription.close("client left");
      else {
        const onAbort = () => subscription.close("client left");
        signal.addEventListener("abort", onAbort, { once: true });
        subscription.onClose(() => signal.removeEventListener("abort", onAbort));
      }
      if (subscription.closed) return subscription;
    }
    this.#index.add(subscription, filter.subjects, filter.recursive);
    this.#subscriptions.set(subscription, { client, stillValid: request.stillValid });
    this.#perClient.set(client, (this.#perClient.get(client) ?? 0) + 1);
    this.#metrics.activeStreams.set(this.#subscriptions.size);
    if (request.stillValid !== undefined && this.#revalidateTimer === undefined) {
      this.#revalidateTimer = setInterval(() => {
        // A slow check (a session looked up in the store) is not stacked under the next one.
        if (this.#revalidating) return;
        this.#revalidating = true;
        void this.revalidate().finally(() => {
          this.#revalidating = false;
        });
      }, REVALIDATE_MS);
      this.#revalidateTimer.unref();
    }
    return subscription;
  }

  /**
   * Asks every open subscription's credential whether it still holds and closes those that
   * answer false with reason "revoked". Runs every REVALIDATE_MS while streams are open; a reload
   * of the tokens (SIGHUP) calls it at once. A check that fails (the store is unreachable) keeps
   * the stream: an outage is not a revocation.
   */
  async revalidate(): Promise<void> {
    await Promise.all(
      [...this.#subscriptions].map(async ([subscription, { stillValid }]) => {
        if (stillValid === undefined) return;
        let valid: boolean;
        try {
          valid = await stillValid();
        } catch {
          return;
        }
        if (!valid) subscription.close("revoked");
      }),
    );
  }

  #stopRevalidating(): void {
    clearInterval(this.#revalidateTimer);
    this.#revalidateTimer = undefined;
  }

  /**
   * A subscription's page read, shared with the identical reads of other subscriptions issued
   * since the last publish. When a burst of events (a commit that stalled, then many at once)
   * overflows the buffers of a thousand streams on one subject together, they all go back to the
   * store from the same cursor with the same filter: one query instead of a thousand, each page of
   * the way, while they stay in step. Only reads with no publish between them share: an event
   * committed after the shared read started was published after it too, so every subscription
   * that joined gets it live (its buffer takes events again once it pages); an event published
   * before it is committed, so the read sees it.
   */
  #sharedPage(query: PageQuery): Promise<Page> {
    // Every field of the query, whatever fields PageQuery has: a read is shared only by one asking
    // the very same (keys sorted, so the order they were written in does not matter).
    const key = JSON.stringify(query, Object.keys(query).sort());
    const shared = this.#reads.get(key);
    if (shared !== undefined && shared.generation === this.#generation) return shared.page;
    const page = this.#page(query);
    const entry = { generation: this.#generation, page };
    this.#reads.set(key, entry);
    const forget = () => {
      if (this.#reads.get(key) === entry) this.#reads.delete(key);
    };
    page.then(forget, forget);
    return page;
  }

  /** Hands committed events (in id order) to every matching subscription. Never blocks. */
  publish(events: readonly StoredEvent[]): void {
    this.#generation++;
    if (this.#subscriptions.size === 0) return;
    const now = performance.now();
    for (const event of events) {
      publishedAt.set(event, now);
      this.#index.forEachMatch(event.subject, (subscription) => {
        const type = subscription.filter.type;
        if ((type === undefined || type === event.type) && subscription.offer(event))
          this.#pending.add(subscription);
      });
    }
    this.#scheduleWake(now);
  }

  /**
   * Consumers are woken at once, unless the last wake-up was less than --stream-flush-ms ago and
   * more than one slice of them waits: then once, when that time is up, for everything published
   * meanwhile. Under a steady stream of small commits every client of a busy hub thus gets a few
   * events per write instead of one write per event — the difference between a saturated event
   * loop and an idle one at 1000 clients — while a few streams (one slice, woken in one turn of
   * the loop) never wait for the timer: waking them costs less than the delay would.
   */
  #scheduleWake(now: number): void {
    if (this.#pending.size === 0 || this.#wakeTimer !== undefined || this.#waking) return;
    const due = this.#lastWake + this.#config.flushMs - now;
    if (due <= 0 || this.#pending.size <= WAKE_SLICE) this.#wakeAll(now);
    else {
      this.#wakeTimer = setTimeout(() => {
        this.#wakeTimer = undefined;
        this.#wakeAll(performance.now());
      }, due);
      this.#wakeTimer.unref();
    }
  }

  #wakeAll(now: number): void {
    this.#lastWake = now;
    const pending = [...this.#pending];
    this.#pending = new Set();
    this.#waking = true;
    this.#wakeSlice(pending, 0);
  }

  /**
   * Wakes subscriptions a slice at a time, yielding to the event loop between slices: each woken
   * consumer writes to its socket in the same microtask run, and a thousand of them in one run
   * would keep appends (and everything else) waiting for the whole burst. Only one wake-up goes
   * through its slices at a time; what was published meanwhile waits for the next, scheduled when
   * this one ends. Two wake-ups running side by side would write two slices per turn of the loop,
   * three slices, and so on: longer turns made the next flush overlap too, until every turn wrote
   * to every stream. Node accepts one new connection per turn (libuv since 1.45), so a POST on a
   * new connection then waited in the accept queue for a hundred turns of 20–70 ms each.
   */
  #wakeSlice(pending: readonly Subscription[], start: number): void {
    const end = Math.min(pending.length, start + WAKE_SLICE);
    for (let i = start; i < end; i++) (pending[i] as Subscription).wake();
    if (end < pending.length) {
      setImmediate(() => this.#wakeSlice(pending, end));
      return;
    }
    const next = () => {
      this.#waking = false;
      if (!this.#closed) this.#scheduleWake(performance.now());
    };
    // A wake-up of one slice ended in the turn it began; after a longer one, this turn had its slice.
    if (start === 0) next();
    else setImmediate(next);
  }

  /** Ends every subscription (shutdown): streams finish and clients resume by id. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#wakeTimer);
    this.#stopRevalidating();
    for (const subscription of [...this.#subscriptions.keys()]) subscription.close("shutdown");
  }
}
