import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import proxyAddr from "@fastify/proxy-addr";
import { type InlineTokens, parseTokens } from "./auth/tokens.js";
import { suggestion } from "./suggest.js";
import { yaml } from "./yaml.js";

/** Where events live: the embedded SQLite file (default) or a MySQL-compatible server. */
export type StoreConfig =
  | { readonly kind: "sqlite"; readonly path: string }
  | { readonly kind: "mysql"; readonly url: string; readonly poolSize: number };

/** The whole configuration, parsed and validated once at start, then frozen. */
export interface Config {
  readonly host: string;
  readonly restPort: number;
  readonly grpcPort: number;
  readonly store: StoreConfig;
  readonly logLevel: string;
  readonly limits: Limits;
  readonly writer: WriterConfig;
  readonly streams: StreamConfig;
  readonly auth: AuthConfig;
  /** Origins allowed by CORS; empty = CORS off. */
  readonly corsOrigins: readonly string[];
  /** Requests per minute per token (or IP without one); 0 = no rate limit. */
  readonly rateLimitPerMinute: number;
  /** Push subscriptions this server holds at most (all owners); creating more answers 429. */
  readonly maxSubscriptions: number;
  /**
   * Peers whose X-Forwarded-For names the client (Fastify's `trustProxy`): true = every peer,
   * addresses / CIDR ranges, or false = none (the socket's peer is the client).
   */
  readonly trustProxy: boolean | readonly string[];
  readonly tls: TlsConfig | undefined;
  /**
   * Unary CreateEvent/CreateEvents over plain gRPC read straight off the HTTP/2 stream (the same
   * rules, several times cheaper per call); false = every call goes through Connect.
   */
  readonly grpcFastPath: boolean;
  /** Ed25519 private key (PEM) signing new events' chain hashes; undefined = unsigned. */
  readonly signingKeyFile: string | undefined;
  /**
   * `event`: every event's hash is signed (about 45 µs of CPU each); `commit`: only the last event
   * of each group commit, whose hash covers every event before it through the chain.
   */
  readonly signingMode: SigningMode;
  readonly connections: ConnectionConfig;
  /** Milliseconds any one database call may take (a wait for a connection, a query, a commit). */
  readonly dbTimeoutMs: number;
  /** Seconds SIGTERM waits for in-flight requests and the write queue before exiting. */
  readonly shutdownTimeoutSeconds: number;
  readonly webhooks: WebhookConfig;
  /** Each option's value as text and where it came from (--check-config prints them; SIGHUP compares them). */
  readonly settings: Readonly<Record<ServeFlag, Setting>>;
}

/** Where a setting came from: the flag, its env twin, a config file (and the key as spelled there), the default. */
export type SettingSource =
  | { readonly kind: "flag" }
  | { readonly kind: "env" }
  | { readonly kind: "file"; readonly file: string; readonly key: string }
  | { readonly kind: "default" };

export interface Setting {
  /** The value as given (text); undefined = not set and no default. */
  readonly value: string | undefined;
  readonly source: SettingSource;
}

export interface AuthConfig {
  /** (compat) AUTH_TOKEN: one token with full access; unset (and no auth file) = open. */
  readonly token: string | undefined;
  /** Named tokens with scopes (JSON or YAML), reloaded on SIGHUP. */
  readonly file: string | undefined;
  /** Named tokens of the last config file that has a `tokens` key (same shape as the auth file's). */
  readonly tokens: InlineTokens | undefined;
  readonly protectMetrics: boolean;
  readonly allowQueryToken: boolean;
  readonly sessionTtlSeconds: number;
}

export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  /** Require client certificates signed by this CA (mutual TLS). */
  readonly clientCaFile: string | undefined;
}

/** Bounds on the connections of both ports (front.ts): a client that is silent or slow is cut. */
export interface ConnectionConfig {
  /**
   * A new connection must say what it is (first bytes, TLS handshake) and send its first request's
   * headers (HTTP/1.1) or open its first stream (HTTP/2) within this.
   */
  readonly headerTimeoutMs: number;
  /** A request must arrive whole, headers and body, within this (HTTP/2: its stream's END_STREAM). */
  readonly requestTimeoutMs: number;
  /** A connection with nothing in flight (HTTP/1.1 keep-alive, HTTP/2 without open streams) closes after this. */
  readonly idleTimeoutMs: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of every HTTP/2 connection (RFC 9113 §5.1.2). */
  readonly maxConcurrentStreams: number;
}

