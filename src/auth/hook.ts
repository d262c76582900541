import { createContextKey } from "@connectrpc/connect";
import fastifyCookie from "@fastify/cookie";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { EventsDbError } from "../errors.js";
import { requireConsole, requireSameOriginSignIn } from "./csrf.js";
import type { Session, SessionStore } from "./sessions.js";
import type { Guard } from "./throttle.js";
import { ANYONE, type Principal, sessionFingerprint, type TokenRegistry, tokenDigest } from "./tokens.js";

/** The session cookie's name. */
export const SESSION_COOKIE = "eventsdb_session";

declare module "fastify" {
  interface FastifyRequest {
    /** Who is calling; ANYONE on an open server. Set by the auth hook on every request. */
    principal: Principal;
  }
}

export interface AuthOptions {
  /** The current registry; a function so a SIGHUP reload takes effect at once. */
  readonly registry: () => TokenRegistry;
  readonly sessions: SessionStore;
  /** Failed-authentication throttle and --rate-limit, shared with the gRPC unary fast path. */
  readonly guard: Guard;
  /** Require a token for /metrics too. */
  readonly protectMetrics: boolean;
  /** Accept `?access_token=` on the stream route (RFC 6750 §2.3 warns about tokens in URLs). */
  readonly allowQueryToken: boolean;
  /** Secure cookies (under TLS). */
  readonly secureCookies: boolean;
  /** --session-ttl: the cookie's Max-Age. */
  readonly sessionTtlSeconds: number;
}

/** The principal of a Connect call, from the auth hook. */
export const PRINCIPAL = createContextKey<Principal>(ANYONE, { description: "caller" });

const OPEN_ROUTES = new Set(["/healthz", "/readyz", "/auth/session"]);
/** gRPC health checking stays open for orchestrators, like /healthz. */
const OPEN_SERVICES = new Set(["grpc.health.v1.Health"]);

/**
 * One authentication hook for every transport (REST, SSE, Connect, gRPC-Web, gRPC). Credentials,
 * in order: `Authorization: Bearer T` (in gRPC metadata also a bare `T`, as Events DB accepted),
 * the session cookie, and `?access_token=` on the stream route when enabled. Then --rate-limit.
 * Failures are thrown and answered by the error handlers in each protocol's own shape
 * (render-error.ts): 401 with WWW-Authenticate on REST, UNAUTHENTICATED on gRPC, and so on.
 * Scopes (403) are checked by the EventLog.
 */
export async function installAuth(app: FastifyInstance, options: AuthOptions): Promise<void> {
  await app.register(fastifyCookie);
  // Fastify wants null for reference types here; the hook below sets it on every request.
  app.decorateRequest("principal", null as unknown as Principal);
  const { guard } = options;

  app.addHook("onRequest", async (request) => {
    request.principal = ANYONE;
    const route = request.routeOptions.url ?? "";
    const registry = options.registry();
    if (!registry.open && needsAuthentication(route, options)) {
      guard.checkAddress(request.ip);
      const caller = await authenticate(request, registry, options, route);
      if (caller instanceof EventsDbError) {
        if (caller.code === "unauthenticated") guard.failed(request.ip);
        throw caller;
      }
      if (caller.bySession) requireConsole(request);
      request.principal = caller.principal;
    }
    // Unknown routes end in the not-found handler: nothing there to limit.
    if (route !== "") guard.admit(request.principal, request.ip, route);
  });

  app.post("/auth/session", async (request, reply) => {
    requireSameOriginSignIn(request);
    guard.checkAddress(request.ip);
    const registry = options.registry();
    const body = request.body as { token?: unknown } | undefined;
    const token = typeof body?.token === "string" ? body.token : bearer(request.headers.authorization);
    const principal = registry.open ? ANYONE : token === undefined ? undefined : registry.authenticate(token);
    if (principal === undefined) {
      guard.failed(request.ip);
      throw new EventsDbError("unauthenticated", "a valid token is required");
    }
    const fingerprint = token === undefined ? Buffer.alloc(0) : sessionFingerprint(tokenDigest(token));
    const session = await options.sessions.create(principal.name, fingerprint);
    void reply.setCookie(SESSION_COOKIE, session.id, {
      httpOnly: true,
      sameSite: "strict",
      secure: options.secureCookies,
      path: "/",
      // Both: Max-Age (RFC 6265 §5.2.2) wins where understood and does not depend on the
      // browser's clock agreeing with the server's; Expires is for the rest.
      maxAge: options.sessionTtlSeconds,
      expires: new Date(session.expires),
    });
    return {
      name: principal.name,
      read: principal.read,
      write: principal.write,
      expires: new Date(session.expires).toISOString(),
    };
  });

  app.delete("/auth/session", async (request, reply) => {
    const id = request.cookies[SESSION_COOKIE];
    if (id !== undefined) {
      requireConsole(request);
      await options.sessions.delete(id);
    }
    void reply.clearCookie(SESSION_COOKIE, { path: "/" });
    return reply.code(204).send();
  });
}

