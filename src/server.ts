import fs from "node:fs";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import { type DestinationStream, type LoggerOptions, pino } from "pino";
import { buildApp, subscriptionService } from "./app.js";
import { trustFunction } from "./auth/client-address.js";
import { BrowserSessions } from "./auth/sessions.js";
import { type Clock, monotonicClock } from "./auth/sliding-window.js";
import { Guard } from "./auth/throttle.js";
import { TokenRegistry } from "./auth/tokens.js";
import { type Config, ConfigError, describeStore, type TlsConfig } from "./config.js";
import { EventLog } from "./events/event-log.js";
import { Front, type FrontTls, type Handler } from "./front.js";
import { SILENT_LOGGER } from "./log.js";
import { Metrics } from "./metrics.js";
import { DeliveryManager } from "./subscriptions/delivery/manager.js";
import { SubscriptionStore } from "./subscriptions/store.js";
import { grpcFastPath } from "./transports/grpc/fast-path.js";
import { Pipeline } from "./transports/pipeline.js";

/** The longest a graceful stop waits for push deliveries to stop and release their leases. */
const DELIVERY_STOP_MS = 5000;

/** How often certificate files are checked for changes. */
export const TLS_WATCH_MS = 1000;

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly eventLog: EventLog;
  readonly metrics: Metrics;
  /** Delivers this process's share of the push subscriptions (web hooks). */
  readonly delivery: DeliveryManager;
  /** Bound ports (useful when 0 was asked for). */
  readonly restPort: number;
  readonly grpcPort: number;
  /** Requests and gRPC calls in flight (what a graceful stop waits for). */
  readonly inFlight: number;
  /** Graceful stop: stop accepting, drain requests, flush the writer, close the store. Idempotent. */
  close(): Promise<void>;
  /**
   * SIGHUP: applies what can change live — the tokens (AUTH_TOKEN, the auth file, a config file's
   * `tokens`), the log level and the TLS files (read again, also from new paths) — from `next`, or
   * re-reads the auth file and the TLS files of the running configuration. Keeps the old tokens and
   * throws when the new ones are invalid (then nothing changes); a broken TLS set keeps the old one
   * (and says so). The new tokens apply at once; `sessionsEnded` settles once the browser sessions of
   * tokens that changed or went are deleted from the store (for every process sharing it). The
   * caller reports the settings that need a restart (config.ts `restartNeeded`).
   */
  reload(next?: Config): { readonly sessionsEnded: Promise<number> };
}

export interface ServerOptions {
  /** Pino options (`stream`: where lines go, stdout by default), or false for none (tests). */
  readonly logger?: boolean | Record<string, unknown>;
  /** Collect prom-client's process metrics (off in tests that start many servers). */
  readonly defaultMetrics?: boolean;
  /** The monotonic clock of rate limits, throttles and caches (tests step their own). */
  readonly clock?: Clock;
}

/**
 * Opens the store, builds the app and listens on the REST and gRPC ports, both served by one
 * HTTP/1.1 + h2c front (see front.ts), so every protocol works on either port.
 */
