import type { FastifyInstance } from "fastify";
import type { EventLog } from "../../events/event-log.js";
import type { Metrics } from "../../metrics.js";
import { version } from "../../version.js";

/** /healthz, /readyz and /metrics: open routes for orchestrators and Prometheus. */
export async function operationsRoutes(
  app: FastifyInstance,
  deps: { eventLog: EventLog; metrics: Metrics },
): Promise<void> {
  app.get("/healthz", async () => ({ status: "ok", version: version() }));

  app.get("/readyz", async (_request, reply) => {
    const readiness = await deps.eventLog.readiness();
    return reply.code(readiness.status === "ok" ? 200 : 503).send(readiness);
  });

  app.get("/metrics", async (_request, reply) => {
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });
}
