import { Code, ConnectError, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import type { Readiness } from "../../events/event-log.js";
import { EventsDB } from "../../gen/grpc/eventsdb_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../gen/grpc/health/v1/health_pb.js";

/** How often a Watch re-probes readiness; the store has no push notification for its health. */
export const WATCH_POLL_MS = 1_000;

/**
 * The names Health answers for: "" (the whole server, by convention of the health protocol) and
 * grpc.EventsDB. Both depend on the same store and writer, so they share one status.
 */
export const HEALTH_SERVICE_NAMES: readonly string[] = ["", EventsDB.typeName];

export interface HealthOptions {
  readonly pollMs?: number;
}

/** Registers grpc.health.v1.Health on the router (see healthService). */
export function healthRoutes(router: ConnectRouter, readiness: () => Promise<Readiness>): void {
  router.service(Health, healthService(readiness));
}

/**
 * grpc.health.v1.Health on top of the readiness probe that /readyz uses, so load balancers and
 * Kubernetes gRPC probes see the same verdict as HTTP ones. Takes the probe as a function so
 * NOT_SERVING can be tested without breaking a real database.
 */
export function healthService(
  readiness: () => Promise<Readiness>,
  options: HealthOptions = {},
): ServiceImpl<typeof Health> {
  const pollMs = options.pollMs ?? WATCH_POLL_MS;
  const known = (service: string) => HEALTH_SERVICE_NAMES.includes(service);

  // A probe that throws is a store we cannot vouch for: NOT_SERVING, not an RPC error, so health
  // checkers get an answer they understand.
  const currentStatus = async (): Promise<ServingStatus> => {
    try {
      return (await readiness()).status === "ok" ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    } catch {
      return ServingStatus.NOT_SERVING;
    }
  };

  return {
    async check(request) {
      if (!known(request.service))
        throw new ConnectError(`unknown service ${JSON.stringify(request.service)}`, Code.NotFound);
      return { status: await currentStatus() };
    },

    // Each watcher polls on its own: watchers are few (proxies, not users) and a probe is one
    // cheap query, so a shared poller would add state for little gain.
    async *watch(request, context) {
      const { signal } = context;
      if (!known(request.service)) {
        // The spec keeps the call open on SERVICE_UNKNOWN, since the service could appear later.
        // Ours are fixed, so nothing more will be sent; wait for the client to leave.
        yield { status: ServingStatus.SERVICE_UNKNOWN };
        await sleep(Number.POSITIVE_INFINITY, signal);
        return;
      }
      let last: ServingStatus | undefined;
      while (!signal.aborted) {
        const status = await currentStatus();
        if (status !== last && !signal.aborted) {
          last = status;
          yield { status };
        }
        await sleep(pollMs, signal);
      }
    },

    async list() {
      const status = await currentStatus();
      return {
        statuses: Object.fromEntries(HEALTH_SERVICE_NAMES.map((name) => [name, { status }])),
      };
    },
  };
}

/** Resolves after `ms`, or as soon as `signal` aborts (never rejects: an abort is a normal end). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
    signal.addEventListener("abort", done, { once: true });
  });
}
