import { randomBytes } from "node:crypto";
import { type Kysely, type RawBuilder, type Selectable, sql } from "kysely";
import type { StorageDialect } from "../storage/dialect.js";
import type { Database, SubscriptionsTable } from "../storage/schema.js";
import type { Lease, SubscriptionRecord, SubscriptionSpec } from "./types.js";

/** What a new subscription starts with. */
export interface NewSubscription {
  readonly id: string;
  readonly spec: SubscriptionSpec;
  readonly owner: string;
  readonly ownerScopes: readonly string[];
  /** Delivery starts after this event id. */
  readonly position: number;
}

/**
 * The subscriptions table (sql/mysql/008_subscriptions.sql) on both stores: what the API writes
 * (create, update, delete, redrive) and what deliverers write (claim, renew, acknowledge, park).
 *
 * Leases make one process at a time deliver a subscription: `claim` takes active subscriptions whose
 * lease expired (or that never had one) with a fresh token, and every deliverer write names that
 * token, so a process that lost its lease (paused past its expiry, then resumed) writes nothing.
 * Expiry is measured on the database's clock, so processes whose clocks differ agree on it.
 */
export class SubscriptionStore {
  readonly #db: Kysely<Database>;
  /** Epoch ms on the database's clock. */
  readonly #now: RawBuilder<number>;

  constructor(dialect: StorageDialect) {
    this.#db = dialect.db;
    this.#now =
      dialect.name === "mysql"
        ? sql<number>`CAST(FLOOR(UNIX_TIMESTAMP(NOW(3)) * 1000) AS SIGNED)`
        : sql<number>`CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`;
  }

  async create(subscription: NewSubscription, now = Date.now()): Promise<SubscriptionRecord> {
    await this.#db
      .insertInto("eventsdb_subscriptions")
      .values({
        id: subscription.id,
        owner: subscription.owner,
        owner_scopes: JSON.stringify(subscription.ownerScopes),
        spec: JSON.stringify(subscription.spec),
        generation: 1,
        position: subscription.position,
        state: "active",
        lease_expires_at: 0,
        created_at: now,
        updated_at: now,
      })
      .execute();
    return this.#require(subscription.id);
  }

  async get(id: string): Promise<SubscriptionRecord | undefined> {
    const row = await this.#db
      .selectFrom("eventsdb_subscriptions")
      .selectAll()
      .where("id", "=", id)
      .executeTakeFirst();
    return row === undefined ? undefined : toRecord(row);
  }

  /** Every subscription (of one owner, if given), oldest first. */
  async list(owner?: string): Promise<SubscriptionRecord[]> {
    let query = this.#db.selectFrom("eventsdb_subscriptions").selectAll();
    if (owner !== undefined) query = query.where("owner", "=", owner);
    const rows = await query.orderBy("created_at").orderBy("id").execute();
    return rows.map(toRecord);
  }

  /**
   * Replaces the spec (PUT). A new sink must be validated again. `position`, when given, moves the
   * checkpoint. Bumps the generation, so its deliverer starts over from the row. Undefined if absent.
   */
  async update(
    id: string,
    change: { spec: SubscriptionSpec; ownerScopes: readonly string[]; position?: number },
    now = Date.now(),
  ): Promise<SubscriptionRecord | undefined> {
    const sink = change.spec.sink;
    const result = await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({
        spec: JSON.stringify(change.spec),
        owner_scopes: JSON.stringify(change.ownerScopes),
        generation: sql<number>`generation + 1`,
        updated_at: now,
        validated_sink: sql<
          string | null
        >`CASE WHEN validated_sink = ${sink} THEN validated_sink ELSE NULL END`,
        validated_rate: sql<
          number | null
        >`CASE WHEN validated_sink = ${sink} THEN validated_rate ELSE NULL END`,
        ...(change.position === undefined ? {} : { position: change.position }),
      })
      .where("id", "=", id)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 0 ? undefined : this.#require(id);
  }