/** Delivery of push subscriptions to web hooks (src/subscriptions/delivery/). */
export interface WebhookConfig {
  readonly allowPrivate: boolean;
  /** WebHook-Request-Origin. */
  readonly origin: string;
  readonly timeoutMs: number;
  readonly responseBytes: number;
  readonly maxAttempts: number;
  readonly maxRetryMs: number;
  readonly backoffMs: number;
  readonly backoffMaxMs: number;
  readonly leaseMs: number;
  readonly subscriptionsPerProcess: number;
}

/** Input limits; every one is named here with its default. */
export interface Limits {
  /** Bytes of event data (stored in MEDIUMBLOB, so at most 16 MiB - 1). */
  readonly maxEventBytes: number;
  /** Bytes of one HTTP request body. */
  readonly maxBodyBytes: number;
  /** Events in one batch request. */
  readonly maxBatchEvents: number;
}

export interface WriterConfig {
  /** Events waiting for a commit; beyond it appends fail fast with 503. */
  readonly queueEvents: number;
  /** Bytes of event data waiting for a commit; beyond it appends fail fast with 503. */
  readonly queueBytes: number;
  /** Events in one group-commit transaction (a single request's batch is never split). */
  readonly commitEvents: number;
  /** Bytes of event data in one group-commit transaction. */
  readonly commitBytes: number;
}

export interface StreamConfig {
  readonly clientBufferSize: number;
  /**
   * Bytes of events (data and extension attributes) a stream may buffer, and the byte budget of
   * every page and batch: a catch-up read, a stream message, a REST or gRPC page (at least one
   * event each).
   */
  readonly clientBufferBytes: number;
  readonly maxTotalClients: number;
  /** Open streams per client (token name, or address for anonymous callers). */
  readonly maxStreamsPerClient: number;
  /** Response bytes one connection may hold unsent; page reads beyond it wait (--write-timeout). */
  readonly connectionBufferBytes: number;
  readonly streamBatchSize: number;
  readonly heartbeatIntervalSeconds: number;
  readonly writeTimeoutSeconds: number;
  /** Milliseconds between polls for events other processes appended (0 = never). */
  readonly storePollMs: number;
  /** --store-poll-min-ms: the look's interval right after other processes' events came. */
  readonly storePollMinMs: number;
  /** Live events are handed to consumers at most this often (milliseconds; 0 = at once). */
  readonly flushMs: number;
}

/** Raised for invalid configuration; the CLI prints its message on one line and exits with code 2. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

type Kind = "port" | "positive" | "nonnegative" | "string" | "boolean";

interface OptionSpec {
  /** Flag name without dashes, e.g. `rest-port`; the env twin is its upper snake case. */
  readonly flag: string;
  readonly kind: Kind;
  readonly default?: string;
  readonly description: string;
  readonly max?: number;
  /** A comma-separated list: a config file may give it as a YAML/JSON list too. */
  readonly list?: boolean;
  /** Applied by SIGHUP without a restart (the others are reported as needing one). */
  readonly live?: boolean;
}

export const SIGNING_MODES = ["event", "commit"] as const;
export type SigningMode = (typeof SIGNING_MODES)[number];

function signingMode(value: string, name: string): SigningMode {
  if (!(SIGNING_MODES as readonly string[]).includes(value)) {
    throw new ConfigError(`${name} must be one of ${SIGNING_MODES.join(", ")}; got ${value}`);
  }
  return value as SigningMode;
}

/** The log levels --log-level accepts (pino's, and silent). */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

const MiB = 1024 * 1024;

/**
 * Every server option: one flag, its env twin (REST_PORT for --rest-port) and its default.
 * The CLI builds its options from this table, so flags, env and docs cannot drift apart.
 */
