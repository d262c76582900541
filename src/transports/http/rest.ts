import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { EventsDbError, invalidArgument } from "../../errors.js";
import type { NewEvent, StoredEvent } from "../../events/event.js";
import { DEFAULT_PAGE_LIMIT, type EventLog } from "../../events/event-log.js";
import {
  fromBinary,
  fromJsonEvent,
  fromStructured,
  toSimpleJson,
  toStructuredJson,
} from "../../events/formats.js";
import { parseJsonBody } from "../../events/json-body.js";
import { arrayElements, type Span } from "../../events/json-text.js";
import { type AppendDeps, append } from "../append.js";
import type { Outbound } from "../outbound.js";
import { PRECONDITIONS_HEADER, parsePreconditionsHeader } from "./preconditions.js";
import { parseFilter, parseId, parseInteger, type Query, single } from "./query.js";

export interface RestDeps extends AppendDeps {
  readonly outbound: Outbound;
}

const CE_JSON = "application/cloudevents+json";
const CE_BATCH = "application/cloudevents-batch+json";
/** Content types read as the JSON of the simple format; curl -d sends form-urlencoded (compat). */
const JSON_LIKE = new Set(["", "application/json", "application/x-www-form-urlencoded", "text/plain"]);

/**
 * The REST surface: Events DB's paths unchanged, plus the CloudEvents HTTP content
 * modes, keyset pages, delete and subjects. Registered in its own scope: its catch-all body parser
 * (raw bytes, the mode is chosen per request) must not leak into other transports.
 */
export async function restRoutes(app: FastifyInstance, deps: RestDeps): Promise<void> {
  const { eventLog, metrics, outbound } = deps;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_request, body, done) => done(null, body));

  app.post("/events", async (request) => {
    const { batch, parse } = createMode(request, eventLog);
    return append(deps, {
      batch,
      principal: request.principal,
      decode: () => ({
        events: parse(),
        preconditions: parsePreconditionsHeader(request.headers[PRECONDITIONS_HEADER]),
      }),
      encode: (ids) => (batch ? { ids } : { id: ids[0] }),
    });
  });

  const getOne = async (rawId: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const event = await metrics.observe("get_event", async () => {
      const id = parseId(rawId, "id");
      const { events } = await outbound.readReserved(request.raw, 1, async () => ({
        events: [await eventLog.get(id, request.principal)],
      }));
      return events[0] as StoredEvent;
    });
    if (accepts(request, CE_JSON)) {
      return reply.type(CE_JSON).send(toStructuredJson(event));
    }
    return toSimpleJson(event);
  };
  app.get("/events/get", (request, reply) => getOne((request.query as Query).id, request, reply));
  app.get("/events/:id", (request, reply) => getOne((request.params as { id: string }).id, request, reply));

  app.get("/events", async (request, reply) => {
    const query = request.query as Query;
    const page = await metrics.observe("historic_events", async () => {
      const pageQuery = {
        ...parseFilter(query),
        fromId: parseInteger(query.from_id, "from_id", 0),
        limit: parseInteger(query.limit, "limit", DEFAULT_PAGE_LIMIT),
      };
      // Reserved before the read: a connection that does not read its answers gets no more.
      return outbound.readReserved(request.raw, pageQuery.limit, () =>
        eventLog.page(pageQuery, request.principal),
      );
    });
    if (accepts(request, CE_BATCH)) {
      return reply
        .type(CE_BATCH)
        .header("x-has-more", String(page.hasMore))
        .header("x-next-from-id", String(page.nextFromId))
        .send(`[${page.events.map((event) => toStructuredJson(event)).join(",")}]`);
    }
    return { events: page.events.map(toSimpleJson), has_more: page.hasMore, next_from_id: page.nextFromId };
  });

  app.delete("/events", async (request) => {
    const query = request.query as Query;
    const deleted = await metrics.observe("delete_events", () =>
      eventLog.delete(parseFilter(query), parseInteger(query.from_id, "from_id", 0), request.principal),
    );
    return { deleted };
  });

  // The body stays the Go service's JSON array; paging rides in the query and headers (as the
  // events' batch pages do), so old clients that send neither `limit` nor `after` see no change.
  app.get("/subjects", async (request, reply) => {
    const query = request.query as Query;
    const page = await metrics.observe("list_subjects", () => {
      const limit = single(query.limit, "limit");
      return eventLog.subjectPage(
        {
          prefix: single(query.prefix, "prefix") ?? "",
          after: single(query.after, "after") ?? "",
          limit: limit === undefined ? undefined : parseInteger(limit, "limit", 0),
        },
        request.principal,
      );
    });
    return reply
      .header("x-has-more", String(page.hasMore))
      .header("x-next-after", encodeURIComponent(page.nextAfter))
      .send(page.subjects);
  });
}

