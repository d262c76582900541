import { errorReason, type Logger } from "./log.js";

/** While a dependency keeps failing, how often that is said again. */
export const STILL_FAILING_LOG_MS = 30_000;

/**
 * The one log rule for a dependency's failures (the store): a line when it starts failing (with
 * the error and its stack), a line at most every STILL_FAILING_LOG_MS while it goes on (how many
 * failures since, the last reason), a line when it works again (how long, how many) — and every
 * failure counted by `count(operation)` (a metric). An outage under load so writes a few lines
 * instead of a stack per failed request. A dependency that flaps (fails, works, fails…) is damped
 * the same way: a new "failing" line comes at most every STILL_FAILING_LOG_MS, and "works again"
 * only after a "failing" line.
 *
 * Intervals use a monotonic clock: a wall-clock step must not silence or flood the log.
 */
export class FailureLog {
  readonly #log: Logger;
  readonly #count: (operation: string) => void;
  readonly #intervalMs: number;
  readonly #now: () => number;
  /** Errors this rule has seen already (wrapped and thrown on): seen again, they are not counted twice. */
  readonly #seen = new WeakSet<object>();
  #failing = false;
  /** A "failing" line was written for the current failure. */
  #announced = false;
  #since = 0;
  #nextLine = Number.NEGATIVE_INFINITY;
  #failuresSinceLine = 0;
  #failures = 0;

  constructor(
    log: Logger,
    count: (operation: string) => void,
    options: { intervalMs?: number; now?: () => number } = {},
  ) {
    this.#log = log;
    this.#count = count;
    this.#intervalMs = options.intervalMs ?? STILL_FAILING_LOG_MS;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Whether the dependency's last call failed. */
  get failing(): boolean {
    return this.#failing;
  }

  /**
   * One failed call. `error` is what the dependency threw; `reported`, when given, is what the
   * caller throws on (so a layer above that sees it again does not count it twice).
   */
  failed(operation: string, error: unknown, reported?: object): void {
    if (typeof error === "object" && error !== null) {
      if (this.#seen.has(error)) return;
      this.#seen.add(error);
    }
    if (reported !== undefined) this.#seen.add(reported);
    this.#count(operation);
    const now = this.#now();
    if (!this.#failing) {
      this.#failing = true;
      this.#since = now;
      this.#failures = 0;
    }
    this.#failures++;
    this.#failuresSinceLine++;
    if (now < this.#nextLine) return;
    if (this.#announced) {
      this.#log.warn(
        {
          operation,
          reason: errorReason(error),
          failures: this.#failuresSinceLine,
          failingSeconds: seconds(now - this.#since),
        },
        "store still failing",
      );
    } else {
      this.#log.error({ operation, err: error }, "store failing");
      this.#announced = true;
    }
    this.#failuresSinceLine = 0;
    this.#nextLine = now + this.#intervalMs;
  }

  /** One call that worked: the end of a failure, if there was one. */
  succeeded(): void {
    if (!this.#failing) return;
    this.#failing = false;
    if (!this.#announced) return;
    this.#announced = false;
    this.#log.info(
      { failingSeconds: seconds(this.#now() - this.#since), failures: this.#failures },
      "store works again",
    );
  }
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}
