import { ConnectError, createContextKey, type Interceptor } from "@connectrpc/connect";
import fastifyCookie from "@fastify/cookie";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ANYONE, type Principal, type TokenRegistry, tokenDigest } from "../auth.js";
import { EventsDbError } from "../errors.js";
import type { SessionStore } from "../sessions.js";
import { connectCode } from "./status.js";

/** The session cookie's name. */
export const SESSION_COOKIE = "eventsdb_session";

declare module "fastify" {
  interface FastifyRequest {
    /** Who is calling; ANYONE on an open server. Set by the auth hook on every request. */
    principal: Principal;
    /** Why authentication failed (Connect routes answer it as UNAUTHENTICATED themselves). */
    authError: EventsDbError | undefined;
  }
}

export interface AuthOptions {
  /** The current registry; a function so a SIGHUP reload takes effect at once. */
  readonly registry: () => TokenRegistry;
  readonly sessions: SessionStore;
  /** Require a token for /metrics too. */
  readonly protectMetrics: boolean;
  /** Accept `?access_token=` on the stream route (RFC 6750 §2.3 warns about tokens in URLs). */
  readonly allowQueryToken: boolean;
  /** Secure cookies (under TLS). */
  readonly secureCookies: boolean;
}

/** The principal of a Connect call, from the auth hook (see connectAuthInterceptor). */
export const PRINCIPAL = createContextKey<Principal | EventsDbError>(ANYONE, { description: "caller" });

const OPEN_ROUTES = new Set(["/healthz", "/readyz", "/auth/session"]);
/** Failed authentications allowed per client address and minute; beyond, 429 (token guessing). */
export const AUTH_FAILURES_PER_MINUTE = 30;
/** gRPC health checking stays open for orchestrators, like /healthz. */
const OPEN_SERVICES = new Set(["grpc.health.v1.Health"]);

/**
 * One authentication hook for every transport (REST, SSE, Connect/gRPC). Credentials, in order:
 * `Authorization: Bearer T` (in gRPC metadata also a bare `T`, as Events DB accepted), the session
 * cookie, and `?access_token=` on the stream route when enabled. A failure answers 401 with
 * `WWW-Authenticate` on REST and SSE; Connect routes get it through their context values and
 * answer UNAUTHENTICATED in their own protocol. Scopes (403) are checked by the EventStore.
 */