  /** Deletes it; its deliverer notices at its next write or renewal. False if absent. */
  async delete(id: string): Promise<boolean> {
    const result = await this.#db
      .deleteFrom("eventsdb_subscriptions")
      .where("id", "=", id)
      .executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  /**
   * Makes a parked subscription active again (`redrive`), from `position` when given (else where it
   * stopped: the parked event is tried again). Bumps the generation. Undefined if absent.
   */
  async redrive(id: string, position?: number, now = Date.now()): Promise<SubscriptionRecord | undefined> {
    const result = await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({
        state: "active",
        parked_reason: null,
        parked_event_id: null,
        parked_at: null,
        generation: sql<number>`generation + 1`,
        updated_at: now,
        ...(position === undefined ? {} : { position }),
      })
      .where("id", "=", id)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 0 ? undefined : this.#require(id);
  }

  /**
   * Leases up to `max` active subscriptions that nobody holds (or whose lease expired) to `holder`
   * for `leaseMs`, each with a fresh token. Two processes claiming at once never get the same one:
   * each row is taken by a conditional UPDATE on the expiry it was seen with.
   */
  async claim(holder: string, leaseMs: number, max: number): Promise<Lease[]> {
    if (max <= 0) return [];
    const free = await this.#db
      .selectFrom("eventsdb_subscriptions")
      .select(["id", "lease_expires_at"])
      .where("state", "=", "active")
      .where("lease_expires_at", "<", this.#now)
      .orderBy("lease_expires_at")
      .limit(max)
      .execute();
    const leases: Lease[] = [];
    for (const row of free) {
      const token = randomBytes(16).toString("hex");
      const result = await this.#db
        .updateTable("eventsdb_subscriptions")
        .set({
          lease_token: token,
          lease_holder: holder,
          lease_expires_at: sql<number>`${this.#now} + ${leaseMs}`,
        })
        .where("id", "=", row.id)
        .where("state", "=", "active")
        .where("lease_expires_at", "=", row.lease_expires_at)
        .executeTakeFirst();
      if (Number(result.numUpdatedRows) === 0) continue;
      const subscription = await this.get(row.id);
      if (subscription !== undefined) leases.push({ subscription, token });
    }
    return leases;
  }

  /**
   * Extends the leases still held (same token, still active) by `leaseMs` from now; returns the
   * tokens that were extended. A lease missing from the answer was lost (taken over, deleted,
   * parked): its deliverer must stop.
   */
  async renew(tokens: readonly string[], leaseMs: number): Promise<Set<string>> {
    return new Set((await this.renewGenerations(tokens, leaseMs)).keys());
  }

  /**
   * {@link renew}, answering each extended lease's token with the subscription's generation: a
   * deliverer whose record is of an older generation (the API changed it) starts over from the row.
   */
  async renewGenerations(tokens: readonly string[], leaseMs: number): Promise<Map<string, number>> {
    if (tokens.length === 0) return new Map();
    await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({ lease_expires_at: sql<number>`${this.#now} + ${leaseMs}` })
      .where("lease_token", "in", tokens)
      .where("state", "=", "active")
      .execute();
    const rows = await this.#db
      .selectFrom("eventsdb_subscriptions")
      .select(["lease_token", "generation"])
      .where("lease_token", "in", tokens)
      .where("state", "=", "active")
      .execute();
    return new Map(rows.map((r) => [r.lease_token ?? "", Number(r.generation)]));
  }

  /** The ids of the parked subscriptions (the parked gauge). */
  async parkedIds(): Promise<string[]> {
    const rows = await this.#db
      .selectFrom("eventsdb_subscriptions")
      .select("id")
      .where("state", "=", "parked")
      .orderBy("id")
      .execute();
    return rows.map((r) => r.id);
  }

  /** Gives leases up (shutdown): another process may claim them at once. */
  async release(tokens: readonly string[]): Promise<void> {
    if (tokens.length === 0) return;
    await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({ lease_token: null, lease_holder: null, lease_expires_at: 0 })
      .where("lease_token", "in", tokens)
      .execute();
  }

  /**
   * The checkpoint after the sink acknowledged everything up to `position`. Only the lease's holder
   * writes it, and only forward. False when the lease was lost (the deliverer must stop).
   */
  async acknowledge(lease: Lease, position: number, now = Date.now()): Promise<boolean> {
    const result = await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({
        position: sql<number>`CASE WHEN position < ${position} THEN ${position} ELSE position END`,
        updated_at: now,
      })
      .where("id", "=", lease.subscription.id)
      .where("lease_token", "=", lease.token)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Parks it (delivery gave up on `eventId`) and ends the lease. False when the lease was lost. */
  async park(lease: Lease, reason: string, eventId: number | undefined, now = Date.now()): Promise<boolean> {
    const result = await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({
        state: "parked",
        parked_reason: reason.slice(0, 1000),
        parked_event_id: eventId ?? null,
        parked_at: now,
        updated_at: now,
        lease_token: null,
        lease_holder: null,
        lease_expires_at: 0,
      })
      .where("id", "=", lease.subscription.id)
      .where("lease_token", "=", lease.token)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /** Records a successful handshake with `sink` and the rate it allowed. False when the lease was lost. */
  async validated(lease: Lease, sink: string, ratePerMinute: number | undefined): Promise<boolean> {
    const result = await this.#db
      .updateTable("eventsdb_subscriptions")
      .set({ validated_sink: sink, validated_rate: ratePerMinute ?? null })
      .where("id", "=", lease.subscription.id)
      .where("lease_token", "=", lease.token)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  async #require(id: string): Promise<SubscriptionRecord> {
    const record = await this.get(id);
    if (record === undefined) throw new Error(`subscription ${id} vanished while being written`);
    return record;
  }
}

function toRecord(row: Selectable<SubscriptionsTable>): SubscriptionRecord {
  const expiresAt = Number(row.lease_expires_at);
  return {
    id: row.id,
    spec: JSON.parse(row.spec) as SubscriptionSpec,
    generation: Number(row.generation),
    owner: row.owner,
    ownerScopes: JSON.parse(row.owner_scopes) as string[],
    position: Number(row.position),
    state: row.state === "parked" ? "parked" : "active",
    parked:
      row.state === "parked"
        ? {
            reason: row.parked_reason ?? "",
            eventId: row.parked_event_id === null ? undefined : Number(row.parked_event_id),
            at: Number(row.parked_at ?? 0),
          }
        : undefined,
    validatedSink: row.validated_sink ?? undefined,
    validatedRate: row.validated_rate === null ? undefined : Number(row.validated_rate),
    lease: row.lease_holder === null || expiresAt === 0 ? undefined : { holder: row.lease_holder, expiresAt },
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}
