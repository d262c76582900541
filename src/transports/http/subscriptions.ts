import type { FastifyInstance, FastifyRequest } from "fastify";
import { EventsDbError } from "../../errors.js";
import { parseJsonBody } from "../../events/json-body.js";
import type { SubscriptionService } from "../../subscriptions/service.js";

export interface SubscriptionRoutesDeps {
  readonly subscriptions: SubscriptionService;
}

/**
 * The CloudEvents Subscriptions API over HTTP (spec §3.3): `POST /subscriptions` (201 with
 * Location), `GET /subscriptions` (a JSON array), `GET`, `PUT`, `DELETE` (204)
 * `/subscriptions/{id}`, and this store's `POST /subscriptions/{id}/redrive` (optional body
 * `{"from": id | "now"}`). Thin: every rule is in SubscriptionService; the pipeline (pipeline.ts)
 * authenticates, throttles and logs, the error renderer answers failures. Registered in its own
 * scope: its body parser (JSON checked by parseJsonBody, as for events) stays here.
 */
export async function subscriptionRoutes(app: FastifyInstance, deps: SubscriptionRoutesDeps): Promise<void> {
  const { subscriptions } = deps;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_request, body, done) => done(null, body));

  app.post("/subscriptions", async (request, reply) => {
    const created = await subscriptions.create(request.principal, jsonBody(request));
    return reply
      .code(201)
      .header("location", `/subscriptions/${encodeURIComponent(created.id)}`)
      .send(created);
  });
  app.get("/subscriptions", async (request) => subscriptions.list(request.principal));
  app.get("/subscriptions/:id", async (request) => subscriptions.get(request.principal, idOf(request)));
  app.put("/subscriptions/:id", async (request) =>
    subscriptions.update(request.principal, idOf(request), jsonBody(request)),
  );
  app.delete("/subscriptions/:id", async (request, reply) => {
    await subscriptions.delete(request.principal, idOf(request));
    return reply.code(204).send();
  });
  app.post("/subscriptions/:id/redrive", async (request) => {
    const body = request.body instanceof Buffer && request.body.length > 0 ? jsonBody(request) : {};
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new EventsDbError("invalid_argument", 'the redrive body must be a JSON object like {"from": 42}');
    }
    return subscriptions.redrive(request.principal, idOf(request), (body as { from?: unknown }).from);
  });
}

function idOf(request: FastifyRequest): string {
  return (request.params as { id: string }).id;
}

/** The JSON body: application/json (or no Content-Type); anything else is a 415. */
function jsonBody(request: FastifyRequest): unknown {
  const type = (request.headers["content-type"] ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
  if (type !== "" && type !== "application/json") {
    throw new EventsDbError(
      "unsupported_media_type",
      `unsupported Content-Type ${JSON.stringify(type)}: a subscription is application/json`,
    );
  }
  return parseJsonBody(request.body instanceof Buffer ? request.body : Buffer.alloc(0));
}