/**
 * Picks the CloudEvents HTTP content mode (binding §3): structured and batched by Content-Type,
 * binary by the ce-specversion header, otherwise the JSON of the simple format (an array = batch).
 * `parse` runs inside the metrics-observed operation, so bad input counts as an error.
 */
function createMode(
  request: FastifyRequest,
  eventLog: EventLog,
): { batch: boolean; parse: () => NewEvent[] } {
  const contentType = mediaType(request.headers["content-type"]);
  const body = request.body instanceof Buffer ? request.body : Buffer.alloc(0);
  const limits = eventLog.limits;
  // Readers get each event's JSON value and its text in the body (JSON data is kept as sent).
  const one = (read: (item: unknown, text: Buffer, where: string) => NewEvent) => () => [
    read(parseJsonBody(body), body, ""),
  ];
  const batchOf = (read: (item: unknown, text: Buffer, where: string) => NewEvent, kind: string) => () => {
    const items = parseJsonBody(body);
    if (!Array.isArray(items)) throw invalidArgument(`${kind} must be a JSON array of events`);
    const texts = arrayElements(body);
    return items.map((item, i) => {
      const span = texts[i] as Span;
      return read(item, body.subarray(span.start, span.end), `event ${i}`);
    });
  };
  const structured = (item: unknown, text: Buffer, at: string) => fromStructured(item, text, limits, at);
  const either = (item: unknown, text: Buffer, at: string) => fromJsonEvent(item, text, limits, at);

  if (contentType === CE_JSON) return { batch: false, parse: one(structured) };
  if (contentType === CE_BATCH) return { batch: true, parse: batchOf(structured, CE_BATCH) };
  if (request.headers["ce-specversion"] !== undefined) {
    return { batch: false, parse: () => [fromBinary(request.headers, body, limits)] };
  }
  if (JSON_LIKE.has(contentType)) {
    return startsWithBracket(body)
      ? { batch: true, parse: batchOf(either, "a batch") }
      : { batch: false, parse: one(either) };
  }
  return {
    batch: false,
    parse: () => {
      throw new EventsDbError(
        "unsupported_media_type",
        `unsupported Content-Type ${JSON.stringify(contentType)}: send application/json, ${CE_JSON}, ${CE_BATCH}, ` +
          "or binary mode (ce-specversion, ce-id, ce-source, ce-type, ce-subject headers)",
      );
    },
  };
}

function startsWithBracket(body: Buffer): boolean {
  for (const byte of body) {
    if (byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d) continue;
    return byte === 0x5b; // [
  }
  return false;
}

function mediaType(header: string | undefined): string {
  if (header === undefined) return "";
  const semi = header.indexOf(";");
  return (semi === -1 ? header : header.slice(0, semi)).trim().toLowerCase();
}

/** True when the Accept header names the media type (with a non-zero q). */
function accepts(request: FastifyRequest, type: string): boolean {
  const accept = request.headers.accept;
  if (accept === undefined) return false;
  return accept.split(",").some((part) => {
    const [media, ...params] = part.split(";").map((s) => s.trim().toLowerCase());
    return media === type && !params.some((p) => /^q=0(\.0*)?$/.test(p));
  });
}
