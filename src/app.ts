import fastifyCors from "@fastify/cors";
import fastifyRateLimit from "@fastify/rate-limit";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerFactory,
  LogController,
} from "fastify";
import { clientKey, type TokenRegistry } from "./auth.js";
import type { Config } from "./config.js";
import { EventsDbError } from "./errors.js";
import type { EventStore } from "./events/store.js";
import type { Metrics } from "./metrics.js";
import { SessionStore } from "./sessions.js";
import { installAuth } from "./transports/authenticate.js";
import { connectRoutes } from "./transports/connect.js";
import { healthRoutes } from "./transports/grpc-health.js";
import { reflectionRoutes } from "./transports/grpc-reflection.js";
import { operationsRoutes } from "./transports/operations.js";
import { Outbound } from "./transports/outbound.js";
import { restRoutes } from "./transports/rest.js";
import { sseRoutes } from "./transports/sse.js";
import { httpStatus } from "./transports/status.js";
import { consoleRoutes } from "./ui/console.js";

export interface AppDeps {
  readonly config: Config;
  readonly store: EventStore;
  readonly metrics: Metrics;
  /** The current tokens; a function so that a reload (SIGHUP) applies to the next request. */
  readonly registry: () => TokenRegistry;
  /** Pino options or false; the process decides (server.ts), tests pass false. */
  readonly logger?: boolean | Record<string, unknown>;
  /** The one-port HTTP/1.1 + h2c front (server.ts); absent in tests that use inject(). */
  readonly serverFactory?: FastifyServerFactory;
}

/**
 * Builds the whole app: edge (errors, limits), then each transport, registered explicitly so the
 * architecture reads in this one file. No port is opened here; server.ts listens.
 */
const REQUEST_LOG_LEVELS: ReadonlySet<string> = new Set(["trace", "debug", "info"]);

/** Whether request lines are written: the log is at info or below (asked per gRPC append). */
export function logsRequests(log: FastifyBaseLogger): boolean {
  return REQUEST_LOG_LEVELS.has(log.level);
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, store, metrics } = deps;
  const app = Fastify({
    logger: deps.logger ?? false,
    bodyLimit: config.limits.maxBodyBytes,
    // Request logs at info would cost more than the append itself; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    return503OnClosing: true,
    ...(deps.serverFactory === undefined ? {} : { serverFactory: deps.serverFactory }),
  });

  app.setErrorHandler((error, request, reply) => {
    const { status, body, retryAfter } = toErrorResponse(error);
    if (status >= 500) request.log.error({ err: error }, "request failed");
    if (retryAfter !== undefined) void reply.header("retry-after", String(retryAfter));
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(errorBody("not_found", `no route ${request.method} ${request.url.split("?")[0]}`)),
  );
  // Every response is watched from the start: --write-timeout, --connection-buffer-bytes.
  const outbound = new Outbound({
    connectionBytes: config.streams.connectionBufferBytes,
    pageBytes: config.streams.clientBufferBytes,
    maxEventBytes: config.limits.maxEventBytes,
    writeTimeoutMs: config.streams.writeTimeoutSeconds * 1000,
  });
  outbound.install(app);

  if (config.corsOrigins.length > 0) {
    const any = config.corsOrigins.includes("*");
    // Never "*" together with credentials: a wildcard serves anonymous reads only.
    await app.register(fastifyCors, {
      origin: any ? "*" : [...config.corsOrigins],
      credentials: !any,
      exposedHeaders: ["x-has-more", "x-next-from-id", "retry-after"],
    });
  }
  await installAuth(app, {
    registry: deps.registry,
    sessions: new SessionStore(store.dialect.db, config.auth.sessionTtlSeconds),
    protectMetrics: config.auth.protectMetrics,
    allowQueryToken: config.auth.allowQueryToken,
    secureCookies: config.tls !== undefined,
  });
  if (config.rateLimitPerMinute > 0) {
    await app.register(fastifyRateLimit, {
      max: config.rateLimitPerMinute,
      timeWindow: 60_000,
      // After authentication, so a token is limited as one caller wherever it comes from.
      hook: "preHandler",
      keyGenerator: (request) => clientKey(request.principal, request.ip),
      // Thrown, so the one error handler answers it like every other error (429 + Retry-After).
      errorResponseBuilder: (_request, context) =>
        new EventsDbError("too_many_requests", `rate limit of ${context.max} requests per minute exceeded`, {
          retryAfterSeconds: Math.max(1, Math.ceil(context.ttl / 1000)),
        }) as unknown as { statusCode: number },
    });
  }
  // One line per request (streams log their own open and close); the URL without its query, which
  // may carry an access_token. Only hooked when info lines are written: the hook costs a few
  // percent of a small append.
  if (logsRequests(app.log)) {
    app.addHook("onResponse", async (request, reply) => {
      request.log.info(
        {
          method: request.method,
          route: request.routeOptions.url ?? request.url.split("?")[0],
          status: reply.statusCode,
          ms: Math.round(reply.elapsedTime * 100) / 100,
          caller: request.principal.name,
        },
        "request",
      );
    });
  }

  await app.register(operationsRoutes, { store, metrics });
  await app.register(restRoutes, { store, metrics, outbound });
  await app.register(sseRoutes, {
    store,
    metrics,
    outbound,
    heartbeatIntervalSeconds: config.streams.heartbeatIntervalSeconds,
    clientBufferSize: config.streams.clientBufferSize,
  });
  await app.register(connectRoutes, {
    config,
    store,
    metrics,
    outbound,
    extraRoutes: (router) => {
      healthRoutes(router, () => store.readiness());
      reflectionRoutes(router);
    },
  });
  await app.register(consoleRoutes);
  return app;
}

function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

/** Domain errors keep their code; Fastify's own 4xx (bad JSON, body too large, …) map by status. */
function toErrorResponse(error: unknown): {
  status: number;
  body: ReturnType<typeof errorBody>;
  retryAfter?: number;
} {
  if (error instanceof EventsDbError) {
    return {
      status: httpStatus(error.code),
      body: errorBody(error.code, error.message),
      ...(error.retryAfterSeconds === undefined ? {} : { retryAfter: error.retryAfterSeconds }),
    };
  }
  const fastifyError = error as { statusCode?: number; code?: string; message?: string };
  const status = fastifyError.statusCode;
  if (status === 413)
    return { status, body: errorBody("payload_too_large", "the request body is too large") };
  if (status === 415)
    return { status, body: errorBody("unsupported_media_type", "unsupported Content-Type") };
  if (status !== undefined && status >= 400 && status < 500) {
    return { status: 400, body: errorBody("invalid_argument", fastifyError.message ?? "bad request") };
  }
  return { status: 500, body: errorBody("internal", "internal error") };
}