export const SERVE_OPTIONS = [
  { flag: "host", kind: "string", default: "0.0.0.0", description: "address to listen on" },
  { flag: "rest-port", kind: "port", default: "8080", description: "port for REST, SSE and Connect" },
  {
    flag: "grpc-port",
    kind: "port",
    default: "50051",
    description: "port for gRPC (same app as --rest-port)",
  },
  {
    flag: "database-url",
    kind: "string",
    description: "mysql://user:pass@host:port/db or sqlite:path (default sqlite:./data/events.db)",
  },
  {
    flag: "db-pool-size",
    kind: "positive",
    default: "10",
    description: "MySQL connections for reads",
    max: 1000,
  },
  {
    flag: "log-level",
    kind: "string",
    default: "info",
    description: LOG_LEVELS.join(", "),
    live: true,
  },
  {
    flag: "max-event-bytes",
    kind: "positive",
    default: String(MiB),
    description: "largest event data in bytes",
    max: 16 * MiB - 1,
  },
  {
    flag: "max-body-bytes",
    kind: "positive",
    default: String(16 * MiB),
    description: "largest request body",
  },
  { flag: "max-batch-events", kind: "positive", default: "1000", description: "events in one batch request" },
  { flag: "write-queue-events", kind: "positive", default: "20000", description: "events waiting to commit" },
  {
    flag: "write-queue-bytes",
    kind: "positive",
    default: String(64 * MiB),
    description: "event bytes waiting to commit",
  },
  { flag: "commit-events", kind: "positive", default: "2000", description: "events in one group commit" },
  {
    flag: "commit-bytes",
    kind: "positive",
    default: String(8 * MiB),
    description: "event bytes in one commit",
  },
  {
    flag: "client-buffer-size",
    kind: "positive",
    default: "100",
    description: "live events buffered per stream",
  },
  {
    flag: "client-buffer-bytes",
    kind: "positive",
    default: String(MiB),
    description: "event bytes buffered per stream; also the byte budget of every page and stream message",
  },
  { flag: "max-total-clients", kind: "positive", default: "10000", description: "concurrent streams" },
  {
    flag: "max-streams-per-client",
    kind: "positive",
    default: "1000",
    description: "concurrent streams per token (or address without one)",
  },
  {
    flag: "connection-buffer-bytes",
    kind: "positive",
    default: String(8 * MiB),
    description: "response bytes one connection may hold unsent before its reads wait",
  },
  { flag: "stream-batch-size", kind: "positive", default: "10", description: "events per catch-up page" },
  {
    flag: "heartbeat-interval",
    kind: "positive",
    default: "15",
    description: "seconds between SSE heartbeats",
  },
  {
    flag: "write-timeout",
    kind: "positive",
    default: "60",
    description: "seconds a stream may stay unwritable",
  },
  {
    flag: "stream-flush-ms",
    kind: "nonnegative",
    default: "20",
    description:
      "with more than 50 streams waiting, live events reach them at most this often (ms; 0 = at once)",
    max: 1000,
  },
  {
    flag: "store-poll-ms",
    kind: "nonnegative",
    default: "50",
    description: "longest ms between looks for events other processes appended, while none come (0 = never)",
  },
  {
    flag: "store-poll-min-ms",
    kind: "positive",
    default: "5",
    description: "ms between those looks right after events came (doubling up to --store-poll-ms)",
  },
  {
    flag: "grpc-fast-path",
    kind: "boolean",
    default: "true",
    description: "take unary gRPC appends off the raw HTTP/2 stream (false = all through Connect)",
  },
  {
    flag: "auth-file",
    kind: "string",
    description: "named tokens with read/write scopes (JSON or YAML)",
    live: true,
  },
  { flag: "protect-metrics", kind: "boolean", default: "false", description: "require a token for /metrics" },
  {
    flag: "allow-query-token",
    kind: "boolean",
    default: "false",
    description: "accept ?access_token= on the stream route",
  },
  { flag: "session-ttl", kind: "positive", default: "43200", description: "seconds a browser session lasts" },
  {
    flag: "cors-origin",
    kind: "string",
    description: "comma-separated origins allowed by CORS (default: none)",
    list: true,
  },
  {
    flag: "rate-limit",
    kind: "nonnegative",
    default: "0",
    description: "requests per minute per token or IP (0 = off)",
  },
  {
    flag: "max-subscriptions",
    kind: "positive",
    default: "1000",
    description: "push subscriptions the server holds at most (all owners)",
  },
  {
    flag: "trust-proxy",
    kind: "string",
    default: "false",
    description: "proxies whose X-Forwarded-For names the client: true, or comma-separated addresses/CIDRs",
    list: true,
  },
  {
    flag: "tls-cert-file",
    kind: "string",
    description: "PEM certificate chain: serve HTTPS (h2 + http/1.1)",
    live: true,
  },
  { flag: "tls-key-file", kind: "string", description: "PEM private key for --tls-cert-file", live: true },
  {
    flag: "signing-key-file",
    kind: "string",
    description: "Ed25519 private key (PEM): sign new events' chain hashes",
  },
  {
    flag: "signing-mode",
    kind: "string",
    default: "event",
    description:
      "event: sign every event's hash; commit: only each group commit's last (it covers those before)",
  },
  {
    flag: "tls-client-ca-file",
    kind: "string",
    description: "PEM CA: require client certificates (mTLS)",
    live: true,
  },
  {
    flag: "header-timeout",
    kind: "positive",
    default: "20",
    description:
      "seconds a new connection may take to send its first request's headers (TLS handshake included)",
    max: 3600,
  },
  {
    flag: "request-timeout",
    kind: "positive",
    default: "120",
    description: "seconds an HTTP/1.1 request may take to arrive whole, body included",
    max: 86400,
  },
  {
    flag: "idle-timeout",
    kind: "positive",
    default: "65",
    description: "seconds a connection with no request or stream in flight stays open",
    max: 86400,
  },
  {
    flag: "max-concurrent-streams",
    kind: "positive",
    default: "100",
    description: "streams one HTTP/2 connection may have open at once",
    max: 1_000_000,
  },
  {
    flag: "db-timeout",
    kind: "positive",
    default: "5",
    description: "seconds any database call may take before it fails (503)",
    max: 3600,
  },
  { flag: "shutdown-timeout", kind: "positive", default: "30", description: "seconds to drain on SIGTERM" },
  {
    flag: "webhook-allow-private",
    kind: "boolean",
    default: "false",
    description: "deliver to web hook sinks on loopback, private and link-local addresses",
  },
  {
    flag: "webhook-origin",
    kind: "string",
    description: "WebHook-Request-Origin sent to sinks (default: the host name)",
  },
  {
    flag: "webhook-timeout-seconds",
    kind: "positive",
    default: "10",
    description: "seconds one web hook request (handshake or delivery) may take",
    max: 3600,
  },
  {
    flag: "webhook-response-bytes",
    kind: "positive",
    default: String(64 * 1024),
    description: "bytes of a sink's response body read; beyond it the connection is cut",
    max: 16 * MiB,
  },
  {
    flag: "webhook-max-attempts",
    kind: "positive",
    default: "10",
    description: "failed attempts at one event before its subscription is parked",
    max: 1_000_000,
  },
  {
    flag: "webhook-max-retry-seconds",
    kind: "positive",
    default: "3600",
    description: "seconds of failing one event before its subscription is parked",
    max: 30 * 86400,
  },
  {
    flag: "webhook-backoff-ms",
    kind: "positive",
    default: "1000",
    description: "first retry's longest wait (ms); doubles per attempt, full jitter",
    max: 3_600_000,
  },
  {
    flag: "webhook-backoff-max-seconds",
    kind: "positive",
    default: "300",
    description: "longest wait between attempts, Retry-After included",
    max: 86400,
  },
  {
    flag: "subscription-lease-seconds",
    kind: "positive",
    default: "10",
    description: "seconds a process holds a push subscription without renewing it (takeover time)",
    max: 3600,
  },
  {
    flag: "subscriptions-per-process",
    kind: "nonnegative",
    default: "1000",
    description: "push subscriptions this process delivers at once (0 = none)",
    max: 1_000_000,
  },
] as const satisfies readonly OptionSpec[];

