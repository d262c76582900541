import type { EventFilter, Page, PageQuery, StoredEvent } from "../events/event.js";

/** Largest catch-up page read from the store at once. */
export const MAX_CATCH_UP_PAGE = 1000;
/** Catch-up pages grow while the largest event seen times the page size stays under this. */
export const CATCH_UP_READ_BYTES = 4 * 1024 * 1024;
/** Retry delays while the store cannot be read: streams wait for it instead of failing. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 2000;

export interface SubscriptionOptions {
  readonly filter: EventFilter;
  /** Deliver events with id > fromId. */
  readonly fromId: number;
  /** Live events held for a slow consumer; beyond it the buffer is dropped for paged catch-up. */
  readonly bufferSize: number;
  /** Events per catch-up page at first, and most events in one yielded batch. */
  readonly batchSize: number;
  /** Reads a page from the store. */
  readonly page: (query: PageQuery) => Promise<Page>;
  readonly onOverflow: () => void;
  readonly onCatchUp: () => void;
  /** A page read failed; the subscription waits and retries from the same cursor. */
  readonly onStoreError?: (error: unknown) => void;
}

/**
 * The subscription engine every stream transport shares: an async iterable of event batches.
 *
 * The hub registers it before it first pages (so live events published meanwhile are buffered);
 * it pages from the store from `fromId` until caught up, then hands over the buffered live events
 * whose ids it has not delivered yet, then stays live. So each subscription sees strictly
 * increasing ids, no duplicate and no gap. The buffer is capped: a consumer that falls behind by
 * more than `bufferSize` events loses the buffer (never memory, never the writer's time) and goes
 * back to paging from its last delivered id, then rejoins live.
 */
export class Subscription implements AsyncIterable<StoredEvent[]> {
  readonly filter: EventFilter;
  readonly #options: SubscriptionOptions;
  #cursor: number;
  #buffer: StoredEvent[] = [];
  #overflowed = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #onClose: (() => void)[];

  constructor(options: SubscriptionOptions, onClose: () => void) {
    this.filter = options.filter;
    this.#options = options;
    this.#cursor = options.fromId;
    this.#onClose = [onClose];
  }

  /** Runs `fn` once when the subscription closes. */
  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#onClose.push(fn);
  }

  /** The last id delivered (or the starting cursor). */
  get cursor(): number {
    return this.#cursor;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Called by the hub for each matching live event, in id order. Never blocks. Returns whether
   * the event was taken; the hub then wakes the consumer with `wake()`.
   */
  offer(event: StoredEvent): boolean {
    if (this.#closed || this.#overflowed || event.id <= this.#cursor) return false;
    const last = this.#buffer.at(-1);
    if (last !== undefined && event.id <= last.id) return false; // matched through two of its subjects
    if (this.#buffer.length >= this.#options.bufferSize) {
      this.#overflowed = true;
      this.#buffer = [];
      this.#options.onOverflow();
    } else {
      this.#buffer.push(event);
    }
    return true;
  }

  /** Lets a consumer waiting for live events take what is buffered. */
  wake(): void {
    this.#notify();
  }

  /** Ends the iteration (the consumer left, or the server shuts down). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#buffer = [];
    this.#notify();
    const callbacks = this.#onClose;
    this.#onClose = [];
    for (const fn of callbacks) fn();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<StoredEvent[], void, undefined> {
    try {
      let catchingUp = true;
      let pageSize = this.#options.batchSize;
      while (!this.#closed) {
        if (catchingUp) {
          const page = await this.#readPage(pageSize);
          if (page === undefined || this.#closed) return;
          let largest = 0;
          for (const event of page.events) largest = Math.max(largest, event.data.length);
          for (let i = 0; i < page.events.length; i += this.#options.batchSize) {
            const batch = page.events.slice(i, i + this.#options.batchSize);
            this.#cursor = (batch.at(-1) as StoredEvent).id;
            yield batch;
            if (this.#closed) return;
          }
          if (page.hasMore) {
            // Grow pages while events are small, so a long catch-up costs few queries.
            pageSize = Math.min(
              MAX_CATCH_UP_PAGE,
              Math.max(this.#options.batchSize, Math.floor(CATCH_UP_READ_BYTES / Math.max(largest, 1024))),
            );
            continue;
          }
          if (this.#overflowed) {
            // Live events were dropped while paging: they are committed, so page on.
            this.#overflowed = false;
            continue;
          }
          catchingUp = false;
          continue;
        }
        if (this.#overflowed) {
          this.#overflowed = false;
          this.#buffer = [];
          catchingUp = true;
          pageSize = this.#options.batchSize;
          this.#options.onCatchUp();
          continue;
        }
        const ready = this.#takeReady();
        if (ready.length > 0) {
          this.#cursor = (ready.at(-1) as StoredEvent).id;
          yield ready;
          continue;
        }
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
      }
    } finally {
      this.close();
    }
  }

  /**
   * A catch-up page; while the store is unreachable it waits (backing off) and tries again from
   * the same cursor, so the stream resumes without a gap when the store returns.
   */
  async #readPage(limit: number): Promise<Page | undefined> {
    let delay = RETRY_FIRST_MS;
    while (!this.#closed) {
      try {
        return await this.#options.page({ ...this.filter, fromId: this.#cursor, limit });
      } catch (error) {
        this.#options.onStoreError?.(error);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wake = undefined;
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
    return undefined;
  }

  /** Buffered events past the cursor, at most one batch. */
  #takeReady(): StoredEvent[] {
    let start = 0;
    while (start < this.#buffer.length && (this.#buffer[start] as StoredEvent).id <= this.#cursor) start++;
    const end = Math.min(this.#buffer.length, start + this.#options.batchSize);
    const ready = this.#buffer.slice(start, end);
    this.#buffer = this.#buffer.slice(end);
    return ready;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
