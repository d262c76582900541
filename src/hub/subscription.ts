import { type EventFilter, eventSize, type Page, type PageQuery, type StoredEvent } from "../events/event.js";

/** Largest catch-up page read from the store at once (the byte budget bounds it too). */
export const MAX_CATCH_UP_PAGE = 1000;
/** Retry delays while the store cannot be read: streams wait for it instead of failing. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 2000;

/**
 * Why a subscription ended; every transport reads it to end its stream the right way (gRPC:
 * UNAVAILABLE on shutdown so that clients resume, UNAUTHENTICATED when revoked).
 */
export type CloseReason =
  /** The consumer stopped: the client disconnected or cancelled. */
  | "client left"
  /** The server is shutting down; the client should reconnect and resume from its last id. */
  | "shutdown"
  /** The credential the stream was opened with is no longer valid (removed, changed, expired). */
  | "revoked"
  /** The client stayed unwritable for --write-timeout. */
  | "write timeout"
  /** The stream failed (a bug, or a write error). */
  | "error";

export interface SubscriptionOptions {
  readonly filter: EventFilter;
  /** Deliver events with id > fromId. */
  readonly fromId: number;
  /** Live events held for a slow consumer; beyond it the buffer is dropped for paged catch-up. */
  readonly bufferSize: number;
  /**
   * Bytes of live events held (at least one event), and the byte budget of each catch-up page and
   * each yielded batch (at least one event each); see eventSize.
   */
  readonly bufferBytes: number;
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
 * increasing ids, no duplicate and no gap. The buffer is capped in events and bytes: a consumer
 * that falls behind by more than `bufferSize` events or `bufferBytes` bytes loses the buffer (never
 * memory, never the writer's time) and goes back to paging from its last delivered id, then rejoins
 * live. Every page and every batch it yields is bounded by `bufferBytes` as well.
 */
export class Subscription implements AsyncIterable<StoredEvent[]> {
  readonly filter: EventFilter;
  readonly #options: SubscriptionOptions;
  #cursor: number;
  #buffer: StoredEvent[] = [];
  /** eventSize of each buffered event, and their sum. */
  #sizes: number[] = [];
  #bufferedBytes = 0;
  #overflowed = false;
  #closed = false;
  #closeReason: CloseReason | undefined;
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

  /** Why it ended; undefined while open. */
  get closeReason(): CloseReason | undefined {
    return this.#closeReason;
  }

  /**
   * Called by the hub for each matching live event, in id order. Never blocks. Returns whether
   * the event was taken; the hub then wakes the consumer with `wake()`.
   */
  offer(event: StoredEvent): boolean {
    if (this.#closed || this.#overflowed || event.id <= this.#cursor) return false;
    const last = this.#buffer.at(-1);
    if (last !== undefined && event.id <= last.id) return false; // matched through two of its subjects
    const size = eventSize(event);
    if (
      this.#buffer.length >= this.#options.bufferSize ||
      (this.#buffer.length > 0 && this.#bufferedBytes + size > this.#options.bufferBytes)
    ) {
      this.#overflowed = true;
      this.#clearBuffer();
      this.#options.onOverflow();
    } else {
      this.#buffer.push(event);
      this.#sizes.push(size);
      this.#bufferedBytes += size;
    }
    return true;
  }

  /** Lets a consumer waiting for live events take what is buffered. */
  wake(): void {
    this.#notify();
  }

  /** Ends the iteration; the first reason given is the one that stays. Idempotent. */
  close(reason: CloseReason = "client left"): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    this.#clearBuffer();
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
          // The page is within the byte budget, so each batch of it is too.
          for (let i = 0; i < page.events.length; i += this.#options.batchSize) {
            const batch = page.events.slice(i, i + this.#options.batchSize);
            this.#cursor = (batch.at(-1) as StoredEvent).id;
            yield batch;
            if (this.#closed) return;
          }
          if (page.hasMore) {
            // Long catch-ups read large pages (few queries); the byte budget bounds each one.
            pageSize = MAX_CATCH_UP_PAGE;
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
          this.#clearBuffer();
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
      // The consumer stopped iterating (a transport that breaks out has set its reason first).
      this.close("client left");
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
        return await this.#options.page({
          ...this.filter,
          fromId: this.#cursor,
          limit,
          maxBytes: this.#options.bufferBytes,
        });
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

  /** Buffered events past the cursor, at most one batch (the buffer itself holds ≤ bufferBytes). */
  #takeReady(): StoredEvent[] {
    const all = this.#buffer;
    if (all.length <= this.#options.batchSize && (all[0] === undefined || all[0].id > this.#cursor)) {
      // The usual case of a live stream: all of it, handed over as it is (no copies).
      this.#clearBuffer();
      return all;
    }
    let start = 0;
    while (start < this.#buffer.length && (this.#buffer[start] as StoredEvent).id <= this.#cursor) start++;
    const end = Math.min(this.#buffer.length, start + this.#options.batchSize);
    const ready = this.#buffer.slice(start, end);
    for (let i = 0; i < end; i++) this.#bufferedBytes -= this.#sizes[i] as number;
    this.#buffer = this.#buffer.slice(end);
    this.#sizes = this.#sizes.slice(end);
    return ready;
  }

  #clearBuffer(): void {
    this.#buffer = [];
    this.#sizes = [];
    this.#bufferedBytes = 0;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
