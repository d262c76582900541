import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { canRead, type Principal } from "../auth/tokens.js";
import { EventsDbError, invalidArgument } from "../errors.js";
import type { FailureLog } from "../failure-log.js";
import type { StorageDialect } from "../storage/dialect.js";
import { checkSinkUrl, SinkRefused } from "./delivery/sink-guard.js";
import {
  type ParsedSubscription,
  parseStart,
  parseSubscription,
  renderSubscription,
  type StartPosition,
  type SubscriptionResource,
} from "./spec.js";
import { SubscriptionStore } from "./store.js";
import type { SinkCredential, SubscriptionRecord, SubscriptionSpec } from "./types.js";

/** --max-subscriptions' default. */
export const DEFAULT_MAX_SUBSCRIPTIONS = 1000;

export interface SubscriptionServiceOptions {
  readonly dialect: StorageDialect;
  /** The store's current last event id ("from now", lag). */
  readonly lastId: () => Promise<number>;
  /** --max-subscriptions: creating more is refused with 429. */
  readonly maxSubscriptions: number;
  /** Counts refusals by the cap (eventsdb_subscription_refusals_total); absent in unit tests. */
  readonly onRefused?: () => void;
  /**
   * The store's failure rule (failure-log.ts): a failed database call is logged once per change
   * of state, counted, and answered 503 + Retry-After like the EventLog's own reads.
   */
  readonly failures: FailureLog;
  /**
   * --webhook-allow-private: whether a sink may be a loopback, private or link-local address. Without
   * it a literal such address is refused here (400); names are checked where they resolve, at
   * delivery (delivery/sink-guard.ts, the one rule of which addresses are private).
   */
  readonly allowPrivateSinks: boolean;
  /**
   * After a subscription was created, changed, redriven or deleted: this process's deliverer
   * claims or restarts it at once instead of at its next lease tick.
   */
  readonly onChanged?: () => void;
}

/**
 * Managing subscriptions (the CloudEvents Subscriptions API): the one place REST and every
 * Connect/gRPC kind call, so parsing (spec.ts), scopes, visibility and the cap are one rule each.
 *
 * Scopes: a token may subscribe only to what it may read — the config subject (with everything
 * below it when recursive) must lie within one of its read scopes; no subject means every subject,
 * events without one included, which needs the read scope "*". The token's read scopes at create
 * (and at each update) are stored with it, so delivery is cut to them even when the token later
 * gets more.
 *
 * Visibility: a token sees, changes, redrives and deletes only the subscriptions it created (by
 * token name); a token with the write scope "*" (an administrator: AUTH_TOKEN, an open server)
 * sees all of them. Others' ids answer 404, as if absent, so ids do not leak.
 */
export class SubscriptionService {
  readonly #store: SubscriptionStore;
  readonly #options: SubscriptionServiceOptions;

  constructor(options: SubscriptionServiceOptions) {
    this.#options = options;
    this.#store = new SubscriptionStore(options.dialect);
  }

