import { type AppendState, sameState } from "./dialect.js";

/** Bytes the cache may hold (subjects as UTF-16 plus a per-entry allowance), about 20k subjects. */
export const SUBJECT_HEADS_MAX_BYTES = 4 * 1024 * 1024;
const ENTRY_BYTES = 64;

/**
 * Subjects' last event ids as of one state of the store (AppendState: last id and deletions),
 * learned from reads under the append lock and kept current by this process's own appends. An
 * append with preconditions on subjects all known here needs no read: it is planned from these
 * and sent whole, and the store refuses it (see StorageDialect.append) if anything was appended or
 * deleted since that state — then it is planned again from reads under the lock.
 *
 * Least recently used subjects go first once the byte cap is reached.
 */
export class SubjectHeads {
  readonly #maxBytes: number;
  #at: AppendState | undefined;
  readonly #ids = new Map<string, number>();
  #bytes = 0;

  constructor(maxBytes = SUBJECT_HEADS_MAX_BYTES) {
    this.#maxBytes = maxBytes;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#ids.size;
  }

  /** Whether every subject is known (as of some state: `at` tells whether it is still current). */
  covers(subjects: readonly string[]): boolean {
    return this.#at !== undefined && subjects.every((subject) => this.#ids.has(subject));
  }

  /** The subjects' last ids (0 = none) if known as of exactly `state`, else undefined. */
  at(state: AppendState, subjects: readonly string[]): Map<string, number> | undefined {
    if (this.#at === undefined || !sameState(this.#at, state)) return undefined;
    const found = new Map<string, number>();
    for (const subject of subjects) {
      const id = this.#ids.get(subject);
      if (id === undefined) return undefined;
      // Used: to the back of the eviction order.
      this.#ids.delete(subject);
      this.#ids.set(subject, id);
      found.set(subject, id);
    }
    return found;
  }

  /**
   * After an append planned from `from` committed and left the store at `to`: `read` holds last
   * ids read under its lock (true as of `from`), `appended` the subjects of its new events with
   * their ids, in id order. What was known as of another state than `from` is forgotten.
   */
  advance(
    from: AppendState,
    to: AppendState,
    read: ReadonlyMap<string, number>,
    appended: Iterable<readonly [string, number]>,
  ): void {
    if (this.#at === undefined || !sameState(this.#at, from)) this.clear();
    for (const [subject, id] of read) this.#set(subject, id);
    for (const [subject, id] of appended) this.#set(subject, id);
    this.#at = to;
  }

  /** Forgets everything (a DELETE changes subjects' last events without an append). */
  clear(): void {
    this.#ids.clear();
    this.#bytes = 0;
    this.#at = undefined;
  }

  #set(subject: string, id: number): void {
    if (this.#ids.delete(subject)) this.#bytes -= entryBytes(subject);
    this.#ids.set(subject, id);
    this.#bytes += entryBytes(subject);
    for (const [oldest] of this.#ids) {
      if (this.#bytes <= this.#maxBytes) break;
      this.#ids.delete(oldest);
      this.#bytes -= entryBytes(oldest);
    }
  }
}

function entryBytes(subject: string): number {
  return subject.length * 2 + ENTRY_BYTES;
}
