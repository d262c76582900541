import type { ServerResponse } from "node:http";
import type { Http2ServerResponse, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { clientAddress, ownOrigin, type TrustFunction } from "../auth/client-address.js";
import {
  authenticate,
  type CredentialOptions,
  type CredentialSource,
  needsCredentials,
} from "../auth/credentials.js";
import { type CsrfSource, requireConsole, requireSameOriginSignIn } from "../auth/csrf.js";
import type { Guard } from "../auth/throttle.js";
import { ANYONE, type Principal } from "../auth/tokens.js";
import { EventsDbError } from "../errors.js";
import type { Logger } from "../log.js";
import { asDomainError, sendError } from "./render-error.js";
import { httpStatus } from "./status.js";

declare module "fastify" {
  interface FastifyRequest {
    /** Who is calling; ANYONE on an open server. Set by the pipeline on every request. */
    principal: Principal;
  }
}

/** A request as every step of the pipeline sees it, whatever carried it. */
export interface EdgeRequest extends CredentialSource, CsrfSource {
  /** The client's address (--trust-proxy applied): what throttles and limits count by. */
  readonly address: string;
}

/** The one log line of a request (streams log their own open and close besides). */
export interface RequestLine {
  readonly method: string;
  /** The route, or the path without its query (which may carry an access_token). */
  readonly route: string;
  readonly status: number;
  /** gRPC and gRPC-Web: the grpc-status sent, when it went in headers or trailers. */
  readonly grpcStatus?: number;
  readonly ms: number;
  readonly caller: string;
}

export interface PipelineOptions extends CredentialOptions {
  /** The failed-authentication throttle and --rate-limit. */
  readonly guard: Guard;
  /** --protect-metrics: /metrics needs a token too. */
  readonly protectMetrics: boolean;
  /** --trust-proxy as a function (client-address.ts). */
  readonly trust: TrustFunction | undefined;
  /** The process's logger: request lines at info, unexpected failures at error. */
  readonly log: Logger;
}

/** Request lines are written when the log takes info lines. */
const REQUEST_LOG_LEVELS: ReadonlySet<string> = new Set(["trace", "debug", "info"]);

/**
 * The steps every request passes, whatever its transport, each owned by one module: credentials
 * (bearer token, session cookie, query token: auth/credentials.ts) → CSRF rule for the session
 * cookie (auth/csrf.ts) → failed-authentication throttle and --rate-limit (auth/throttle.ts) →
 * the handler → the request log line → error rendering in the request's wire format
 * (render-error.ts). Fastify's hooks wrap it ({@link installPipeline}: REST, SSE, Connect,
 * gRPC-Web, gRPC) and the unary gRPC fast path calls the same methods, so neither has rules of
 * its own. Scopes (403) are checked by the EventLog.
 */
export class Pipeline {
  readonly #options: PipelineOptions;

  constructor(options: PipelineOptions) {
    this.#options = options;
  }

  /** Whether request lines are written: asked each time, as SIGHUP may change the log level. */
  get logsRequests(): boolean {
    return REQUEST_LOG_LEVELS.has(this.#options.log.level ?? "silent");
  }

  get log(): Logger {
    return this.#options.log;
  }

  /** --trust-proxy, for Fastify's `trustProxy` (the same rule as streamRequest's address). */
  get trust(): TrustFunction | undefined {
    return this.#options.trust;
  }

  /**
   * The steps before the handler: the caller's principal, or a thrown EventsDbError (401, 403,
   * 429, 503) to answer in the request's wire format.
   */
  async admit(request: EdgeRequest): Promise<Principal> {
    const { guard } = this.#options;
    let principal = ANYONE;
    const registry = this.#options.registry();
    if (!registry.open && needsCredentials(request.route, this.#options.protectMetrics)) {
      guard.checkAddress(request.address);
      const caller = await authenticate(request, registry, this.#options);
      if (caller instanceof EventsDbError) {
        if (caller.code === "unauthenticated") guard.failed(request.address);
        throw caller;
      }
      if (caller.bySession) requireConsole(request);
      principal = caller.principal;
    }
    // Unknown routes end in the not-found handler: nothing there to limit.
    if (request.route !== "") guard.admit(principal, request.address, request.route);
    return principal;
  }

  /**
   * Sign-in (POST /auth/session) exchanges a token for a session: the same-origin rule for
   * sign-in, then the token, counted by the failed-authentication throttle like any credential.
   */
  signIn(request: EdgeRequest, token: string | undefined): Principal {
    const { guard } = this.#options;
    requireSameOriginSignIn(request);
    guard.checkAddress(request.address);
    const registry = this.#options.registry();
    const principal = registry.open ? ANYONE : token === undefined ? undefined : registry.authenticate(token);
    if (principal === undefined) {
      guard.failed(request.address);
      throw new EventsDbError("unauthenticated", "a valid token is required");
    }
    return principal;
  }

  /** A Fastify request as the steps see it. */
  fastifyRequest(request: FastifyRequest): EdgeRequest {
    const { trust } = this.#options;
    return {
      method: request.method,
      route: request.routeOptions.url ?? "",
      headers: request.headers,
      query: request.query as Record<string, unknown>,
      // Fastify's request.ip applies the same trust function (app.ts gives it as trustProxy).
      address: request.ip,
      origin: () => ownOrigin(request.raw.socket, request.headers, trust),
    };
  }

  /** A request taken off a raw HTTP/2 stream (the gRPC fast path), as the steps see it. */
  streamRequest(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): EdgeRequest {
    const socket = stream.session?.socket;
    const { trust } = this.#options;
    return {
      method: headers[":method"] ?? "",
      route: headers[":path"] ?? "",
      headers,
      address: clientAddress(socket?.remoteAddress, headers, trust),
      origin: () => ownOrigin(socket as { encrypted?: boolean } | undefined, headers, trust),
    };
  }

  /** Writes the request's line, when info lines are written (`log`: the request's own, if any). */
  logLine(line: RequestLine, log: Logger = this.#options.log): void {
    if (this.logsRequests) log.info(line, "request");
  }

  /**
   * Any error as the domain error to answer. Bugs are logged here with their stack; a 503 is a
   * known state (store failing, queue full, shutting down) that its owner logs once per change
   * (failure-log.ts): a stack per failed request would flood the log in an outage.
   */
  failure(error: unknown, log: Logger = this.#options.log): EventsDbError {
    const domain = asDomainError(error);
    const status = httpStatus(domain.code);
    if (status >= 500 && status !== 503) log.error({ err: error }, "request failed");
    return domain;
  }
}

/**
 * The pipeline on a Fastify app: admission in an onRequest hook, the log line in an onResponse
 * hook (only when info lines are written: the hook costs a few percent of a small append), errors
 * of every route rendered in the request's wire format.
 */
export function installPipeline(app: FastifyInstance, pipeline: Pipeline): void {
  // Fastify wants null for reference types here; the hook below sets it on every request.
  app.decorateRequest("principal", null as unknown as Principal);
  app.addHook("onRequest", async (request) => {
    request.principal = ANYONE;
    request.principal = await pipeline.admit(pipeline.fastifyRequest(request));
  });
  // Always installed: SIGHUP may turn request lines on (--log-level info) after the start. A
  // callback hook, not an async one: no promise per request while lines are off.
  app.addHook("onResponse", (request, reply, done) => {
    if (pipeline.logsRequests) {
      const grpcStatus = sentGrpcStatus(reply.raw);
      pipeline.logLine(
        {
          method: request.method,
          route: request.routeOptions.url ?? (request.url.split("?", 1)[0] as string),
          status: reply.statusCode,
          ...(grpcStatus === undefined ? {} : { grpcStatus }),
          ms: Math.round(reply.elapsedTime * 100) / 100,
          caller: request.principal.name,
        },
        request.log,
      );
    }
    done();
  });
  app.setErrorHandler((error, request, reply) =>
    sendError(request, reply, pipeline.failure(error, request.log)),
  );
}

/** The grpc-status a gRPC or gRPC-Web response sent in its headers or HTTP/2 trailers. */
function sentGrpcStatus(res: ServerResponse | Http2ServerResponse): number | undefined {
  const value =
    "stream" in res
      ? (res.stream.sentTrailers?.["grpc-status"] ?? res.stream.sentHeaders?.["grpc-status"])
      : res.getHeader("grpc-status");
  return value === undefined ? undefined : Number(value);
}