export type ServeFlag = (typeof SERVE_OPTIONS)[number]["flag"];

/** `rest-port` → `REST_PORT`. */
export function envName(flag: string): string {
  return flag.toUpperCase().replaceAll("-", "_");
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Builds the configuration from command-line flags, the environment, config files and defaults,
 * in that order of precedence (a later file wins over an earlier one). Throws
 * {@link ConfigError} with one clear line on invalid input, naming the value as it was given.
 */
export function loadConfig(
  env: Env,
  flags: Readonly<Record<string, string | undefined>> = {},
  files: readonly ConfigFile[] = [],
): Config {
  const settings = {} as Record<ServeFlag, Setting>;
  for (const spec of SERVE_OPTIONS as readonly OptionSpec[]) {
    settings[spec.flag as ServeFlag] = resolve(spec, env, flags, files);
  }
  /** The name the user gave a value by: the flag, its env twin, the key in its file (a default: the flag). */
  const named = (flag: string): string => settingName(flag, settings[flag as ServeFlag].source);
  const source = (spec: OptionSpec): string => named(spec.flag);

  const values = new Map<string, string | number | undefined>();
  for (const spec of SERVE_OPTIONS as readonly OptionSpec[]) {
    const value = settings[spec.flag as ServeFlag].value;
    if (value === undefined) {
      values.set(spec.flag, undefined);
      continue;
    }
    if (spec.kind === "string") {
      values.set(spec.flag, value);
      continue;
    }
    if (spec.kind === "boolean") {
      const text = value.trim().toLowerCase();
      if (!["true", "false", "1", "0", "yes", "no"].includes(text)) {
        throw new ConfigError(`${source(spec)} must be true or false, got ${JSON.stringify(value)}`);
      }
      values.set(spec.flag, ["true", "1", "yes"].includes(text) ? 1 : 0);
      continue;
    }
    if (!/^\d+$/.test(value.trim())) {
      throw new ConfigError(`${source(spec)} must be a whole number, got ${JSON.stringify(value)}`);
    }
    const n = Number(value.trim());
    const min = spec.kind === "positive" ? 1 : 0;
    const max = spec.kind === "port" ? 65535 : (spec.max ?? Number.MAX_SAFE_INTEGER);
    if (n < min || n > max) {
      throw new ConfigError(`${source(spec)} must be between ${min} and ${max}, got ${value}`);
    }
    values.set(spec.flag, n);
  }
  const num = (flag: ServeFlag): number => values.get(flag) as number;
  const str = (flag: ServeFlag): string | undefined => values.get(flag) as string | undefined;

  const logLevel = str("log-level") ?? "info";
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`${named("log-level")} must be one of ${LOG_LEVELS.join(", ")}; got ${logLevel}`);
  }
  const tokens = fileTokens(files);

  const config: Config = {
    host: str("host") ?? "0.0.0.0",
    restPort: num("rest-port"),
    grpcPort: num("grpc-port"),
    store: storeConfig(env, str("database-url"), num("db-pool-size"), named("database-url")),
    logLevel,
    limits: {
      maxEventBytes: num("max-event-bytes"),
      maxBodyBytes: num("max-body-bytes"),
      maxBatchEvents: num("max-batch-events"),
    },
    writer: {
      queueEvents: num("write-queue-events"),
      queueBytes: num("write-queue-bytes"),
      commitEvents: num("commit-events"),
      commitBytes: num("commit-bytes"),
    },
    streams: {
      clientBufferSize: num("client-buffer-size"),
      clientBufferBytes: num("client-buffer-bytes"),
      maxTotalClients: num("max-total-clients"),
      maxStreamsPerClient: num("max-streams-per-client"),
      connectionBufferBytes: num("connection-buffer-bytes"),
      streamBatchSize: num("stream-batch-size"),
      heartbeatIntervalSeconds: num("heartbeat-interval"),
      writeTimeoutSeconds: num("write-timeout"),
      storePollMs: num("store-poll-ms"),
      storePollMinMs: num("store-poll-min-ms"),
      flushMs: num("stream-flush-ms"),
    },
    auth: {
      token: env.AUTH_TOKEN === "" ? undefined : env.AUTH_TOKEN,
      file: str("auth-file") || undefined,
      tokens,
      protectMetrics: num("protect-metrics") === 1,
      allowQueryToken: num("allow-query-token") === 1,
      sessionTtlSeconds: num("session-ttl"),
    },
    corsOrigins: (str("cors-origin") ?? "")
      .split(",")
      .map((o) => o.trim())
      .filter((o) => o !== ""),
    rateLimitPerMinute: num("rate-limit"),
    maxSubscriptions: num("max-subscriptions"),
    trustProxy: trustProxy(str("trust-proxy") ?? "false", named("trust-proxy")),
    tls: tlsConfig(str("tls-cert-file"), str("tls-key-file"), str("tls-client-ca-file"), named),
    grpcFastPath: num("grpc-fast-path") === 1,
    signingKeyFile: str("signing-key-file") || undefined,
    signingMode: signingMode(str("signing-mode") ?? "event", named("signing-mode")),
    connections: {
      headerTimeoutMs: num("header-timeout") * 1000,
      requestTimeoutMs: num("request-timeout") * 1000,
      idleTimeoutMs: num("idle-timeout") * 1000,
      maxConcurrentStreams: num("max-concurrent-streams"),
    },
    dbTimeoutMs: num("db-timeout") * 1000,
    shutdownTimeoutSeconds: num("shutdown-timeout"),
    webhooks: {
      allowPrivate: num("webhook-allow-private") === 1,
      origin: str("webhook-origin") || os.hostname(),
      timeoutMs: num("webhook-timeout-seconds") * 1000,
      responseBytes: num("webhook-response-bytes"),
      maxAttempts: num("webhook-max-attempts"),
      maxRetryMs: num("webhook-max-retry-seconds") * 1000,
      backoffMs: num("webhook-backoff-ms"),
      backoffMaxMs: num("webhook-backoff-max-seconds") * 1000,
      leaseMs: num("subscription-lease-seconds") * 1000,
      subscriptionsPerProcess: num("subscriptions-per-process"),
    },
    settings,
  };
  if (config.connections.headerTimeoutMs > config.connections.requestTimeoutMs) {
    throw new ConfigError(`${named("header-timeout")} must not exceed ${named("request-timeout")}`);
  }
  if (config.limits.maxBatchEvents > config.writer.queueEvents) {
    throw new ConfigError(`${named("max-batch-events")} must not exceed ${named("write-queue-events")}`);
  }
  // One event larger than the whole queue could never be appended: every try would answer 503.
  if (config.writer.queueBytes < config.limits.maxEventBytes) {
    throw new ConfigError(
      `${named("write-queue-bytes")} (${config.writer.queueBytes}) must be at least ${named("max-event-bytes")} (${config.limits.maxEventBytes})`,
    );
  }
  return deepFreeze(config);
}

