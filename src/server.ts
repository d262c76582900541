import fs from "node:fs";
import type { FastifyInstance } from "fastify";
import { buildApp, logsRequests } from "./app.js";
import { TokenRegistry } from "./auth.js";
import { type Config, ConfigError, describeStore, type TlsConfig } from "./config.js";
import { EventStore } from "./events/store.js";
import { Front, type FrontTls, type Handler } from "./front.js";
import { Metrics } from "./metrics.js";
import { grpcUnaryShortcut } from "./transports/grpc-unary.js";

/** How often certificate files are checked for changes. */
export const TLS_WATCH_MS = 1000;

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly store: EventStore;
  readonly metrics: Metrics;
  /** Bound ports (useful when 0 was asked for). */
  readonly restPort: number;
  readonly grpcPort: number;
  /** Requests and gRPC calls in flight (what a graceful stop waits for). */
  readonly inFlight: number;
  /** Graceful stop: stop accepting, drain requests, flush the writer, close the store. Idempotent. */
  close(): Promise<void>;
  /** Re-reads the auth file (SIGHUP); keeps the old tokens and throws when the new file is invalid. */
  reload(): void;
}

export interface ServerOptions {
  /** Pino options, or false for none (tests). */
  readonly logger?: boolean | Record<string, unknown>;
  /** Collect prom-client's process metrics (off in tests that start many servers). */
  readonly defaultMetrics?: boolean;
}

/**
 * Opens the store, builds the app and listens on the REST and gRPC ports, both served by one
 * HTTP/1.1 + h2c front (see front.ts), so every protocol works on either port.
 */
export async function startServer(config: Config, options: ServerOptions = {}): Promise<RunningServer> {
  let registry = loadRegistry(config);
  const tls = config.tls === undefined ? undefined : readTls(config.tls);
  const metrics = new Metrics({ defaultMetrics: options.defaultMetrics ?? true });
  const store = await EventStore.open(config, metrics);
  metrics.trackPool(() => store.dialect.poolStats());
  let front: Front | undefined;
  let app: FastifyInstance;
  try {
    app = await buildApp({
      config,
      store,
      metrics,
      registry: () => registry,
      logger: options.logger ?? false,
      serverFactory: (handler) => {
        // Fastify handles HTTP/1.1 and HTTP/2 compat requests alike per request.
        front = new Front(
          handler as unknown as Handler,
          tls,
          grpcUnaryShortcut({
            store,
            metrics,
            registry: () => registry,
            enabled: config.rateLimitPerMinute === 0,
            // Assigned by then: a call arrives only after listen().
            log: (error, path) => app.log.error({ err: error }, `rpc ${path} failed`),
            logCall: () => (logsRequests(app.log) ? (line) => app.log.info(line, "request") : undefined),
          }),
        );
        return front.http1;
      },
    });
    await app.ready();
  } catch (error) {
    await store.close();
    throw error;
  }
  const edge = front as unknown as Front;
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
    await store.close();
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

  /** New certificates for new connections; a broken pair keeps the old one (and says so). */
  const reloadTls = () => {
    if (config.tls === undefined) return;
    try {
      edge.setSecureContext(readTls(config.tls));
      app.log.info("TLS certificates reloaded");
    } catch (error) {
      app.log.error({ err: error }, "TLS reload failed; keeping the previous certificates");
    }
  };
  const watched = config.tls === undefined ? [] : [config.tls.certFile, config.tls.keyFile];
  let pending: NodeJS.Timeout | undefined;
  for (const file of watched) {
    // watchFile polls, so it also sees a file replaced by rename (how cert tools rotate).
    fs.watchFile(file, { interval: TLS_WATCH_MS, persistent: false }, () => {
      // Cert and key change one after the other: reload once both are written.
      clearTimeout(pending);
      pending = setTimeout(reloadTls, TLS_WATCH_MS);
      pending.unref();
    });
  }

  let closing: Promise<void> | undefined;
  return {
    app,
    store,
    metrics,
    restPort,
    grpcPort,
    get inFlight() {
      return edge.inFlight;
    },
    reload() {
      reloadTls();
      registry = loadRegistry(config);
      app.log.info({ tokens: registry.size }, "auth tokens reloaded");
      // Streams of tokens that are gone or changed end now, not at the next periodic check.
      void store.recheckStreams();
    },
    close() {
      closing ??= (async () => {
        for (const file of watched) fs.unwatchFile(file);
        clearTimeout(pending);
        edge.stopAccepting();
        store.endStreams();
        // In-flight requests get most of --shutdown-timeout; the rest is for the write queue and the pool.
        await edge.drain(config.shutdownTimeoutSeconds * 600);
        await edge.close();
        await app.close();
        await store.close();
      })();
      return closing;
    },
  };
}

/** The tokens of AUTH_TOKEN and --auth-file; an unreadable or invalid file is a configuration error. */
function loadRegistry(config: Config): TokenRegistry {
  try {
    return TokenRegistry.load(config.auth.token, config.auth.file);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

/** Reads the PEM files; unreadable files are a configuration error. */
function readTls(tls: TlsConfig): FrontTls {
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
