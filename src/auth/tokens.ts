import { createHash, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import { EventsDbError } from "../errors.js";
import type { EventFilter } from "../events/event.js";
import { yaml } from "../yaml.js";

/** What a caller may do: read and write scopes as subject prefixes ("*" = every subject). */
export interface Principal {
  readonly name: string;
  readonly read: readonly string[];
  readonly write: readonly string[];
  /**
   * Whether the credential this principal came from still holds: the token not removed, changed
   * or expired, the session not signed out. Long-lived streams ask it while they are open and end
   * when it answers false. Absent = always (ANYONE, internal reads).
   */
  readonly stillValid?: () => Promise<boolean>;
}

/** Everything, for AUTH_TOKEN and for an open server (no token configured). */
export const FULL_ACCESS: Readonly<Pick<Principal, "read" | "write">> = { read: ["*"], write: ["*"] };

/** The caller of an open server (no token configured), and of internal reads. */
export const ANYONE: Principal = { name: "anonymous", ...FULL_ACCESS };

export interface TokenEntry extends Principal {
  readonly digest: Buffer;
  /** sessionFingerprint(digest): what the token's browser sessions are checked against. */
  readonly fingerprint: Buffer;
  /** Epoch ms after which the token is refused; undefined = never. */
  readonly expires: number | undefined;
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const HEX_SHA256 = /^[0-9a-f]{64}$/;

/**
 * The key one caller is counted under (rate limit, open streams per client): the token's name, or
 * the client address for anonymous callers (an open server).
 */
export function clientKey(principal: Principal, address: string): string {
  return principal.name === ANYONE.name ? `ip:${address}` : `token:${principal.name}`;
}

/** SHA-256 of a token: what the auth file stores and what requests are compared by. */
export function tokenDigest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/**
 * What a browser session stores of the token it was signed in with: 16 bytes of a hash of the
 * token's digest (not the digest itself, which the auth file treats as a credential's check
 * value). A session is honoured only while a token of its name has this fingerprint, so
 * changing a token's hash ends the sessions signed in with the old one.
 */
export function sessionFingerprint(digest: Buffer): Buffer {
  return createHash("sha256").update("eventsdb session\0").update(digest).digest().subarray(0, 16);
}

/**
 * The known tokens: AUTH_TOKEN (full access, name "auth-token") and the named tokens of the auth
 * file. Tokens are compared by their SHA-256 digests with timingSafeEqual over every entry, so
 * neither a token nor how much of it matched shows in the timing.
 */
export class TokenRegistry {
  #entries: readonly TokenEntry[];

  private constructor(entries: readonly TokenEntry[]) {
    this.#entries = entries;
  }

  /**
   * From AUTH_TOKEN, the auth file (JSON or YAML) and the `tokens` of a config file (`inline`);
   * throws with one clear line when invalid.
   */
  static load(
    authToken: string | undefined,
    authFile: string | undefined,
    inline?: InlineTokens,
  ): TokenRegistry {
    const entries: TokenEntry[] = [];
    if (authToken !== undefined) {
      const digest = tokenDigest(authToken);
      entries.push({
        name: "auth-token",
        ...FULL_ACCESS,
        digest,
        fingerprint: sessionFingerprint(digest),
        expires: undefined,
      });
    }
    if (inline !== undefined) entries.push(...parseTokens(inline.list, inline.where));
    if (authFile !== undefined) entries.push(...readAuthFile(authFile));
    const names = new Set<string>();
    for (const entry of entries) {
      if (names.has(entry.name)) throw new Error(`token name ${entry.name} is given twice`);
      names.add(entry.name);
    }
    return new TokenRegistry(entries);
  }

  /** True when no token is configured: the API is open (compat). */
  get open(): boolean {
    return this.#entries.length === 0;
  }

  get size(): number {
    return this.#entries.length;
  }

  /** The principal of a presented token, or undefined when it is unknown or expired. */
  authenticate(token: string, now = Date.now()): Principal | undefined {
    const digest = tokenDigest(token);
    let found: TokenEntry | undefined;
    for (const entry of this.#entries) {
      if (timingSafeEqual(entry.digest, digest) && found === undefined) found = entry;
    }
    if (found === undefined || (found.expires !== undefined && now >= found.expires)) return undefined;
    return { name: found.name, read: found.read, write: found.write };
  }

  /**
   * The read scopes of the token with this name, or undefined when none is configured or it has
   * expired: a push subscription delivers only what its owner may still read.
   */
  readScopes(name: string, now = Date.now()): readonly string[] | undefined {
    const entry = this.#entries.find((e) => e.name === name);
    if (entry === undefined || (entry.expires !== undefined && now >= entry.expires)) return undefined;
    return entry.read;
  }

  /** Whether a token with this name and digest is still configured and unexpired (open streams ask). */
  holds(name: string, digest: Buffer, now = Date.now()): boolean {
    const entry = this.#entries.find((e) => e.name === name);
    return (
      entry !== undefined &&
      timingSafeEqual(entry.digest, digest) &&
      (entry.expires === undefined || now < entry.expires)
    );
  }

  /**
   * The principal of a browser session signed in with the token of this name and fingerprint, or
   * undefined when that token is gone, has another hash now, or has expired (checked on every use).
   */
  session(name: string, fingerprint: Buffer, now = Date.now()): Principal | undefined {
    const entry = this.#entries.find((e) => e.name === name);
    if (
      entry === undefined ||
      fingerprint.length !== entry.fingerprint.length ||
      !timingSafeEqual(entry.fingerprint, fingerprint) ||
      (entry.expires !== undefined && now >= entry.expires)
    ) {
      return undefined;
    }
    return { name: entry.name, read: entry.read, write: entry.write };
  }
}

function readAuthFile(file: string): TokenEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    throw new Error(`cannot read --auth-file ${file}: ${(error as NodeJS.ErrnoException).code ?? "error"}`);
  }
  let doc: unknown;
  try {
    doc = file.endsWith(".json") ? JSON.parse(text) : yaml().parse(text);
  } catch {
    throw new Error(`--auth-file ${file} is not valid ${file.endsWith(".json") ? "JSON" : "YAML"}`);
  }
  const tokens = (doc as { tokens?: unknown } | null)?.tokens;
  if (!Array.isArray(tokens)) throw new Error(`--auth-file ${file} must have a "tokens" list`);
  return parseTokens(tokens, `--auth-file ${file}`);
}