/** A setting's value by precedence: flag, env twin (set and not empty), the last file that has it, default. */
function resolve(
  spec: OptionSpec,
  env: Env,
  flags: Readonly<Record<string, string | undefined>>,
  files: readonly ConfigFile[],
): Setting {
  const fromFlag = flags[spec.flag];
  if (fromFlag !== undefined) return { value: fromFlag, source: { kind: "flag" } };
  const fromEnv = env[envName(spec.flag)];
  if (fromEnv !== undefined && fromEnv !== "") return { value: fromEnv, source: { kind: "env" } };
  for (let i = files.length - 1; i >= 0; i--) {
    const file = files[i] as ConfigFile;
    const entry = file.values[spec.flag];
    if (entry !== undefined) {
      return { value: entry.value, source: { kind: "file", file: file.path, key: entry.key } };
    }
  }
  return { value: spec.default, source: { kind: "default" } };
}

/** How an error names a setting: `--rest-port`, `REST_PORT`, `rest-port in config file a.yaml`. */
export function settingName(flag: string, source: SettingSource): string {
  if (source.kind === "env") return envName(flag);
  if (source.kind === "file") return `${source.key} in config file ${source.file}`;
  return `--${flag}`;
}

/** The tokens of the last config file that has a `tokens` key, checked now (an error names file and entry). */
function fileTokens(files: readonly ConfigFile[]): InlineTokens | undefined {
  const last = files.findLast((file) => file.tokens !== undefined);
  if (last?.tokens === undefined) return undefined;
  const inline = { list: last.tokens, where: `config file ${last.path}` };
  try {
    parseTokens(inline.list, inline.where);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  return inline;
}

/**
 * The keys whose new value a SIGHUP cannot apply: every option but the live ones (log level, auth
 * file, TLS files), and the TLS files too when TLS would be switched on or off.
 */
export function restartNeeded(running: Config, next: Config): ServeFlag[] {
  const tlsToggled = (running.tls === undefined) !== (next.tls === undefined);
  return (SERVE_OPTIONS as readonly OptionSpec[])
    .filter((spec) => !spec.live || (tlsToggled && spec.flag.startsWith("tls-")))
    .map((spec) => spec.flag as ServeFlag)
    .filter((flag) => running.settings[flag].value !== next.settings[flag].value);
}

/** One config file: each option's value as text (by flag name) and the key as spelled there, and its tokens. */
export interface ConfigFile {
  readonly path: string;
  readonly values: Readonly<Record<string, { readonly value: string; readonly key: string }>>;
  readonly tokens: readonly unknown[] | undefined;
}

/** `rest-port` → `restPort`: the other spelling a config file may use. */
function camelCase(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/**
 * The config files to read: those of --config (repeatable) if any, else EVENTSDB_CONFIG (several
 * separated by the path delimiter, `:` on Unix). Read in order; a later file wins.
 */
export function readConfigFiles(env: Env, flagPaths: readonly string[] = []): ConfigFile[] {
  const paths =
    flagPaths.length > 0
      ? flagPaths
      : (env.EVENTSDB_CONFIG ?? "").split(path.delimiter).filter((entry) => entry !== "");
  return paths.map(readConfigFile);
}

/**
 * A config file, YAML or JSON (JSON is YAML; `.json` only changes how an error names the file).
 * Keys are the flag names (`rest-port`) or their camelCase (`restPort`), and `tokens`: a list
 * like the auth file's. An unreadable file, an unknown key or a value that is not a scalar is a
 * {@link ConfigError} naming the file and the key; values are checked like flags by loadConfig.
 */
export function readConfigFile(file: string): ConfigFile {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(
      `cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? "error"}`,
    );
  }
  let doc: unknown;
  const json = file.endsWith(".json");
  try {
    // The YAML parser reads JSON too; its message's first line names the place, not the text
    // (JSON.parse quotes the text, which may hold a password).
    doc = yaml().parse(text);
  } catch (error) {
    const reason = ((error as Error).message.split("\n")[0] ?? "").trim().replace(/:$/, "");
    throw new ConfigError(`config file ${file} is not valid ${json ? "JSON" : "YAML"}: ${reason}`);
  }
  if (doc === null || doc === undefined) return { path: file, values: {}, tokens: undefined };
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError(`config file ${file} must be a mapping of option names to values`);
  }
  const specs = new Map<string, OptionSpec>();
  for (const spec of SERVE_OPTIONS as readonly OptionSpec[]) {
    specs.set(spec.flag, spec);
    specs.set(camelCase(spec.flag), spec);
  }
  const values: Record<string, { value: string; key: string }> = {};
  let tokens: unknown[] | undefined;
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    const at = `config file ${file}: ${key}`;
    if (key === "tokens") {
      if (!Array.isArray(value))
        throw new ConfigError(`${at} must be a list of tokens, like the auth file's`);
      tokens = value;
      continue;
    }
    const spec = specs.get(key);
    if (spec === undefined) {
      throw new ConfigError(`${at}: unknown key${suggestion(key, [...specs.keys(), "tokens"])}`);
    }
    if (values[spec.flag] !== undefined) {
      throw new ConfigError(`${at}: given twice (as ${values[spec.flag]?.key} too)`);
    }
    values[spec.flag] = { value: scalarText(value, spec, at), key };
  }
  return { path: file, values, tokens };
}