export async function startServer(config: Config, options: ServerOptions = {}): Promise<RunningServer> {
  let registry = loadRegistry(config);
  const tls = config.tls === undefined ? undefined : readTls(config.tls);
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });
  // One logger for the process: the app's, the pipeline's (request lines) and the store's (outages).
  const log = createLogger(options.logger);
  const storeLog = log?.child({ component: "store" });
  const deliveryLog = log?.child({ component: "delivery" });
  const eventLog = await EventLog.open(config, metrics, storeLog);
  metrics.trackPool(() => eventLog.dialect.poolStats());
  const clock = options.clock ?? monotonicClock;
  const sessions = new BrowserSessions(eventLog.dialect.db, config.auth.sessionTtlSeconds, clock);
  // One pipeline for the app and the gRPC unary fast path: one count per address and per caller.
  const pipeline = new Pipeline({
    registry: () => registry,
    sessions,
    guard: new Guard({
      rateLimitPerMinute: config.rateLimitPerMinute,
      clock,
      onRefused: (reason) => metrics.refused.inc({ reason }),
    }),
    protectMetrics: config.auth.protectMetrics,
    allowQueryToken: config.auth.allowQueryToken,
    trust: trustFunction(config.trustProxy),
    log: log ?? SILENT_LOGGER,
  });
  const edge = new Front(
    tls,
    config.grpcFastPath ? grpcFastPath({ eventLog, metrics, pipeline }) : undefined,
    config.connections,
  );
  // Push subscriptions: delivery starts once the server listens, and stops first when it closes.
  const delivery = new DeliveryManager({
    eventLog,
    store: new SubscriptionStore(eventLog.dialect),
    sink: {
      allowPrivate: config.webhooks.allowPrivate,
      timeoutMs: config.webhooks.timeoutMs,
      responseBytes: config.webhooks.responseBytes,
    },
    retry: {
      baseMs: config.webhooks.backoffMs,
      maxMs: config.webhooks.backoffMaxMs,
      maxAttempts: config.webhooks.maxAttempts,
      maxRetryMs: config.webhooks.maxRetryMs,
    },
    origin: config.webhooks.origin,
    owners: () => registry,
    counters: {
      delivered: (subscription) => metrics.subscriptionDelivered(subscription),
      failed: (subscription, reason) => metrics.subscriptionFailed(subscription, reason),
      forget: (subscription) => metrics.forgetSubscription(subscription),
      handshake: (result) => metrics.subscriptionHandshakes.inc({ result }),
    },
    log: deliveryLog ?? SILENT_LOGGER,
    leaseMs: config.webhooks.leaseMs,
    maxSubscriptions: config.webhooks.subscriptionsPerProcess,
  });
  let app: FastifyInstance;
  try {
    app = await buildApp({
      config,
      eventLog,
      metrics,
      pipeline,
      sessions,
      subscriptions: subscriptionService(config, eventLog, metrics, storeLog, () => void delivery.poke()),
      logger: log ?? false,
      // Fastify hands both HTTP/1.1 and HTTP/2 compatibility requests to one handler.
      serverFactory: (handler) => edge.attach(handler as Handler),
    });
    await app.ready();
  } catch (error) {
    await eventLog.close();
    throw error;
  }
  let restPort: number;
  let grpcPort: number;
  try {
    restPort = await edge.listen(config.restPort, config.host);
    grpcPort =
      config.grpcPort === config.restPort && config.restPort !== 0
        ? restPort
        : await edge.listen(config.grpcPort, config.host);
  } catch (error) {
    await edge.close();
    await app.close();
    await eventLog.close();
    throw error;
  }
  const where =
    config.store.kind === "sqlite"
      ? `no MySQL configured, storing events in the embedded ${describeStore(config.store)}`
      : `storing events in ${describeStore(config.store)}`;
  app.log.info(
    { restPort, grpcPort },
    `eventsdb listening on ports ${restPort} (REST) and ${grpcPort} (gRPC); ${where}`,
  );

  metrics.trackSubscriptions(() => delivery.gauges());
  delivery.start();

  /** What SIGHUP may change besides the tokens: the log level and the TLS files. */
  let live = { logLevel: config.logLevel, tls: config.tls };

  /** New certificates (and client CA) for new connections; a broken set keeps the old one (and says so). */
  const reloadTls = () => {
    if (live.tls === undefined || config.tls === undefined) return;
    try {
      edge.setSecureContext(readTls(live.tls));
      app.log.info("TLS certificates reloaded");
    } catch (error) {
      app.log.error({ err: error }, "TLS reload failed; keeping the previous certificates");
    }
  };
  let watched: string[] = [];
  let pending: NodeJS.Timeout | undefined;
  const watchTls = () => {
    for (const file of watched) fs.unwatchFile(file);
    // The client CA too: a rotated CA bundle applies to new connections like a rotated certificate.
    watched =
      live.tls === undefined || config.tls === undefined
        ? []
        : [live.tls.certFile, live.tls.keyFile, live.tls.clientCaFile].filter(
            (file): file is string => file !== undefined,
          );
    for (const file of watched) {
      // watchFile polls, so it also sees a file replaced by rename (how cert tools rotate).
      fs.watchFile(file, { interval: TLS_WATCH_MS, persistent: false }, () => {
        // Cert and key change one after the other: reload once both are written.
        clearTimeout(pending);
        pending = setTimeout(reloadTls, TLS_WATCH_MS);
        pending.unref();
      });
    }
  };
  watchTls();

  let closing: Promise<void> | undefined;
  return {
    app,
    eventLog,
    metrics,
    delivery,
    restPort,
    grpcPort,
    get inFlight() {
      return edge.inFlight;
    },
    reload(nextConfig) {
      const wanted = nextConfig ?? config;
      // Tokens first: invalid ones change nothing at all.
      const next = loadRegistry(wanted);
      registry = next;
      const tlsPathsChanged = JSON.stringify(wanted.tls) !== JSON.stringify(live.tls);
      live = {
        logLevel: wanted.logLevel,
        // TLS cannot be switched on or off live (restartNeeded reports it).
        tls: (wanted.tls === undefined) === (config.tls === undefined) ? wanted.tls : live.tls,
      };
      if (tlsPathsChanged) watchTls();
      reloadTls();
      app.log.info({ tokens: next.size }, "auth tokens reloaded");
      if (log !== undefined && log.level !== live.logLevel) {
        const from = log.level;
        // Said at whichever of the two levels is more verbose, so it shows either way.
        const say = () => app.log.info({ from, level: live.logLevel }, "log level changed");
        const before = ["trace", "debug", "info"].includes(from);
        if (before) say();
        // pino children keep the level they were made with: the long-lived ones are set too.
        for (const logger of new Set([log, app.log, storeLog, deliveryLog]))
          if (logger) logger.level = live.logLevel;
        if (!before) say();
      }
      // Streams of tokens that are gone or changed end now, not at the next periodic check; those
      // of sessions once their rows are gone.
      void eventLog.recheckStreams();
      const sessionsEnded = sessions
        .endStale((name, fingerprint) => next.session(name, fingerprint) !== undefined)
        .then(
          (ended) => {
            if (ended > 0) app.log.info({ sessions: ended }, "sessions of changed or removed tokens ended");
            return ended;
          },
          (error: unknown) => {
            // Each session is still checked against the tokens on every use; this only tidies up.
            app.log.warn({ err: error }, "ending the sessions of changed tokens failed");
            return 0;
          },
        );
      void sessionsEnded.then(() => eventLog.recheckStreams());
      return { sessionsEnded };
    },
    close() {
      closing ??= (async () => {
        for (const file of watched) fs.unwatchFile(file);
        clearTimeout(pending);
        // Deliveries first, while the store still answers: in-flight requests are cut (their events
        // go again from the checkpoint) and the leases released, so another process takes over now.
        await delivery.close(Math.min(DELIVERY_STOP_MS, config.shutdownTimeoutSeconds * 200));
        edge.stopAccepting();
        eventLog.endStreams();
        // In-flight requests get most of --shutdown-timeout; the rest is for the write queue and the pool.
        await edge.drain(config.shutdownTimeoutSeconds * 600);
        await edge.close();
        await app.close();
        await eventLog.close();
      })();
      return closing;
    },
  };
}

