import type { FastifyInstance } from "fastify";
import { SIGNING_KEY_ROUTE } from "../../auth/credentials.js";
import { EventsDbError } from "../../errors.js";
import { linkToJson } from "../../events/chain.js";
import { DEFAULT_PAGE_LIMIT, type EventLog } from "../../events/event-log.js";
import type { Metrics } from "../../metrics.js";
import type { Outbound } from "../outbound.js";
import { parseInteger, type Query } from "./query.js";

export interface ChainRoutesDeps {
  readonly eventLog: EventLog;
  readonly metrics: Metrics;
  readonly outbound: Outbound;
}

/**
 * The tamper-evident log over HTTP: `GET /events/chain`, pages of links (tombstones included) as
 * {@link linkToJson} writes them, for verifiers; and the public key that verifies the events'
 * signatures. Both pass the pipeline like every route (pipeline.ts); the key needs no credential
 * (auth/credentials.ts), the chain a token that may read every subject (EventLog.chain).
 */
export async function chainRoutes(app: FastifyInstance, deps: ChainRoutesDeps): Promise<void> {
  const { eventLog, metrics, outbound } = deps;

  app.get("/events/chain", async (request) => {
    const query = request.query as Query;
    const page = await metrics.observe("read_chain", async () => {
      const chainQuery = {
        fromId: parseInteger(query.from_id, "from_id", 0),
        limit: parseInteger(query.limit, "limit", DEFAULT_PAGE_LIMIT),
      };
      // Reserved before the read, as GET /events: a connection that does not read gets no more.
      return outbound.readReserved(request.raw, chainQuery.limit, () =>
        eventLog.chain(chainQuery, request.principal),
      );
    });
    return { links: page.events.map(linkToJson), next_from_id: page.nextFromId, has_more: page.hasMore };
  });

  app.get(SIGNING_KEY_ROUTE, async (_request, reply) => {
    const pem = eventLog.signer?.publicKeyPem;
    if (pem === undefined) {
      throw new EventsDbError("not_found", "this server does not sign events (no --signing-key-file)");
    }
    return reply.type("application/x-pem-file").header("cache-control", "no-cache").send(pem);
  });
}
