import { type Config, loadConfig } from "../../src/config.js";
import { EventStore } from "../../src/events/store.js";
import { Metrics } from "../../src/metrics.js";
import { type RunningServer, startServer } from "../../src/server.js";

/** A configuration for tests: loopback, ephemeral ports, the given store and flags. */
export function testConfig(databaseUrl: string, flags: Record<string, string> = {}): Config {
  return loadConfig(
    {},
    { "database-url": databaseUrl, "rest-port": "0", "grpc-port": "0", host: "127.0.0.1", ...flags },
  );
}

export interface TestServer {
  readonly server: RunningServer;
  /** `http://127.0.0.1:<restPort>` */
  readonly url: string;
  readonly grpcUrl: string;
  close(): Promise<void>;
}

/** The real server on port 0; close it in afterAll/afterEach. */
export async function startTestServer(
  databaseUrl: string,
  flags: Record<string, string> = {},
): Promise<TestServer> {
  const server = await startServer(testConfig(databaseUrl, flags), { logger: false, defaultMetrics: false });
  return {
    server,
    url: `http://127.0.0.1:${server.restPort}`,
    grpcUrl: `http://127.0.0.1:${server.grpcPort}`,
    close: () => server.close(),
  };
}

/** An EventStore without HTTP, for storage-level tests (one per simulated process). */
export async function openTestStore(
  databaseUrl: string,
  flags: Record<string, string> = {},
): Promise<{ store: EventStore; metrics: Metrics }> {
  const metrics = new Metrics({ defaultMetrics: false });
  const store = await EventStore.open(testConfig(databaseUrl, flags), metrics);
  return { store, metrics };
}
