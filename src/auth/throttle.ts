import { EventsDbError } from "../errors.js";
import { type Clock, SlidingWindow } from "./sliding-window.js";
import { clientKey, type Principal } from "./tokens.js";

/** Failed authentications allowed per client address in any minute; beyond, 429 (token guessing). */
export const AUTH_FAILURES_PER_MINUTE = 30;
const MINUTE_MS = 60_000;
/** Callers remembered by each window (~150 bytes each); beyond, new ones go uncounted. */
const MAX_KEYS = 100_000;

/** Routes --rate-limit never counts: load balancers' and orchestrators' probes, and scrapes. */
const UNLIMITED_ROUTES: ReadonlySet<string> = new Set(["/healthz", "/readyz", "/metrics"]);
const UNLIMITED_PREFIX = "/grpc.health.v1.Health/";

/** Why a request was refused (the label of eventsdb_requests_refused_total). */
export type RefusedReason = "failed_authentications" | "rate_limit";

export interface GuardOptions {
  /** --rate-limit: requests per minute per caller; 0 = off. */
  readonly rateLimitPerMinute: number;
  readonly clock?: Clock;
  /** Called for each refusal (the metric). */
  readonly onRefused?: (reason: RefusedReason) => void;
}

/**
 * The one rule for who is served, applied by the request pipeline (transports/pipeline.ts) to
 * every request of every transport, the gRPC unary fast path included, and to sign-in:
 * - an address with AUTH_FAILURES_PER_MINUTE failed authentications in the last minute is refused
 *   every request that needs authentication, whatever its token — so the right token cannot be
 *   told apart from a wrong one by its answer while guessing is throttled;
 * - --rate-limit counts each authenticated caller (by token name, or by address when the server is
 *   open) over every route except health, readiness and metrics.
 * Both are sliding windows on a monotonic clock; refusals say how long to wait.
 */
export class Guard {
  readonly #failures: SlidingWindow;
  readonly #requests: SlidingWindow | undefined;
  readonly #onRefused: (reason: RefusedReason) => void;

  constructor(options: GuardOptions) {
    this.#onRefused = options.onRefused ?? (() => {});
    this.#failures = new SlidingWindow({
      limit: AUTH_FAILURES_PER_MINUTE,
      windowMs: MINUTE_MS,
      maxKeys: MAX_KEYS,
      ...(options.clock === undefined ? {} : { clock: options.clock }),
    });
    this.#requests =
      options.rateLimitPerMinute > 0
        ? new SlidingWindow({
            limit: options.rateLimitPerMinute,
            windowMs: MINUTE_MS,
            maxKeys: MAX_KEYS,
            ...(options.clock === undefined ? {} : { clock: options.clock }),
          })
        : undefined;
  }

  /** Throws too_many_requests while the address is throttled for failed authentications. */
  checkAddress(address: string): void {
    const wait = this.#failures.wait(address);
    if (wait > 0) {
      this.#onRefused("failed_authentications");
      throw new EventsDbError(
        "too_many_requests",
        `too many failed authentications from this address; retry in ${seconds(wait)} s`,
        { retryAfterSeconds: seconds(wait) },
      );
    }
  }

  /** Counts a failed authentication of the address. */
  failed(address: string): void {
    this.#failures.add(address);
  }

  /** Counts a request of the caller against --rate-limit; throws too_many_requests beyond it. */
  admit(principal: Principal, address: string, route: string): void {
    if (this.#requests === undefined || !rateLimited(route)) return;
    const wait = this.#requests.take(clientKey(principal, address));
    if (wait > 0) {
      this.#onRefused("rate_limit");
      throw new EventsDbError(
        "too_many_requests",
        `rate limit of ${this.#requests.limit} requests per minute exceeded; retry in ${seconds(wait)} s`,
        { retryAfterSeconds: seconds(wait) },
      );
    }
  }
}

/** Whether --rate-limit counts requests to this route (health, readiness and metrics: never). */
export function rateLimited(route: string): boolean {
  return !UNLIMITED_ROUTES.has(route) && !route.startsWith(UNLIMITED_PREFIX);
}

/** Whole seconds to wait, at least 1 (Retry-After, RFC 9110 §10.2.3, is in whole seconds). */
function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
