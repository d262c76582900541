/**
 * Subscriptions by subject, so a publish costs per matching subscription, not per connected
 * client: exact subjects in one map; recursive ones by their subject, found from an event's
 * subject by walking its `/`-separated ancestors (`a/b/c` → `a`, `a/b`, `a/b/c`); "all subjects"
 * in a set of their own, the only ones an event without a subject reaches.
 */
export class SubjectIndex<T> {
  readonly #exact = new Map<string, Set<T>>();
  readonly #recursive = new Map<string, Set<T>>();
  readonly #all = new Set<T>();

  /** Adds `item` under each subject (none = every subject). */
  add(item: T, subjects: readonly string[], recursive: boolean): void {
    if (subjects.length === 0) {
      this.#all.add(item);
      return;
    }
    const map = recursive ? this.#recursive : this.#exact;
    for (const subject of subjects) {
      const set = map.get(subject);
      if (set === undefined) map.set(subject, new Set([item]));
      else set.add(item);
    }
  }

  delete(item: T, subjects: readonly string[], recursive: boolean): void {
    if (subjects.length === 0) {
      this.#all.delete(item);
      return;
    }
    const map = recursive ? this.#recursive : this.#exact;
    for (const subject of subjects) {
      const set = map.get(subject);
      if (set === undefined) continue;
      set.delete(item);
      if (set.size === 0) map.delete(subject);
    }
  }

  /**
   * Calls `fn` for every item whose subjects match `subject` (an item may come more than once).
   * An event without a subject (undefined) matches only the items for every subject.
   */
  forEachMatch(subject: string | undefined, fn: (item: T) => void): void {
    for (const item of this.#all) fn(item);
    if (subject === undefined) return;
    const exact = this.#exact.get(subject);
    if (exact !== undefined) for (const item of exact) fn(item);
    if (this.#recursive.size === 0) return;
    for (let end = subject.indexOf("/"); ; end = subject.indexOf("/", end + 1)) {
      const ancestor = end === -1 ? subject : subject.slice(0, end);
      const set = this.#recursive.get(ancestor);
      if (set !== undefined) for (const item of set) fn(item);
      if (end === -1) return;
    }
  }
}