function needsAuthentication(route: string, options: AuthOptions): boolean {
  if (OPEN_ROUTES.has(route) || (route === "/metrics" && !options.protectMetrics)) return false;
  return !route.startsWith("/ui") && !OPEN_SERVICES.has(route.split("/")[1] ?? "");
}

/** An authenticated caller, and whether the session cookie was the credential (CSRF rules apply). */
interface Caller {
  readonly principal: Principal;
  readonly bySession: boolean;
}

async function authenticate(
  request: FastifyRequest,
  registry: TokenRegistry,
  options: AuthOptions,
  route: string,
): Promise<Caller | EventsDbError> {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const principal = headerPrincipal(header, isGrpc(request), registry, options.registry);
    return principal instanceof EventsDbError ? principal : { principal, bySession: false };
  }
  const id = request.cookies[SESSION_COOKIE];
  if (id !== undefined) return sessionCaller(id, registry, options);
  if (options.allowQueryToken && route === "/events/stream") {
    const token = (request.query as Record<string, unknown>).access_token;
    if (typeof token === "string") {
      const principal = tokenPrincipal(registry, token, options.registry);
      return principal instanceof EventsDbError ? principal : { principal, bySession: false };
    }
  }
  return new EventsDbError("unauthenticated", "a token is required (Authorization: Bearer <token>)");
}

/**
 * The principal of an Authorization header — `Bearer <token>`, or on gRPC also the bare token
 * (compat: Events DB's gRPC clients send it as metadata) — or the error to answer. The auth hook
 * and the gRPC unary fast path both authenticate headers here.
 */
export function headerPrincipal(
  header: string,
  grpc: boolean,
  registry: TokenRegistry,
  current: () => TokenRegistry,
): Principal | EventsDbError {
  const token = bearer(header) ?? (grpc ? header.trim() : undefined);
  if (token === undefined || token === "") {
    return new EventsDbError("unauthenticated", "Authorization must be Bearer <token>");
  }
  return tokenPrincipal(registry, token, current);
}

/**
 * The principal of a token, or unauthenticated when it is unknown or expired. Its stillValid()
 * answers whether a token of this name and digest is still configured and unexpired in the
 * registry of the moment (SIGHUP reloads it); the digest, not the token, is what it keeps.
 */
function tokenPrincipal(
  registry: TokenRegistry,
  token: string,
  current: () => TokenRegistry,
): Principal | EventsDbError {
  const principal = registry.authenticate(token);
  if (principal === undefined) return new EventsDbError("unauthenticated", "the token is unknown or expired");
  const digest = tokenDigest(token);
  return { ...principal, stillValid: async () => current().holds(principal.name, digest) };
}

/**
 * The principal of a session cookie. The session must be live (not signed out on any process,
 * not expired) and its token still configured with the hash it was signed in with. stillValid()
 * asks both again (the session at most SESSION_CACHE_MS old); while the store cannot be reached it
 * answers true: an outage alone ends no stream.
 */
async function sessionCaller(
  id: string,
  registry: TokenRegistry,
  options: AuthOptions,
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

function isGrpc(request: FastifyRequest): boolean {
  return (request.headers["content-type"] ?? "").startsWith("application/grpc");
}
