/**
 * When to try a failed delivery again: exponential backoff with full jitter (a random wait between
 * 0 and base·2^(attempt-1), capped), so that many subscriptions failing at once against one sink do
 * not retry in lockstep; a 429 or 503 with Retry-After waits what the sink asked for, capped.
 */

export interface RetryPolicy {
  /** --webhook-backoff-ms: the first retry waits up to this long. */
  readonly baseMs: number;
  /** --webhook-backoff-max-seconds, in ms: no wait is longer (Retry-After included). */
  readonly maxMs: number;
  /** --webhook-max-attempts: after this many failed attempts at one event, it is parked. */
  readonly maxAttempts: number;
  /** --webhook-max-retry-seconds, in ms: after failing one event this long, it is parked. */
  readonly maxRetryMs: number;
}

/** Full-jitter backoff after `attempt` failures (1 = the first): uniform in [0, min(max, base·2^(attempt-1))]. */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(random() * ceiling);
}

/**
 * A Retry-After header (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) as milliseconds from
 * `now`, at most `maxMs`; undefined when absent or unreadable (then the backoff applies).
 */
export function retryAfterMs(
  header: string | undefined,
  maxMs: number,
  now = Date.now(),
): number | undefined {
  if (header === undefined) return undefined;
  const text = header.trim();
  let ms: number;
  if (/^\d+$/.test(text)) ms = Number(text) * 1000;
  else {
    // An HTTP-date names its day and month (Date.parse alone would read "-1" as a year).
    const at = /^[A-Za-z]{3},? /.test(text) ? Date.parse(text) : Number.NaN;
    if (Number.isNaN(at)) return undefined;
    ms = Math.max(0, at - now);
  }
  return Math.min(ms, maxMs);
}

/** Resolves after `ms`, or at once when `signal` aborts (then the caller checks the signal). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Spaces requests to honour the rate a sink granted in its handshake (WebHook-Allowed-Rate,
 * requests per minute): each request starts at least 60000/rate ms after the one before.
 */
export class Pacer {
  readonly #intervalMs: number;
  #next = 0;

  /** `ratePerMinute` undefined = no limit. */
  constructor(ratePerMinute: number | undefined) {
    this.#intervalMs = ratePerMinute === undefined || ratePerMinute <= 0 ? 0 : 60_000 / ratePerMinute;
  }

  /** Waits for this request's turn (at once without a limit). */
  async turn(signal: AbortSignal): Promise<void> {
    if (this.#intervalMs === 0) return;
    const now = performance.now();
    const at = Math.max(now, this.#next);
    this.#next = at + this.#intervalMs;
    await sleep(at - now, signal);
  }
}
