import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseDatabaseUrl, SERVE_OPTIONS } from "../../src/config.js";

describe("configuration", () => {
  it("has the seed's defaults and SQLite at ./data/events.db without any MySQL setting", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      restPort: 8080,
      grpcPort: 50051,
      store: { kind: "sqlite", path: "data/events.db" },
      limits: { maxEventBytes: 1024 * 1024, maxBatchEvents: 1000 },
      streams: {
        clientBufferSize: 100,
        maxTotalClients: 10000,
        streamBatchSize: 10,
        heartbeatIntervalSeconds: 15,
        clientBufferBytes: 1024 * 1024,
        maxStreamsPerClient: 1000,
        connectionBufferBytes: 8 * 1024 * 1024,
      },
      auth: { token: undefined, file: undefined, protectMetrics: false, allowQueryToken: false },
    });
    expect(Object.isFrozen(config.limits)).toBe(true);
  });

  it("reads --trust-proxy as Fastify's trustProxy: off, true, or addresses and ranges; no hop counts", () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: "true" }).trustProxy).toBe(true);
    expect(loadConfig({}, { "trust-proxy": "10.0.0.1, 192.168.0.0/16,loopback" }).trustProxy).toEqual([
      "10.0.0.1",
      "192.168.0.0/16",
      "loopback",
    ]);
    expect(() => loadConfig({}, { "trust-proxy": "2" })).toThrow(/hop counts are not supported/);
    expect(() => loadConfig({}, { "trust-proxy": "10.0.0.300" })).toThrow(ConfigError);
    expect(() => loadConfig({}, { "trust-proxy": "10.0.0.0/40" })).toThrow(/--trust-proxy: invalid range/);
  });

  it("reads env twins and lets flags win", () => {
    const env = { REST_PORT: "9000", GRPC_PORT: "9001", CLIENT_BUFFER_SIZE: "7", AUTH_TOKEN: "secret" };
    expect(loadConfig(env)).toMatchObject({ restPort: 9000, grpcPort: 9001, auth: { token: "secret" } });
    expect(loadConfig(env, { "rest-port": "9100" })).toMatchObject({ restPort: 9100, grpcPort: 9001 });
    expect(loadConfig(env).streams.clientBufferSize).toBe(7);
  });

  it("builds a MySQL URL from Events DB's MYSQL_* variables", () => {
    const config = loadConfig({
      MYSQL_USER: "u",
      MYSQL_PASSWORD: "p@ss word",
      MYSQL_HOST: "db",
      MYSQL_PORT: "3307",
      MYSQL_DATABASE_NAME: "events",
    });
    expect(config.store.kind).toBe("mysql");
    const url = new URL((config.store as { url: string }).url);
    expect([url.hostname, url.port, url.username, decodeURIComponent(url.password), url.pathname]).toEqual([
      "db",
      "3307",
      "u",
      "p@ss word",
      "/events",
    ]);
  });

  it("prefers DATABASE_URL and parses both schemes", () => {
    expect(loadConfig({ DATABASE_URL: "sqlite:/tmp/x.db", MYSQL_HOST: "db" }).store).toEqual({
      kind: "sqlite",
      path: "/tmp/x.db",
    });
    expect(parseDatabaseUrl("sqlite:///var/e.db")).toEqual({ kind: "sqlite", path: "/var/e.db" });
    expect(parseDatabaseUrl("mysql://root@127.0.0.1:3306/e", 4)).toEqual({
      kind: "mysql",
      url: "mysql://root@127.0.0.1:3306/e",
      poolSize: 4,
    });
  });

  it.each([
    [{ REST_PORT: "http" }, {}, "REST_PORT must be a whole number"],
    [{}, { "rest-port": "70000" }, "--rest-port must be between 0 and 65535"],
    [{}, { "client-buffer-size": "0" }, "--client-buffer-size must be between 1"],
    [{}, { "max-event-bytes": String(16 * 1024 * 1024) }, "--max-event-bytes must be between 1 and 16777215"],
    [{ DATABASE_URL: "postgres://x/y" }, {}, "scheme postgres: is not supported"],
    [{ DATABASE_URL: "mysql://host" }, {}, "must name a database"],
    [{ MYSQL_PORT: "x" }, {}, "MYSQL_PORT must be a port number"],
    [{ LOG_LEVEL: "loud" }, {}, "LOG_LEVEL must be one of"],
    [{}, { "max-batch-events": "5", "write-queue-events": "4" }, "--max-batch-events must not exceed"],
    [
      {},
      { "write-queue-bytes": "1000", "max-event-bytes": "1001" },
      "--write-queue-bytes (1000) must be at least --max-event-bytes (1001)",
    ],
    // Each value named as the user gave it: the env twin when it came from the environment.
    [{ WRITE_QUEUE_BYTES: "65536" }, {}, "WRITE_QUEUE_BYTES (65536) must be at least --max-event-bytes"],
    [
      { MAX_BATCH_EVENTS: "5" },
      { "write-queue-events": "4" },
      "MAX_BATCH_EVENTS must not exceed --write-queue-events",
    ],
    [{ TRUST_PROXY: "2" }, {}, "TRUST_PROXY 2: hop counts are not supported"],
    [{}, { "client-buffer-bytes": "0" }, "--client-buffer-bytes must be between 1"],
    [{ PROTECT_METRICS: "maybe" }, {}, "PROTECT_METRICS must be true or false"],
    [{ TLS_CERT_FILE: "cert.pem" }, {}, "TLS needs both TLS_CERT_FILE and --tls-key-file"],
    [{}, { "tls-key-file": "key.pem" }, "TLS needs both --tls-cert-file and --tls-key-file"],
    [
      {},
      { "header-timeout": "30", "request-timeout": "20" },
      "--header-timeout must not exceed --request-timeout",
    ],
    [{ DB_TIMEOUT: "0" }, {}, "DB_TIMEOUT must be between 1 and 3600"],
  ])("rejects %j %j with one clear line", (env, flags, message) => {
    expect(() => loadConfig(env, flags)).toThrow(ConfigError);
    expect(() => loadConfig(env, flags)).toThrow(message);
  });

  it("reads the edge options: auth file, booleans, CORS origins, TLS files", () => {
    const config = loadConfig(
      {
        AUTH_FILE: "tokens.yaml",
        TLS_CERT_FILE: "c.pem",
        TLS_KEY_FILE: "k.pem",
        CORS_ORIGIN: "https://a, https://b",
      },
      { "protect-metrics": "true", "allow-query-token": "1" },
    );
    expect(config.auth).toMatchObject({ file: "tokens.yaml", protectMetrics: true, allowQueryToken: true });
    expect(config.corsOrigins).toEqual(["https://a", "https://b"]);
    expect(config.tls).toEqual({ certFile: "c.pem", keyFile: "k.pem", clientCaFile: undefined });
  });

  it("bounds connections and database calls by default, in milliseconds inside", () => {
    const config = loadConfig({}, {});
    expect(config.connections).toEqual({
      headerTimeoutMs: 20_000,
      requestTimeoutMs: 120_000,
      idleTimeoutMs: 65_000,
      maxConcurrentStreams: 100,
    });
    expect(config.dbTimeoutMs).toBe(5_000);
  });

  it("names every option once, each with an env twin", () => {
    const flags = SERVE_OPTIONS.map((o) => o.flag);
    expect(new Set(flags).size).toBe(flags.length);
    expect(flags).toEqual(
      expect.arrayContaining(["rest-port", "grpc-port", "client-buffer-size", "max-total-clients"]),
    );
  });
});