/** A file value as the text a flag would have given; lists only for list options. */
function scalarText(value: unknown, spec: OptionSpec, at: string): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value) && spec.list === true && value.every((item) => typeof item === "string")) {
    return value.join(",");
  }
  const wanted: Record<Kind, string> = {
    string: "a string",
    boolean: "a boolean",
    port: "a number",
    positive: "a number",
    nonnegative: "a number",
  };
  const what = value === null ? "empty" : Array.isArray(value) ? "a list" : typeof value;
  const expected = spec.list === true ? "a string or a list of strings" : wanted[spec.kind];
  throw new ConfigError(`${at} must be ${expected}, not ${what}`);
}

/**
 * --trust-proxy as Fastify's `trustProxy` takes it: true, false, or addresses and CIDR ranges
 * (also proxy-addr's names loopback, linklocal, uniquelocal). A hop count is refused: Fastify 5
 * disabled it, because it trusts whatever peer connects, so a client reaching the server directly
 * could name any address in X-Forwarded-For and escape per-address throttling.
 */
function trustProxy(value: string, name: string): boolean | readonly string[] {
  const text = value.trim().toLowerCase();
  if (text === "true") return true;
  if (text === "false" || text === "") return false;
  if (/^\d+$/.test(text)) {
    throw new ConfigError(
      `${name} ${value}: hop counts are not supported (any client could then pick its address); name the proxies' addresses or CIDR ranges`,
    );
  }
  const list = value
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  try {
    proxyAddr.compile(list);
  } catch (error) {
    throw new ConfigError(`${name}: ${(error as Error).message}`);
  }
  return list;
}