export async function installAuth(app: FastifyInstance, options: AuthOptions): Promise<void> {
  await app.register(fastifyCookie);
  // Fastify wants null for reference types here; the hook below sets it on every request.
  app.decorateRequest("principal", null as unknown as Principal);
  app.decorateRequest("authError", undefined);

  const failures = new FailureCounter(AUTH_FAILURES_PER_MINUTE);
  app.addHook("onRequest", async (request, reply) => {
    request.principal = ANYONE;
    const registry = options.registry();
    if (registry.open) return;
    const route = request.routeOptions.url ?? "";
    if (OPEN_ROUTES.has(route) || (route === "/metrics" && !options.protectMetrics)) return;
    if (route.startsWith("/ui") || OPEN_SERVICES.has(route.split("/")[1] ?? "")) return;
    failures.check(request.ip);
    const result = await authenticate(request, registry, options, route);
    if (result instanceof EventsDbError) {
      if (result.code === "unauthenticated") failures.add(request.ip);
      if (route.startsWith("/grpc.")) {
        request.authError = result;
        return;
      }
      if (result.code !== "unauthenticated") throw result; // the error handler answers 503
      return deny(reply, result);
    }
    request.principal = result;
  });

  app.post("/auth/session", async (request, reply) => {
    const registry = options.registry();
    failures.check(request.ip);
    const body = request.body as { token?: unknown } | undefined;
    const token = typeof body?.token === "string" ? body.token : bearer(request.headers.authorization);
    const principal = registry.open ? ANYONE : token === undefined ? undefined : registry.authenticate(token);
    if (principal === undefined) {
      failures.add(request.ip);
      return deny(reply, new EventsDbError("unauthenticated", "a valid token is required"));
    }
    const session = await options.sessions.create(principal.name);
    void reply.setCookie(SESSION_COOKIE, session.id, {
      httpOnly: true,
      sameSite: "strict",
      secure: options.secureCookies,
      path: "/",
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
    if (id !== undefined) await options.sessions.delete(id);
    void reply.clearCookie(SESSION_COOKIE, { path: "/" });
    return reply.code(204).send();
  });
}

async function authenticate(
  request: FastifyRequest,
  registry: TokenRegistry,
  options: AuthOptions,
  route: string,
): Promise<Principal | EventsDbError> {
  const header = request.headers.authorization;
  let token: string | undefined;
  if (header !== undefined) {
    token = bearer(header);
    // (compat) Events DB's gRPC clients send the bare token as metadata.
    if (token === undefined && isGrpc(request)) token = header.trim();
    if (token === undefined || token === "")
      return new EventsDbError("unauthenticated", "Authorization must be Bearer <token>");
  }
  if (token === undefined) {
    const session = request.cookies[SESSION_COOKIE];
    if (session !== undefined) {
      let name: string | undefined;
      try {
        name = await options.sessions.tokenName(session);
      } catch (error) {
        return new EventsDbError("unavailable", "sessions cannot be checked: the store is unavailable", {
          cause: error,
          retryAfterSeconds: 1,
        });
      }
      const principal = name === undefined ? undefined : registry.stillValid(name);
      if (principal !== undefined)
        return {
          ...principal,
          stillValid: async () => options.registry().stillValid(principal.name) !== undefined,
        };
      return new EventsDbError("unauthenticated", "the session has expired; sign in again");
    }
  }
  if (token === undefined && options.allowQueryToken && route === "/events/stream") {
    const query = (request.query as Record<string, unknown>).access_token;
    if (typeof query === "string") token = query;
  }
  if (token === undefined)
    return new EventsDbError("unauthenticated", "a token is required (Authorization: Bearer <token>)");
  const principal = registry.authenticate(token);
  if (principal === undefined) return new EventsDbError("unauthenticated", "the token is unknown or expired");
  // The digest, not the token, is what an open stream keeps to ask whether its token still holds.
  const digest = tokenDigest(token);
  return { ...principal, stillValid: async () => options.registry().holds(principal.name, digest) };
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

function deny(reply: FastifyReply, error: EventsDbError) {
  return reply
    .code(401)
    .header("www-authenticate", 'Bearer realm="eventsdb"')
    .send({ error: { code: error.code, message: error.message } });
}

/** Connect side of the hook: refuses calls the hook could not authenticate. */
export const connectAuthInterceptor: Interceptor = (next) => async (request) => {
  const principal = request.contextValues.get(PRINCIPAL);
  if (principal instanceof EventsDbError)
    throw new ConnectError(principal.message, connectCode(principal.code));
  return next(request);
};

/** Context values for a Connect call: the principal, or the authentication error. */
export function principalOf(request: FastifyRequest): Principal | EventsDbError {
  return request.authError ?? request.principal;
}

/**
 * Failed authentications per client address in the current minute, so tokens cannot be guessed
 * at line rate (the --rate-limit limiter runs after authentication and never sees them).
 * Bounded: it forgets everything each minute and holds at most 10,000 addresses.
 */
class FailureCounter {
  readonly #max: number;
  #counts = new Map<string, number>();
  #windowStart = Date.now();

  constructor(max: number) {
    this.#max = max;
  }

  add(address: string): void {
    this.#roll();
    if (this.#counts.size >= 10_000 && !this.#counts.has(address)) return;
    this.#counts.set(address, (this.#counts.get(address) ?? 0) + 1);
  }

  /** Throws too_many_requests when the address failed too often this minute. */
  check(address: string): void {
    this.#roll();
    if ((this.#counts.get(address) ?? 0) >= this.#max) {
      throw new EventsDbError(
        "too_many_requests",
        "too many failed authentications from this address; wait a minute",
        {
          retryAfterSeconds: 60,
        },
      );
    }
  }

  #roll(): void {
    const now = Date.now();
    if (now - this.#windowStart >= 60_000) {
      this.#counts = new Map();
      this.#windowStart = now;
    }
  }
}