/** Tokens given in a config file's `tokens` key, and where (for error messages). */
export interface InlineTokens {
  readonly list: readonly unknown[];
  /** e.g. `config file /etc/eventsdb.yaml` */
  readonly where: string;
}

/**
 * A list of tokens as the auth file and a config file's `tokens` key hold them:
 * `{ name, sha256, read?, write?, expires? }`. Throws naming `where`, the entry and the reason.
 */
export function parseTokens(tokens: readonly unknown[], where: string): TokenEntry[] {
  const names = new Set<string>();
  return tokens.map((raw: unknown, i: number) => {
    const at = `${where}: tokens[${i}]`;
    const t = (raw ?? {}) as Record<string, unknown>;
    if (typeof t.name !== "string" || !NAME.test(t.name)) throw new Error(`${at}: name must match ${NAME}`);
    if (names.has(t.name)) throw new Error(`${at}: duplicate name ${t.name}`);
    names.add(t.name);
    if (typeof t.sha256 !== "string" || !HEX_SHA256.test(t.sha256.toLowerCase())) {
      throw new Error(
        `${at}: sha256 must be the token's SHA-256 in hex (eventsdb token prints a new token and its hash)`,
      );
    }
    const scopes = (key: "read" | "write"): string[] => {
      const value = t[key] ?? [];
      if (!Array.isArray(value) || !value.every((s) => typeof s === "string" && s !== "")) {
        throw new Error(`${at}: ${key} must be a list of subject prefixes ("*" = all)`);
      }
      return value as string[];
    };
    let expires: number | undefined;
    if (t.expires !== undefined && t.expires !== null) {
      expires = t.expires instanceof Date ? t.expires.getTime() : Date.parse(String(t.expires));
      if (Number.isNaN(expires)) throw new Error(`${at}: expires must be an RFC 3339 time`);
    }
    const digest = Buffer.from(t.sha256.toLowerCase(), "hex");
    return {
      name: t.name,
      read: scopes("read"),
      write: scopes("write"),
      digest,
      fingerprint: sessionFingerprint(digest),
      expires,
    };
  });
}

