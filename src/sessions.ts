import { randomBytes } from "node:crypto";

/** Most browser sessions held; the oldest goes first beyond it. */
export const MAX_SESSIONS = 10_000;

interface Session {
  readonly tokenName: string;
  readonly expires: number;
}

/**
 * Browser sessions for EventSource, which cannot send an Authorization header: POST
 * /auth/session exchanges a token for a random session id in an HttpOnly, SameSite=Strict
 * cookie. A session remembers only the token's name, so revoking or expiring the token (auth file
 * reload) ends its sessions too. In memory, capped; a restart signs everyone out.
 */
export class SessionStore {
  readonly #sessions = new Map<string, Session>();
  readonly #ttlMs: number;

  constructor(ttlSeconds: number) {
    this.#ttlMs = ttlSeconds * 1000;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** A new session for the token name; returns its id and expiry (epoch ms). */
  create(tokenName: string, now = Date.now()): { id: string; expires: number } {
    if (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest !== undefined) this.#sessions.delete(oldest);
    }
    const id = randomBytes(32).toString("base64url");
    const expires = now + this.#ttlMs;
    this.#sessions.set(id, { tokenName, expires });
    return { id, expires };
  }

  /** The token name of a live session, or undefined (expired sessions are dropped). */
  tokenName(id: string, now = Date.now()): string | undefined {
    const session = this.#sessions.get(id);
    if (session === undefined) return undefined;
    if (now >= session.expires) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session.tokenName;
  }

  delete(id: string): void {
    this.#sessions.delete(id);
  }
}