  async create(principal: Principal, body: unknown): Promise<SubscriptionResource> {
    const parsed = parseSubscription(body, "create");
    this.#checkSink(parsed.spec.sink);
    requireReadable(principal, parsed.spec);
    const spec = { ...parsed.spec, sinkcredential: credential(parsed, undefined) };
    const lastId = await this.#lastId();
    const from = parsed.from ?? "now";
    // The count and the insert under one lock: concurrent creates (here or in another process)
    // would otherwise all pass the same count and go past the cap together.
    const record = await this.#call(() =>
      this.#options.dialect.withLock("subscriptions_create", async () => {
        const count = await this.#count();
        if (count >= this.#options.maxSubscriptions) return count;
        return this.#store.create({
          id: randomUUID(),
          spec,
          owner: principal.name,
          ownerScopes: [...principal.read],
          position: from === "now" ? lastId : from,
        });
      }),
    );
    if (typeof record === "number") {
      this.#options.onRefused?.();
      throw new EventsDbError(
        "too_many_requests",
        `this server holds ${record} subscriptions, its limit (--max-subscriptions ${this.#options.maxSubscriptions}); delete some first`,
      );
    }
    this.#options.onChanged?.();
    return renderSubscription(record, lastId);
  }

  /** The caller's subscriptions (an administrator's: all), oldest first. */
  async list(principal: Principal): Promise<SubscriptionResource[]> {
    const records = await this.#call(() =>
      this.#store.list(isAdministrator(principal) ? undefined : principal.name),
    );
    const lastId = await this.#lastId();
    return records.map((record) => renderSubscription(record, lastId));
  }

  async get(principal: Principal, id: string): Promise<SubscriptionResource> {
    const record = await this.#visible(principal, id);
    return renderSubscription(record, await this.#lastId());
  }

  /**
   * Replaces the subscription object (PUT): every field as sent, defaults for the absent ones. The
   * sink credential stays when it is absent (or sent as rendered, without the token) and the sink
   * is unchanged; `"sinkcredential": null` removes it. A changed sink with a stored credential needs
   * the credential sent again (or null): a token meant for one endpoint is never sent to another.
   */
  async update(principal: Principal, id: string, body: unknown): Promise<SubscriptionResource> {
    const parsed = parseSubscription(body, "update");
    const sentId = (body as { id?: unknown }).id;
    if (sentId !== undefined && sentId !== id) {
      throw invalidArgument(`id ${JSON.stringify(sentId)} does not match the subscription's id ${id}`);
    }
    this.#checkSink(parsed.spec.sink);
    const existing = await this.#visible(principal, id);
    requireReadable(principal, parsed.spec);
    // An administrator changing someone else's subscription may not widen it past what its owner
    // could read: it stays bounded by the owner's stored scopes, which it keeps.
    const foreign = existing.owner !== principal.name;
    if (foreign)
      requireReadable({ name: existing.owner, read: existing.ownerScopes, write: [] }, parsed.spec);
    const spec: SubscriptionSpec = { ...parsed.spec, sinkcredential: credential(parsed, existing.spec) };
    const ownerScopes = foreign ? existing.ownerScopes : [...principal.read];
    const record = await this.#call(() => this.#store.update(id, { spec, ownerScopes }));
    if (record === undefined) throw notFound(id);
    this.#options.onChanged?.();
    return renderSubscription(record, await this.#lastId());
  }

  async delete(principal: Principal, id: string): Promise<void> {
    await this.#visible(principal, id);
    if (!(await this.#call(() => this.#store.delete(id)))) throw notFound(id);
    this.#options.onChanged?.();
  }

  /**
   * Makes a parked subscription active again, from `from` when given (delivery resumes after that
   * id; "now" = after the current last event), else where it stopped (the parked event is tried
   * again). On an active subscription it only moves the position.
   */
  async redrive(principal: Principal, id: string, from?: unknown): Promise<SubscriptionResource> {
    const start: StartPosition | undefined =
      from === undefined || from === null ? undefined : parseStart(from, "from");
    await this.#visible(principal, id);
    const lastId = await this.#lastId();
    const record = await this.#call(() => this.#store.redrive(id, start === "now" ? lastId : start));
    if (record === undefined) throw notFound(id);
    this.#options.onChanged?.();
    return renderSubscription(record, lastId);
  }

  /** A sink the deliverer would refuse to connect to is refused now, with the reason. */
  #checkSink(sink: string): void {
    try {
      checkSinkUrl(new URL(sink), this.#options.allowPrivateSinks);
    } catch (error) {
      if (!(error instanceof SinkRefused)) throw error;
      throw invalidArgument(
        `sink: ${error.message}; this server delivers only to public addresses (--webhook-allow-private)`,
      );
    }
  }

  /** The stored subscription, if the caller may see it; else 404 (whether or not it exists). */
  async #visible(principal: Principal, id: string): Promise<SubscriptionRecord> {
    const record = await this.#call(() => this.#store.get(id));
    if (record === undefined || !(isAdministrator(principal) || record.owner === principal.name)) {
      throw notFound(id);
    }
    return record;
  }

  #lastId(): Promise<number> {
    return this.#call(() => this.#options.lastId());
  }

  /** One database call under the store's failure rule: a failure is answered 503 (unavailable). */
  async #call<T>(fn: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await fn();
    } catch (error) {
      if (error instanceof EventsDbError) throw error;
      const unavailable = new EventsDbError("unavailable", "the subscription store is unavailable", {
        cause: error,
        retryAfterSeconds: 1,
      });
      this.#options.failures.failed("subscriptions", error, unavailable);
      throw unavailable;
    }
    this.#options.failures.succeeded();
    return result;
  }

  async #count(): Promise<number> {
    const row = await this.#options.dialect.db
      .selectFrom("eventsdb_subscriptions")
      .select(sql<number>`COUNT(*)`.as("n"))
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }
}

/** A token with the write scope "*" manages every subscription (see SubscriptionService). */
export function isAdministrator(principal: Principal): boolean {
  return principal.write.includes("*");
}

/**
 * The one scope rule of subscriptions: the subject (and, recursive, everything below it) must be
 * readable; no subject = every subject, which needs the read scope "*" (canRead's rule for events
 * without a subject).
 */
export function requireReadable(principal: Principal, spec: Pick<SubscriptionSpec, "config">): void {
  const { subject } = spec.config;
  // A scope covering the subject covers everything below it too (covers() is by path segments).
  if (canRead(principal, subject)) return;
  throw new EventsDbError(
    "permission_denied",
    subject === undefined
      ? `token ${principal.name} may not subscribe to every subject (that needs the read scope "*"); set config.subject`
      : `token ${principal.name} may not read subject ${subject}, so it may not subscribe to it`,
  );
}

/**
 * The credential to store (see update), refused next to an Authorization header of its own: the
 * deliverer would have to pick one of the two.
 */
function credential(
  parsed: ParsedSubscription,
  existing: SubscriptionSpec | undefined,
): SinkCredential | undefined {
  const chosen = chosenCredential(parsed, existing);
  if (chosen !== undefined && "authorization" in parsed.spec.protocolsettings.headers) {
    throw invalidArgument(
      "protocolsettings.headers sets Authorization and sinkcredential sets it too; use one of the two",
    );
  }
  return chosen;
}

function chosenCredential(
  parsed: ParsedSubscription,
  existing: SubscriptionSpec | undefined,
): SinkCredential | undefined {
  if (parsed.sinkcredential !== "keep") return parsed.sinkcredential;
  if (existing === undefined || existing.sink !== parsed.spec.sink) {
    if (existing?.sinkcredential !== undefined) {
      throw invalidArgument(
        "the sink changed: send sinkcredential with its accesstoken again (or null to deliver without one)",
      );
    }
    return undefined;
  }
  return existing.sinkcredential;
}

function notFound(id: string): EventsDbError {
  return new EventsDbError("not_found", `no subscription ${id}`);
}