/**
 * `subject` is `scope` or below it in path segments ("*" covers everything). No subject (an event
 * without one) is covered by "*" alone: only a token for all subjects writes or reads it.
 */
export function covers(scope: string, subject: string | undefined): boolean {
  if (scope === "*") return true;
  return subject !== undefined && (subject === scope || subject.startsWith(`${scope}/`));
}

/** May the principal write events on this subject (undefined = an event without a subject)? */
export function canWrite(principal: Principal, subject: string | undefined): boolean {
  return principal.write.some((scope) => covers(scope, subject));
}

/** May the principal read this subject (undefined = an event without a subject)? */
export function canRead(principal: Principal, subject: string | undefined): boolean {
  return principal.read.some((scope) => covers(scope, subject));
}

/** Throws permission_denied unless every subject (undefined = none) may be written. */
export function requireWrite(principal: Principal, subjects: Iterable<string | undefined>): void {
  for (const subject of subjects) {
    if (!canWrite(principal, subject)) {
      throw new EventsDbError(
        "permission_denied",
        subject === undefined
          ? `token ${principal.name} may not write events without a subject (that needs the write scope "*")`
          : `token ${principal.name} may not write subject ${subject}`,
      );
    }
  }
}

/**
 * Throws permission_denied unless the principal may read every subject (the read scope "*"):
 * `what` (the chain) includes every event, subjectless ones too, and cannot be cut to scopes.
 */
export function requireReadAll(principal: Principal, what: string): void {
  // Reading events without a subject is what needs "*" (covers): the same rule, not a second one.
  if (!canRead(principal, undefined)) {
    throw new EventsDbError(
      "permission_denied",
      `token ${principal.name} may not read ${what}: that needs the read scope "*"`,
    );
  }
}

/**
 * The part of a read filter the principal may see — the one place every read (pages, by id,
 * streams, export) is cut to the read scopes. Exact subjects must be readable; a recursive subject
 * above the principal's scopes is cut down to the scopes below it (reading `orders` recursively
 * with a scope `orders/eu` reads `orders/eu` recursively); no subject at all means every readable
 * scope. Throws permission_denied when nothing readable is left — also for a principal with no
 * read scope at all, which reads nothing (an empty list of subjects would mean "no filter").
 */
export function readableFilter(principal: Principal, filter: EventFilter): EventFilter {
  if (principal.read.includes("*")) return filter;
  if (principal.read.length === 0) {
    throw new EventsDbError("permission_denied", `token ${principal.name} may not read any subject`);
  }
  // No subject = everything: cut to every readable scope, each with what lies below it.
  if (filter.subjects.length === 0)
    return { subjects: [...principal.read], recursive: true, type: filter.type };
  const subjects = new Set<string>();
  for (const subject of filter.subjects) {
    if (canRead(principal, subject)) {
      subjects.add(subject);
      continue;
    }
    const below = filter.recursive ? principal.read.filter((scope) => scope.startsWith(`${subject}/`)) : [];
    if (below.length === 0) {
      throw new EventsDbError("permission_denied", `token ${principal.name} may not read subject ${subject}`);
    }
    for (const scope of below) subjects.add(scope);
  }
  return { subjects: [...subjects], recursive: filter.recursive, type: filter.type };
}
