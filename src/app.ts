import fastifyCors from "@fastify/cors";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerFactory,
  LogController,
} from "fastify";
import { trustFunction } from "./auth/client-address.js";
import { installAuth } from "./auth/hook.js";
import type { SessionStore } from "./auth/sessions.js";
import type { Guard } from "./auth/throttle.js";
import type { TokenRegistry } from "./auth/tokens.js";
import type { Config } from "./config.js";
import { EventsDbError } from "./errors.js";
import type { EventLog } from "./events/event-log.js";
import type { Metrics } from "./metrics.js";
import { healthRoutes } from "./transports/grpc/health.js";
import { reflectionRoutes } from "./transports/grpc/reflection.js";
import { connectRoutes } from "./transports/grpc/service.js";
import { operationsRoutes } from "./transports/http/operations.js";
import { restRoutes } from "./transports/http/rest.js";
import { sseRoutes } from "./transports/http/sse.js";
import { Outbound } from "./transports/outbound.js";
import { asDomainError, restErrorBody, sendError } from "./transports/render-error.js";
import { httpStatus } from "./transports/status.js";
import { consoleRoutes } from "./ui/console.js";

export interface AppDeps {
  readonly config: Config;
  readonly eventLog: EventLog;
  readonly metrics: Metrics;
  /** The current tokens; a function so that a reload (SIGHUP) applies to the next request. */
  readonly registry: () => TokenRegistry;
  /** Browser sessions (server.ts ends stale ones on reload). */
  readonly sessions: SessionStore;
  /** Failed-authentication throttle and --rate-limit, shared with the gRPC unary fast path. */
  readonly guard: Guard;
  /** The process's logger or false; the process decides (server.ts), tests pass false. */
  readonly logger?: FastifyBaseLogger | false;
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
  const { config, eventLog, metrics } = deps;
  const app = Fastify({
    ...(deps.logger ? { loggerInstance: deps.logger } : { logger: false }),
    bodyLimit: config.limits.maxBodyBytes,
    // Request logs at info would cost more than the append itself; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    return503OnClosing: true,
    // The same rule as the gRPC unary fast path's (client-address.ts): request.ip is the client.
    trustProxy: trustFunction(config.trustProxy) ?? false,
    ...(deps.serverFactory === undefined ? {} : { serverFactory: deps.serverFactory }),
  });

  // Errors of every route, in the wire format of the request (REST, Connect, gRPC, gRPC-Web).
  app.setErrorHandler((error, request, reply) => {
    const domain = asDomainError(error);
    const status = httpStatus(domain.code);
    // A 503 is a known state (store failing, queue full, shutting down) that its owner logs once
    // per change (failure-log.ts); a stack per failed request would flood the log in an outage.
    if (status >= 500 && status !== 503) request.log.error({ err: error }, "request failed");
    return sendError(request, reply, domain);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(restErrorBody(notFound(`no route ${request.method} ${request.url.split("?")[0]}`))),
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
      exposedHeaders: [
        "x-has-more",
        "x-next-from-id",
        "retry-after",
        "grpc-status",
        "grpc-message",
        "grpc-retry-pushback-ms",
      ],
    });
  }
  await installAuth(app, {
    registry: deps.registry,
    sessions: deps.sessions,
    guard: deps.guard,
    protectMetrics: config.auth.protectMetrics,
    allowQueryToken: config.auth.allowQueryToken,
    secureCookies: config.tls !== undefined,
    sessionTtlSeconds: config.auth.sessionTtlSeconds,
  });
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

  await app.register(operationsRoutes, { eventLog, metrics });
  await app.register(restRoutes, { eventLog, metrics, outbound });
  await app.register(sseRoutes, {
    eventLog,
    metrics,
    outbound,
    heartbeatIntervalSeconds: config.streams.heartbeatIntervalSeconds,
    clientBufferSize: config.streams.clientBufferSize,
  });
  await app.register(connectRoutes, {
    config,
    eventLog,
    metrics,
    outbound,
    extraRoutes: (router) => {
      healthRoutes(router, () => eventLog.readiness());
      reflectionRoutes(router);
    },
  });
  await app.register(consoleRoutes);
  return app;
}

function notFound(message: string): EventsDbError {
  return new EventsDbError("not_found", message);
}
