import { createHash, randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import type { Database } from "./storage/schema.js";

/** How long a looked-up session is trusted from memory before the database is asked again. */
const CACHE_MS = 10_000;
/** Most sessions remembered in memory (the database holds them all). */
const CACHE_MAX = 10_000;

/**
 * Browser sessions for EventSource, which cannot send an Authorization header: POST
 * /auth/session exchanges a token for a random session id in an HttpOnly, SameSite=Strict
 * cookie. Sessions live in the database (only a SHA-256 of the id), so they survive restarts and
 * work on every process sharing the store; a short in-memory cache keeps the lookup off the hot
 * path. A session remembers only the token's name, so revoking or expiring the token (auth file
 * reload) ends its sessions too.
 */
export class SessionStore {
  readonly #db: Kysely<Database>;
  readonly #ttlMs: number;
  readonly #cache = new Map<string, { tokenName: string | undefined; expires: number; until: number }>();

  constructor(db: Kysely<Database>, ttlSeconds: number) {
    this.#db = db;
    this.#ttlMs = ttlSeconds * 1000;
  }

  /** A new session for the token name; returns its id (the cookie value) and expiry (epoch ms). */
  async create(tokenName: string, now = Date.now()): Promise<{ id: string; expires: number }> {
    const id = randomBytes(32).toString("base64url");
    const expires = now + this.#ttlMs;
    // Expired sessions go when new ones come: the table stays as small as the live sessions.
    await this.#db.deleteFrom("eventsdb_sessions").where("expires_at", "<", now).execute();
    await this.#db
      .insertInto("eventsdb_sessions")
      .values({ id_hash: hash(id), token_name: tokenName, expires_at: expires })
      .execute();
    return { id, expires };
  }

  /** The token name of a live session, or undefined. */
  async tokenName(id: string, now = Date.now()): Promise<string | undefined> {
    const key = hash(id);
    const cached = this.#cache.get(key);
    if (cached !== undefined && now < cached.until)
      return now < cached.expires ? cached.tokenName : undefined;
    const row = await this.#db
      .selectFrom("eventsdb_sessions")
      .select(["token_name", "expires_at"])
      .where("id_hash", "=", key)
      .executeTakeFirst();
    const expires = row === undefined ? 0 : Number(row.expires_at);
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
    this.#cache.set(key, { tokenName: row?.token_name, expires, until: now + CACHE_MS });
    return now < expires ? row?.token_name : undefined;
  }

  /** Signs a session out (on every process once their cache entry lapses). */
  async delete(id: string): Promise<void> {
    const key = hash(id);
    this.#cache.delete(key);
    await this.#db.deleteFrom("eventsdb_sessions").where("id_hash", "=", key).execute();
  }
}

function hash(id: string): string {
  return createHash("sha256").update(id).digest("hex");
}
