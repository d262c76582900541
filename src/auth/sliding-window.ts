/**
 * Milliseconds on a monotonic clock. Intervals (rate limits, throttles, caches) are measured on it,
 * never on the wall clock: a wall clock stepped back an hour must not turn a one-minute window into
 * an hour (nor a step forward into nothing). Tests inject their own.
 */
export type Clock = () => number;

/** performance.now(): monotonic, unaffected by changes of the system time. */
export const monotonicClock: Clock = () => performance.now();

/** Sub-windows per window: the resolution at which counted events leave the window. */
const BUCKETS = 20;
/** Buckets kept: the window's 20 and the one it partly reaches back into. */
const RING = BUCKETS + 1;

export interface SlidingWindowOptions {
  /** Most events per key in any window. */
  readonly limit: number;
  readonly windowMs: number;
  /** Most keys remembered; beyond (after forgetting idle ones) new keys are not counted. */
  readonly maxKeys: number;
  readonly clock?: Clock;
}

interface Counts {
  /** Index of the newest bucket (floor(now / bucketMs)). */
  newest: number;
  /** Events per bucket, a ring indexed by bucket index modulo RING. */
  readonly buckets: Uint32Array;
  /** Sum of the buckets. */
  total: number;
}

/**
 * Events per key in a sliding window, kept as a ring of sub-window counts (O(1) memory per key).
 * The count covers every bucket that overlaps the last window, so it never undercounts:
 * no window of `windowMs` ever holds more than `limit` events, wherever it starts. A fixed window
 * lets a burst at the end of one window be followed by another at the start of the next — twice
 * the limit within seconds. The price of the guarantee is that an event leaves the count up to
 * one bucket (a twentieth of the window) late.
 */
export class SlidingWindow {
  readonly #limit: number;
  readonly #bucketMs: number;
  readonly #maxKeys: number;
  readonly #clock: Clock;
  readonly #counts = new Map<string, Counts>();

  constructor(options: SlidingWindowOptions) {
    this.#limit = options.limit;
    this.#bucketMs = options.windowMs / BUCKETS;
    this.#maxKeys = options.maxKeys;
    this.#clock = options.clock ?? monotonicClock;
  }

  get limit(): number {
    return this.#limit;
  }

  /** Milliseconds until one more event of this key would be allowed; 0 = allowed now. */
  wait(key: string): number {
    const now = this.#clock();
    const counts = this.#counts.get(key);
    if (counts === undefined) return 0;
    const newest = this.#bucket(now);
    this.#roll(counts, newest);
    if (counts.total + 1 <= this.#limit) return 0;
    // The oldest buckets leave the window one by one; find the one whose leaving makes room.
    let left = counts.total;
    for (let bucket = newest - RING + 1; bucket <= newest; bucket++) {
      left -= counts.buckets[slot(bucket)] as number;
      if (left + 1 <= this.#limit) return Math.max(1, (bucket + RING) * this.#bucketMs - now);
    }
    return Math.max(1, (newest + RING) * this.#bucketMs - now); // unreachable: left ends at 0
  }

  /** Counts one event of this key, allowed or not. */
  add(key: string): void {
    const now = this.#clock();
    const newest = this.#bucket(now);
    let counts = this.#counts.get(key);
    if (counts === undefined) {
      if (this.#counts.size >= this.#maxKeys) this.#forgetIdle(newest);
      // Still full: new keys go uncounted rather than evicting the ones being limited.
      if (this.#counts.size >= this.#maxKeys) return;
      counts = { newest, buckets: new Uint32Array(RING), total: 0 };
      this.#counts.set(key, counts);
    }
    this.#roll(counts, newest);
    counts.buckets[slot(newest)] = (counts.buckets[slot(newest)] as number) + 1;
    counts.total++;
  }

  /** Counts one event when it is allowed; returns 0 then, else the milliseconds to wait. */
  take(key: string): number {
    const wait = this.wait(key);
    if (wait === 0) this.add(key);
    return wait;
  }

  #bucket(now: number): number {
    return Math.floor(now / this.#bucketMs);
  }

  /** Empties the buckets that left the window since the key was last seen. */
  #roll(counts: Counts, newest: number): void {
    if (newest <= counts.newest) return;
    if (newest - counts.newest >= RING) {
      counts.buckets.fill(0);
      counts.total = 0;
    } else {
      for (let bucket = counts.newest + 1; bucket <= newest; bucket++) {
        counts.total -= counts.buckets[slot(bucket)] as number;
        counts.buckets[slot(bucket)] = 0;
      }
    }
    counts.newest = newest;
  }

  /** Drops keys with nothing left in the window. */
  #forgetIdle(newest: number): void {
    for (const [key, counts] of this.#counts) {
      if (newest - counts.newest >= RING) this.#counts.delete(key);
    }
  }
}

/** A bucket's place in the ring (bucket indexes before the clock's zero are negative). */
function slot(bucket: number): number {
  return ((bucket % RING) + RING) % RING;
}
