import type { Page, PageQuery, StoredEvent } from "../events/event.js";

/** Events read per query when the feed fills a gap from the store. */
const GAP_PAGE = 1000;

export interface FeedOptions {
  /** The highest id already stored when the process starts: nothing at or below it is live. */
  readonly lastId: number;
  readonly page: (query: PageQuery) => Promise<Page>;
  /**
   * The id of the last committed event of any process (event_sequence.last_id): one primary-key
   * read, what the feed watches between pages. Everything up to it is committed and visible.
   */
  readonly lastCommitted: () => Promise<number>;
  readonly publish: (events: readonly StoredEvent[]) => void;
  /** Whether anyone listens: the feed reads other processes' events only then. */
  readonly listening: () => boolean;
  /** The longest time between two looks at lastCommitted, while nothing moves (ms); 0 = never look. */
  readonly pollMs: number;
  /** The shortest, right after something moved (ms). */
  readonly pollMinMs: number;
  readonly onError: (error: unknown) => void;
}

/**
 * Hands every committed event to the hub exactly once, in id order — also events that other
 * processes appended to the same database. Ids are allocated in commit order across processes
 * (sql/mysql/002_event_sequence.sql), so a hole before a local batch can only be commits of
 * others (or deleted events): the feed reads it from the store before publishing the batch.
 * Publishing and reading take one lock, so they never interleave.
 *
 * Between local commits it watches the last committed id, a one-row primary-key read, and reads
 * events only when that moved. The look comes every pollMinMs right after something moved and
 * backs off by doubling to pollMs while nothing does: events that flow are seen within a few
 * milliseconds, and an idle process costs 1000 / pollMs cheap queries a second. While nobody
 * listens it does not read what others appended at all: it moves its cursor to the last committed
 * id (everything up to it is in the store, where a new stream's catch-up reads it), so the first
 * stream after a quiet hour does not wait for the hour's events to be read and dropped.
 */
export class CommitFeed {
  readonly #options: FeedOptions;
  #lastPublished: number;
  #lock: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** The wait before the next look: pollMinMs after a move, doubling up to pollMs. */
  #interval: number;

  constructor(options: FeedOptions) {
    this.#options = options;
    this.#lastPublished = options.lastId;
    this.#interval = options.pollMs;
    // One look at a time: the next is scheduled when one ends, so a frozen store meets one look
    // waiting for it, not a pile of them when it thaws.
    if (options.pollMs > 0) this.#schedule();
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
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => void this.#look(), this.#interval);
    this.#timer.unref();
  }

  /** One look at the last committed id; reads (or, with nobody listening, skips) what is new. */
  async #look(): Promise<void> {
    const { pollMs, pollMinMs } = this.#options;
    try {
      const end = await this.#options.lastCommitted();
      let moved = false;
      if (end > this.#lastPublished) {
        await this.#exclusive(async () => {
          if (end <= this.#lastPublished) return;
          moved = true;
          if (this.#options.listening()) await this.#readUpTo(end);
          else this.#lastPublished = end;
        });
      }
      this.#interval = moved ? Math.min(pollMinMs, pollMs) : Math.min(this.#interval * 2, pollMs);
    } catch (error) {
      this.#options.onError(error);
      this.#interval = pollMs;
    } finally {
      this.#schedule();
    }
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
