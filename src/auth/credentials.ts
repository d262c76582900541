import type { IncomingHttpHeaders } from "node:http";
import { fastifyCookie } from "@fastify/cookie";
import { EventsDbError } from "../errors.js";
import type { BrowserSessions, Session } from "./sessions.js";
import { type Principal, type TokenRegistry, tokenDigest } from "./tokens.js";

/** The session cookie's name. */
export const SESSION_COOKIE = "eventsdb_session";

/** The route that takes `?access_token=` when --allow-query-token is on (EventSource sets no headers). */
export const QUERY_TOKEN_ROUTE = "/events/stream";

/** Where the server's public signing key is served (an RFC 8615 well-known URI): public by nature. */
export const SIGNING_KEY_ROUTE = "/.well-known/eventsdb/signing-key";

const OPEN_ROUTES: ReadonlySet<string> = new Set(["/healthz", "/readyz", "/auth/session", SIGNING_KEY_ROUTE]);
/** gRPC health checking stays open for orchestrators, like /healthz. */
const OPEN_SERVICES: ReadonlySet<string> = new Set(["grpc.health.v1.Health"]);

/** What the credential step reads of a request, whatever its transport. */
export interface CredentialSource {
  readonly route: string;
  readonly headers: IncomingHttpHeaders;
  /** The query string's parameters; absent where there is none (gRPC). */
  readonly query?: Readonly<Record<string, unknown>>;
}

export interface CredentialOptions {
  /** The registry of the moment (a SIGHUP reload replaces it); principals' stillValid() asks it. */
  readonly registry: () => TokenRegistry;
  readonly sessions: BrowserSessions;
  /** Accept `?access_token=` on the stream route (RFC 6750 §2.3 warns about tokens in URLs). */
  readonly allowQueryToken: boolean;
}

/** An authenticated caller, and whether the session cookie was the credential (CSRF rules apply). */
export interface Caller {
  readonly principal: Principal;
  readonly bySession: boolean;
}

/** Whether a route needs a credential on a server with tokens: all but health, sign-in, the console's files. */
export function needsCredentials(route: string, protectMetrics: boolean): boolean {
  if (OPEN_ROUTES.has(route) || (route === "/metrics" && !protectMetrics)) return false;
  return !route.startsWith("/ui") && !OPEN_SERVICES.has(route.split("/")[1] ?? "");
}

/**
 * The caller of a request, or the error to answer. Credentials, in order: `Authorization: Bearer
 * T` (in gRPC metadata also a bare `T`, as Events DB accepted), the session cookie, and
 * `?access_token=` on the stream route when enabled.
 */
export async function authenticate(
  request: CredentialSource,
  registry: TokenRegistry,
  options: CredentialOptions,
): Promise<Caller | EventsDbError> {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const token = bearer(header) ?? (isGrpc(request.headers) ? header.trim() : undefined);
    if (token === undefined || token === "") {
      return new EventsDbError("unauthenticated", "Authorization must be Bearer <token>");
    }
    return byToken(registry, token, options.registry);
  }
  const id = sessionId(request.headers);
  if (id !== undefined) return sessionCaller(id, registry, options);
  if (options.allowQueryToken && request.route === QUERY_TOKEN_ROUTE) {
    const token = request.query?.access_token;
    if (typeof token === "string") return byToken(registry, token, options.registry);
  }
  return new EventsDbError("unauthenticated", "a token is required (Authorization: Bearer <token>)");
}

/** The session id of the request's cookie, or undefined. */
export function sessionId(headers: IncomingHttpHeaders): string | undefined {
  const header = headers.cookie;
  if (header === undefined || !header.includes(SESSION_COOKIE)) return undefined;
  return fastifyCookie.parse(header)[SESSION_COOKIE];
}

/**
 * The caller of a token, or unauthenticated when it is unknown or expired. Its stillValid()
 * answers whether a token of this name and digest is still configured and unexpired in the
 * registry of the moment (SIGHUP reloads it); the digest, not the token, is what it keeps.
 */
function byToken(
  registry: TokenRegistry,
  token: string,
  current: () => TokenRegistry,
): Caller | EventsDbError {
  const principal = registry.authenticate(token);
  if (principal === undefined) return new EventsDbError("unauthenticated", "the token is unknown or expired");
  const digest = tokenDigest(token);
  return {
    principal: { ...principal, stillValid: async () => current().holds(principal.name, digest) },
    bySession: false,
  };
}

/**
 * The caller of a session cookie. The session must be live (not signed out on any process, not
 * expired) and its token still configured with the hash it was signed in with. stillValid() asks
 * both again (the session at most SESSION_CACHE_MS old); while the store cannot be reached it
 * answers true: an outage alone ends no stream.
 */
async function sessionCaller(
  id: string,
  registry: TokenRegistry,
  options: CredentialOptions,
): Promise<Caller | EventsDbError> {
  let session: Session | undefined;
  try {
    session = await options.sessions.lookup(id);
  } catch (error) {
    return new EventsDbError("unavailable", "sessions cannot be checked: the store is unavailable", {
      cause: error,
      retryAfterSeconds: 1,
    });
  }
  const principal =
    session === undefined ? undefined : registry.session(session.tokenName, session.fingerprint);
  if (session === undefined || principal === undefined) {
    return new EventsDbError("unauthenticated", "the session has ended; sign in again");
  }
  const { tokenName, fingerprint } = session;
  const stillValid = async (): Promise<boolean> => {
    let live: Session | undefined;
    try {
      live = await options.sessions.lookup(id);
    } catch {
      return true;
    }
    return live !== undefined && options.registry().session(tokenName, fingerprint) !== undefined;
  };
  return { principal: { ...principal, stillValid }, bySession: true };
}

/** The token of `Authorization: Bearer <token>`, or undefined. */
export function bearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function isGrpc(headers: IncomingHttpHeaders): boolean {
  return (headers["content-type"] ?? "").startsWith("application/grpc");
}
