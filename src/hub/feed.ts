import type { Page, PageQuery, StoredEvent } from "../events/event.js";

/** Events read per query when the feed fills a gap from the store. */
const GAP_PAGE = 1000;

export interface FeedOptions {
  /** The highest id already stored when the process starts: nothing at or below it is live. */
  readonly lastId: number;
  readonly page: (query: PageQuery) => Promise<Page>;
  readonly publish: (events: readonly StoredEvent[]) => void;
  /** Whether anyone listens; the feed polls only then. */
  readonly listening: () => boolean;
  /** Milliseconds between polls for commits of other processes; 0 = never poll. */
  readonly pollMs: number;
  readonly onError: (error: unknown) => void;
}

/**
 * Hands every committed event to the hub exactly once, in id order — also events that other
 * processes appended to the same database. Ids are allocated in commit order across processes
 * (sql/mysql/002_event_sequence.sql), so a hole before a local batch can only be commits of
 * others (or deleted events): the feed reads it from the store before publishing the batch. A
 * poll does the same while the process itself appends nothing. Publishing and polling take one
 * lock, so they never interleave.
 */
export class CommitFeed {
  readonly #options: FeedOptions;
  #lastPublished: number;
  #lock: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  /** A poll is waiting for the lock or running. */
  #polling = false;

  constructor(options: FeedOptions) {
    this.#options = options;
    this.#lastPublished = options.lastId;
    if (options.pollMs > 0) {
      this.#timer = setInterval(() => {
        // One poll at a time: while one waits (for the lock or a slow store), the next ones are
        // skipped, not queued — a frozen store would otherwise meet a pile of them when it thaws.
        if (this.#polling || !options.listening()) return;
        this.#polling = true;
        void this.#exclusive(async () => {
          await this.#readUpTo(Number.MAX_SAFE_INTEGER);
        }).finally(() => {
          this.#polling = false;
        });
      }, options.pollMs);
      this.#timer.unref();
    }
  }

  /** Called by the writer after each COMMIT with the events it created, in id order. */
  committed(events: readonly StoredEvent[]): Promise<void> {
    return this.#exclusive(async () => {
      const first = events[0];
      if (first === undefined) return;
      if (first.id > this.#lastPublished + 1 && this.#options.listening()) {
        // If this read fails the batch waits for the next poll, which reads it back in order.
        if (!(await this.#readUpTo(first.id - 1))) return;
      }
      const fresh = events.filter((event) => event.id > this.#lastPublished);
      if (fresh.length === 0) return;
      this.#lastPublished = (fresh.at(-1) as StoredEvent).id;
      this.#options.publish(fresh);
    });
  }

  close(): void {
    clearInterval(this.#timer);
  }

  /** Publishes stored events with lastPublished < id ≤ upTo; false if the store failed. */
  async #readUpTo(upTo: number): Promise<boolean> {
    try {
      for (;;) {
        const page = await this.#options.page({
          subjects: [],
          recursive: false,
          type: undefined,
          fromId: this.#lastPublished,
          limit: GAP_PAGE,
        });
        const events = page.events.filter((event) => event.id <= upTo);
        if (events.length > 0) {
          this.#lastPublished = (events.at(-1) as StoredEvent).id;
          this.#options.publish(events);
        }
        if (!page.hasMore || events.length < page.events.length) return true;
      }
    } catch (error) {
      this.#options.onError(error);
      return false;
    }
  }

  #exclusive(fn: () => Promise<void>): Promise<void> {
    const run = this.#lock.then(fn);
    this.#lock = run.catch(() => {});
    return run;
  }
}