function createLogger(options: ServerOptions["logger"]): FastifyBaseLogger | undefined {
  if (options === undefined || options === false) return undefined;
  if (options === true) return pino();
  const { stream, ...rest } = options as LoggerOptions & { stream?: DestinationStream };
  return pino(rest, stream);
}

/**
 * The tokens of AUTH_TOKEN, --auth-file and a config file's `tokens`; an unreadable or invalid file
 * is a configuration error.
 */
export function loadRegistry(config: Config): TokenRegistry {
  try {
    return TokenRegistry.load(config.auth.token, config.auth.file, config.auth.tokens);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

/** Reads the PEM files; unreadable files are a configuration error. */
export function readTls(tls: TlsConfig): FrontTls {
  const read = (file: string, what: string) => {
    try {
      return fs.readFileSync(file);
    } catch (error) {
      throw new ConfigError(
        `cannot read ${what} ${file}: ${(error as NodeJS.ErrnoException).code ?? "error"}`,
      );
    }
  };
  return {
    cert: read(tls.certFile, "TLS_CERT_FILE"),
    key: read(tls.keyFile, "TLS_KEY_FILE"),
    ...(tls.clientCaFile === undefined ? {} : { ca: read(tls.clientCaFile, "TLS_CLIENT_CA_FILE") }),
    requestCert: tls.clientCaFile !== undefined,
  };
}
