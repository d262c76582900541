import { createRequire } from "node:module";
import fastifyCors from "@fastify/cors";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerFactory,
  type FastifyServerOptions,
  LogController,
} from "fastify";
import type { BrowserSessions } from "./auth/sessions.js";
import type { Config } from "./config.js";
import { EventsDbError } from "./errors.js";
import type { EventLog } from "./events/event-log.js";
import { FailureLog } from "./failure-log.js";
import { type Logger, SILENT_LOGGER } from "./log.js";
import type { Metrics } from "./metrics.js";
import { SubscriptionService } from "./subscriptions/service.js";
import { lazyConnectRoutes, RPC_PATHS } from "./transports/grpc/lazy.js";
import { chainRoutes } from "./transports/http/chain.js";
import { operationsRoutes } from "./transports/http/operations.js";
import { restRoutes } from "./transports/http/rest.js";
import { signInRoutes } from "./transports/http/sign-in.js";
import { sseRoutes } from "./transports/http/sse.js";
import { subscriptionRoutes } from "./transports/http/subscriptions.js";
import { Outbound } from "./transports/outbound.js";
import { installPipeline, type Pipeline } from "./transports/pipeline.js";
import { restErrorBody } from "./transports/render-error.js";
import { StreamPump } from "./transports/stream-pump.js";
import { consoleRoutes } from "./ui/console.js";

export interface AppDeps {
  readonly config: Config;
  readonly eventLog: EventLog;
  readonly metrics: Metrics;
  /** The steps every request passes (server.ts shares it with the gRPC unary fast path). */
  readonly pipeline: Pipeline;
  /** Browser sessions, for sign-in and sign-out (server.ts ends stale ones on reload). */
  readonly sessions: BrowserSessions;
  /**
   * Managing push subscriptions (server.ts creates it with the EventLog); absent = one over the
   * EventLog's store with the configured cap (tests that build the app themselves).
   */
  readonly subscriptions?: SubscriptionService;
  /** The process's logger or false; the process decides (server.ts), tests pass false. */
  readonly logger?: FastifyBaseLogger | false;
  /** The one-port HTTP/1.1 + h2c front (server.ts); absent in tests that use inject(). */
  readonly serverFactory?: FastifyServerFactory;
}

/**
 * Builds the whole app: edge (pipeline, limits), then each transport, registered explicitly so the
 * architecture reads in this one file. No port is opened here; server.ts listens.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, eventLog, metrics, pipeline } = deps;
  const app = Fastify({
    ...(deps.logger ? { loggerInstance: deps.logger } : { logger: false }),
    bodyLimit: config.limits.maxBodyBytes,
    // Request logs at info would cost more than the append itself; the pipeline writes one line.
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    return503OnClosing: true,
    // The same rule as the gRPC unary fast path's (client-address.ts): request.ip is the client.
    trustProxy: pipeline.trust ?? false,
    ...(deps.serverFactory === undefined ? {} : { serverFactory: deps.serverFactory }),
    schemaController: { compilersFactory: SCHEMA_COMPILERS },
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
        "x-next-after",
        "retry-after",
        "grpc-status",
        "grpc-message",
        "grpc-retry-pushback-ms",
      ],
    });
  }
  // Credentials, CSRF, throttle and rate limit before every handler; the log line after; errors
  // in each request's wire format.
  installPipeline(app, pipeline);
  await app.register(signInRoutes, {
    pipeline,
    sessions: deps.sessions,
    secureCookies: config.tls !== undefined,
    sessionTtlSeconds: config.auth.sessionTtlSeconds,
  });
  const pump = new StreamPump({ eventLog, metrics, outbound });
  const subscriptions = deps.subscriptions ?? subscriptionService(config, eventLog, metrics);

  await app.register(operationsRoutes, { eventLog, metrics });
  await app.register(restRoutes, { eventLog, metrics, outbound });
  await app.register(chainRoutes, { eventLog, metrics, outbound });
  await app.register(subscriptionRoutes, { subscriptions });
  await app.register(sseRoutes, {
    eventLog,
    pump,
    heartbeatIntervalSeconds: config.streams.heartbeatIntervalSeconds,
    clientBufferSize: config.streams.clientBufferSize,
  });
  // gRPC, gRPC-Web and Connect: the routes now, Connect and the services with the first call.
  await app.register(lazyConnectRoutes, {
    paths: RPC_PATHS,
    load: async (scope) => {
      const [{ connectRoutes }, { healthRoutes }, { reflectionRoutes }] = await Promise.all([
        import("./transports/grpc/service.js"),
        import("./transports/grpc/health.js"),
        import("./transports/grpc/reflection.js"),
      ]);
      return connectRoutes(scope.log, {
        config,
        eventLog,
        metrics,
        outbound,
        pump,
        pipeline,
        subscriptions,
        extraRoutes: (router) => {
          healthRoutes(router, () => eventLog.readiness());
          reflectionRoutes(router);
        },
      });
    },
  });
  await app.register(consoleRoutes);
  return app;
}

/**
 * Fastify's own schema compilers (@fastify/ajv-compiler, @fastify/fast-json-stringify-compiler),
 * loaded when a route with a schema is first compiled instead of when the app is built. No route
 * has one (bodies are read by the transports' own readers), so a server does not load ajv and
 * fast-json-stringify (~110 modules) just to hold them. Fastify treats a factory given here as a
 * custom compiler, which changes one thing only: a `headers` schema would not be lower-cased first.
 */
const SCHEMA_COMPILERS = (() => {
  // Resolved from fastify itself: they are its dependencies, not ours.
  const fastifyRequire = createRequire(createRequire(import.meta.url).resolve("fastify"));
  type Factory = (...args: unknown[]) => unknown;
  const lazy = (name: string) => {
    let factory: Factory | undefined;
    return (...args: unknown[]) => {
      factory ??= (fastifyRequire(name) as () => Factory)();
      return factory(...args);
    };
  };
  return {
    buildValidator: lazy("@fastify/ajv-compiler"),
    buildSerializer: lazy("@fastify/fast-json-stringify-compiler"),
  } as unknown as NonNullable<NonNullable<FastifyServerOptions["schemaController"]>["compilersFactory"]>;
})();

/**
 * The subscription service of a process: over its store, with --max-subscriptions, counted in
 * metrics; store failures logged on `log` (the store's logger) by the one failure rule;
 * `onChanged` after each change (server.ts: this process's deliverer looks at once).
 */
export function subscriptionService(
  config: Config,
  eventLog: EventLog,
  metrics: Metrics,
  log: Logger = SILENT_LOGGER,
  onChanged?: () => void,
): SubscriptionService {
  return new SubscriptionService({
    dialect: eventLog.dialect,
    lastId: () => eventLog.repository.lastId(),
    maxSubscriptions: config.maxSubscriptions,
    allowPrivateSinks: config.webhooks.allowPrivate,
    onRefused: () => metrics.subscriptionRefusals.inc(),
    ...(onChanged === undefined ? {} : { onChanged }),
    failures: new FailureLog(log, (operation) => metrics.storeErrors.inc({ operation })),
  });
}

function notFound(message: string): EventsDbError {
  return new EventsDbError("not_found", message);
}
