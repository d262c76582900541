import { afterEach } from "vitest";
import { type Config, loadConfig } from "../../src/config.js";
import { EventLog } from "../../src/events/event-log.js";
import { Metrics } from "../../src/metrics.js";
import { type RunningServer, startServer } from "../../src/server.js";

/** The flags of a test server: loopback, ephemeral ports, the given store. */
export function testFlags(databaseUrl: string): Record<string, string> {
  return { "database-url": databaseUrl, "rest-port": "0", "grpc-port": "0", host: "127.0.0.1" };
}

/** A configuration for tests: loopback, ephemeral ports, the given store and flags. */
export function testConfig(
  databaseUrl: string,
  flags: Record<string, string> = {},
  env: Record<string, string> = {},
): Config {
  return loadConfig(env, { ...testFlags(databaseUrl), ...flags });
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

/**
 * Servers for the tests of one describe block, all closed after each test: first what the test
 * registered with `onCleanup` (last first: streams before the clients they run on), then the
 * servers. `blockFlags` go to every server of the block, under the flags of each `start`.
 */
export function serversPerTest(
  databaseUrl: () => string | Promise<string>,
  blockFlags: Readonly<Record<string, string>> = {},
) {
  const servers: TestServer[] = [];
  const cleanups: (() => void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) cleanup();
    await Promise.all(servers.splice(0).map((t) => t.close()));
  });
  return {
    start: async (flags: Record<string, string> = {}): Promise<TestServer> => {
      const t = await startTestServer(await databaseUrl(), { ...blockFlags, ...flags });
      servers.push(t);
      return t;
    },
    onCleanup: (...cleanup: (() => void)[]): void => {
      cleanups.push(...cleanup);
    },
  };
}

/** An EventLog without HTTP, for storage-level tests (one per simulated process). */
export async function openTestStore(
  databaseUrl: string,
  flags: Record<string, string> = {},
): Promise<{ store: EventLog; metrics: Metrics }> {
  const metrics = new Metrics({ defaultMetrics: false });
  const store = await EventLog.open(testConfig(databaseUrl, flags), metrics);
  return { store, metrics };
}