function tlsConfig(
  cert: string | undefined,
  key: string | undefined,
  ca: string | undefined,
  named: (flag: string) => string,
): TlsConfig | undefined {
  const both = `${named("tls-cert-file")} and ${named("tls-key-file")}`;
  if (!cert && !key) {
    if (ca) throw new ConfigError(`${named("tls-client-ca-file")} needs ${both}`);
    return undefined;
  }
  if (!cert || !key) throw new ConfigError(`TLS needs both ${both}`);
  return { certFile: cert, keyFile: key, clientCaFile: ca || undefined };
}

const MYSQL_ENV = [
  "MYSQL_USER",
  "MYSQL_PASSWORD",
  "MYSQL_DATABASE_NAME",
  "MYSQL_HOST",
  "MYSQL_PORT",
] as const;

/** The default SQLite file when no MySQL setting is given at all. */
export const DEFAULT_SQLITE_PATH = path.join("data", "events.db");

function storeConfig(env: Env, databaseUrl: string | undefined, poolSize: number, name: string): StoreConfig {
  if (databaseUrl !== undefined && databaseUrl !== "") return parseDatabaseUrl(databaseUrl, poolSize, name);
  if (MYSQL_ENV.some((name) => env[name] !== undefined && env[name] !== "")) {
    // (compat) Events DB's MYSQL_* variables; unset ones take the usual MySQL defaults.
    const port = env.MYSQL_PORT || "3306";
    if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
      throw new ConfigError(`MYSQL_PORT must be a port number, got ${JSON.stringify(port)}`);
    }
    const url = new URL("mysql://localhost");
    url.hostname = env.MYSQL_HOST || "localhost";
    url.port = port;
    url.username = encodeURIComponent(env.MYSQL_USER || "root");
    url.password = encodeURIComponent(env.MYSQL_PASSWORD ?? "");
    url.pathname = `/${encodeURIComponent(env.MYSQL_DATABASE_NAME || "eventsdb")}`;
    return { kind: "mysql", url: url.toString(), poolSize };
  }
  return { kind: "sqlite", path: DEFAULT_SQLITE_PATH };
}

