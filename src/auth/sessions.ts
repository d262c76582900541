import { createHash, randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import type { Database } from "../storage/schema.js";
import { type Clock, monotonicClock } from "./sliding-window.js";

/**
 * How long a looked-up session is trusted from memory before the database is asked again: a
 * sign-out on one process is honoured by every other process within this time.
 */
export const SESSION_CACHE_MS = 1000;
/** Most sessions remembered in memory (the database holds them all). */
const CACHE_MAX = 10_000;

/** A live session: the token it was signed in with (name and fingerprint) and its expiry. */
export interface Session {
  readonly tokenName: string;
  readonly fingerprint: Buffer;
  /** Epoch ms. */
  readonly expires: number;
}

interface Cached {
  readonly session: Session | undefined;
  /** Monotonic ms until which this entry is believed. */
  readonly until: number;
}

/**
 * Browser sessions for EventSource, which cannot send an Authorization header: POST
 * /auth/session exchanges a token for a random session id in an HttpOnly, SameSite=Strict
 * cookie. Sessions live in the database (only a SHA-256 of the id), so they survive restarts and
 * work on every process sharing the store; a one-second in-memory cache keeps the lookup off the
 * hot path. A session remembers its token's name and fingerprint: it holds only while a token of
 * that name and hash is configured and unexpired (checked on every use), and a reload deletes the
 * sessions of tokens that changed or went.
 */
export class BrowserSessions {
  readonly #db: Kysely<Database>;
  readonly #ttlMs: number;
  readonly #clock: Clock;
  readonly #cache = new Map<string, Cached>();

  constructor(db: Kysely<Database>, ttlSeconds: number, clock: Clock = monotonicClock) {
    this.#db = db;
    this.#ttlMs = ttlSeconds * 1000;
    this.#clock = clock;
  }

  /** A new session for the token; returns its id (the cookie value) and expiry (epoch ms). */
  async create(
    tokenName: string,
    fingerprint: Buffer,
    now = Date.now(),
  ): Promise<{ id: string; expires: number }> {
    const id = randomBytes(32).toString("base64url");
    const expires = now + this.#ttlMs;
    // Expired sessions go when new ones come: the table stays as small as the live sessions.
    await this.#db.deleteFrom("eventsdb_sessions").where("expires_at", "<", now).execute();
    await this.#db
      .insertInto("eventsdb_sessions")
      .values({
        id_hash: hash(id),
        token_name: tokenName,
        token_fingerprint: fingerprint.toString("hex"),
        expires_at: expires,
      })
      .execute();
    return { id, expires };
  }

  /** The live (signed in, unexpired) session with this id, or undefined. Rejects when the store fails. */
  async lookup(id: string, now = Date.now()): Promise<Session | undefined> {
    const key = hash(id);
    const cached = this.#cache.get(key);
    const session =
      cached !== undefined && this.#clock() < cached.until ? cached.session : await this.#read(key);
    return session !== undefined && now < session.expires ? session : undefined;
  }

  /** Signs a session out: at once here, on every other process within SESSION_CACHE_MS. */
  async delete(id: string): Promise<void> {
    const key = hash(id);
    this.#cache.delete(key);
    await this.#db.deleteFrom("eventsdb_sessions").where("id_hash", "=", key).execute();
  }

  /**
   * Deletes the sessions whose token no longer holds (renamed, removed, another hash, expired),
   * after the tokens were reloaded; returns how many. Other processes honour it within
   * SESSION_CACHE_MS (they also check each session against their own tokens on every use).
   */
  async endStale(holds: (tokenName: string, fingerprint: Buffer) => boolean): Promise<number> {
    const tokens = await this.#db
      .selectFrom("eventsdb_sessions")
      .select(["token_name", "token_fingerprint"])
      .distinct()
      .execute();
    let ended = 0;
    for (const { token_name, token_fingerprint } of tokens) {
      if (holds(token_name, Buffer.from(token_fingerprint, "hex"))) continue;
      const result = await this.#db
        .deleteFrom("eventsdb_sessions")
        .where("token_name", "=", token_name)
        .where("token_fingerprint", "=", token_fingerprint)
        .executeTakeFirst();
      ended += Number(result.numDeletedRows);
    }
    this.#cache.clear();
    return ended;
  }

  async #read(key: string): Promise<Session | undefined> {
    const row = await this.#db
      .selectFrom("eventsdb_sessions")
      .select(["token_name", "token_fingerprint", "expires_at"])
      .where("id_hash", "=", key)
      .executeTakeFirst();
    const session =
      row === undefined
        ? undefined
        : {
            tokenName: row.token_name,
            fingerprint: Buffer.from(row.token_fingerprint, "hex"),
            expires: Number(row.expires_at),
          };
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
    this.#cache.set(key, { session, until: this.#clock() + SESSION_CACHE_MS });
    return session;
  }
}

function hash(id: string): string {
  return createHash("sha256").update(id).digest("hex");
}