/** Accepts `mysql://user:pass@host:port/db`, `sqlite:relative/or/absolute/path`, `sqlite:///abs/path`, `sqlite::memory:`. */
export function parseDatabaseUrl(value: string, poolSize = 10, name = "DATABASE_URL"): StoreConfig {
  if (value.startsWith("sqlite:")) {
    let file = value.slice("sqlite:".length);
    if (file.startsWith("//")) file = file.slice(2);
    if (file === "") throw new ConfigError(`${name} sqlite: needs a file path, e.g. sqlite:./data/events.db`);
    return { kind: "sqlite", path: file };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name} must be mysql://user:pass@host:port/database or sqlite:path`);
  }
  if (url.protocol !== "mysql:" && url.protocol !== "mariadb:") {
    throw new ConfigError(`${name} scheme ${url.protocol} is not supported; use mysql:// or sqlite:`);
  }
  if (url.pathname.length <= 1) throw new ConfigError(`${name} must name a database: mysql://host/database`);
  url.protocol = "mysql:";
  return { kind: "mysql", url: url.toString(), poolSize };
}

/** The store for the start log, without a password. */
export function describeStore(store: StoreConfig): string {
  if (store.kind === "sqlite") return `SQLite file ${path.resolve(store.path)}`;
  const url = new URL(store.url);
  if (url.password) url.password = "***";
  return `MySQL ${url.toString()}`;
}

function deepFreeze<T extends object>(value: T): T {
  for (const key of Object.keys(value)) {
    const child = (value as Record<string, unknown>)[key];
    if (child !== null && typeof child === "object") deepFreeze(child);
  }
  return Object.freeze(value);
}
