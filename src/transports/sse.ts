import type { ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import { invalidArgument } from "../errors.js";
import type { StoredEvent } from "../events/event.js";
import { toSimpleJson, toStructuredJson } from "../events/formats.js";
import type { EventStore } from "../events/store.js";
import { secondsSincePublished } from "../hub/hub.js";
import type { Subscription } from "../hub/subscription.js";
import type { Metrics } from "../metrics.js";
import type { Outbound } from "./outbound.js";
import { parseFilter, parseInteger, type Query, single } from "./query.js";

export interface SseOptions {
  readonly store: EventStore;
  readonly metrics: Metrics;
  /** Drops a response that stays unwritable for --write-timeout. */
  readonly outbound: Outbound;
  readonly heartbeatIntervalSeconds: number;
  readonly clientBufferSize: number;
}

/** Reconnection delay the browser should use (HTML §9.2 `retry:`), in milliseconds. */
export const RETRY_MS = 2000;

/**
 * `GET /events/stream`: Server-Sent Events (HTML Living Standard §9.2).
 *
 * Frames are written to the raw response after `reply.hijack()` rather than with @fastify/sse:
 * this route needs the socket's own backpressure (write only while it is writable, wait for
 * 'drain', several frames coalesced into one write), headers flushed before
 * the first event, and ids written as they are (0 included); @fastify/sse 0.6 hides the first
 * two and drops id 0.
 */
export async function sseRoutes(app: FastifyInstance, options: SseOptions): Promise<void> {
  const { store, metrics } = options;

  app.get("/events/stream", async (request, reply) => {
    const query = request.query as Query;
    let subscription: Subscription;
    let frame: (event: StoredEvent) => string;
    try {
      const format = single(query.format, "format") ?? "simple";
      if (format !== "simple" && format !== "cloudevents") {
        throw invalidArgument("format must be simple or cloudevents");
      }
      frame = format === "cloudevents" ? cloudEventFrame : simpleFrame;
      // The browser sends Last-Event-ID on reconnect; it wins over the from_id of the original URL.
      const lastEventId = request.headers["last-event-id"];
      const fromId =
        typeof lastEventId === "string" && lastEventId.trim() !== ""
          ? parseInteger(lastEventId.trim(), "Last-Event-ID", 0)
          : parseInteger(query.from_id, "from_id", 0);
      // SSE may coalesce up to a whole buffer per write; batches only bound how much is held at once.
      const stream = {
        filter: parseFilter(query),
        fromId,
        batchSize: options.clientBufferSize,
        address: request.ip,
      };
      if (request.method === "HEAD") {
        // What a GET would get, after the same checks and limits, without opening a stream.
        store.checkStream(stream, request.principal);
        reply.hijack();
        reply.raw.writeHead(200, sseHeaders(reply.raw as ServerResponse));
        reply.raw.end();
        return;
      }
      subscription = store.subscribe(stream, request.principal);
      metrics.operations.inc({ operation: "stream_events", status: "success" });
    } catch (error) {
      if (request.method !== "HEAD") metrics.operations.inc({ operation: "stream_events", status: "error" });
      throw error;
    }

    reply.hijack();
    const res = reply.raw as ServerResponse;
    const stream = new SseWriter(res, options.heartbeatIntervalSeconds);
    const onClose = () => subscription.close("client left");
    res.once("close", onClose);
    const { subjects, recursive, type } = subscription.filter;
    request.log.info(
      { subjects, recursive, type, fromId: subscription.cursor, caller: request.principal.name },
      "stream opened",
    );
    try {
      stream.open();
      for await (const batch of subscription) {
        let text = "";
        for (const event of batch) text += frame(event);
        if (!(await stream.write(text))) {
          subscription.close(options.outbound.timedOut(request.raw) ? "write timeout" : "client left");
          break;
        }
        const lag = secondsSincePublished(batch.at(-1) as StoredEvent);
        if (lag !== undefined) metrics.deliveryLag.observe(lag);
      }
    } catch (error) {
      subscription.close("error");
      request.log.warn({ err: error }, "event stream failed");
    } finally {
      res.off("close", onClose);
      subscription.close();
      // EventSource cannot see why a stream ended; its reconnect gets the 401. Others read this.
      if (subscription.closeReason === "revoked") stream.comment(REVOKED_COMMENT);
      stream.end();
      request.log.info({ reason: subscription.closeReason, lastId: subscription.cursor }, "stream closed");
    }
  });
}

/** The last line of a stream whose credential stopped being valid (removed, changed, expired). */
export const REVOKED_COMMENT = "closed: the credential is no longer valid (revoked or expired)";

/** The response headers of a stream (and of HEAD on its route). */
function sseHeaders(res: ServerResponse): Record<string, string> {
  const headers: Record<string, string> = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    // nginx buffers proxied responses unless told not to; SSE must not be buffered.
    "x-accel-buffering": "no",
  };
  // Connection-specific headers are forbidden in HTTP/2 (RFC 9113 §8.2.2).
  if (res.req.httpVersionMajor === 1) headers.connection = "keep-alive";
  return headers;
}

/**
 * A frame builder for one data format that remembers each event's frame: a live event is one
 * object shared by every subscriber, so its frame is built once, not once per client (at 1000
 * clients that was a seventh of the server's time). A line feed in the JSON (only possible inside
 * JSON data kept as stored) continues on another `data:` line; clients join them with LF (HTML
 * §9.2.6), so the data arrives byte for byte.
 */
function cachedFrames(toJson: (event: StoredEvent) => string): (event: StoredEvent) => string {
  const frames = new WeakMap<StoredEvent, string>();
  return (event) => {
    let frame = frames.get(event);
    if (frame === undefined) {
      const json = toJson(event);
      frame = `id: ${event.id}\ndata: ${json.includes("\n") ? json.replaceAll("\n", "\ndata: ") : json}\n\n`;
      frames.set(event, frame);
    }
    return frame;
  };
}

const simpleFrame = cachedFrames((event) => JSON.stringify(toSimpleJson(event)));
const cloudEventFrame = cachedFrames((event) => toStructuredJson(event, { carriageReturns: false }));

/**
 * Writes SSE text to one response with heartbeats and backpressure. A client that stays
 * unwritable for --write-timeout loses its response (Outbound), which ends the wait for 'drain'.
 */
class SseWriter {
  readonly #res: ServerResponse;
  readonly #heartbeatMs: number;
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(res: ServerResponse, heartbeatIntervalSeconds: number) {
    this.#res = res;
    this.#heartbeatMs = heartbeatIntervalSeconds * 1000;
  }

  /** Sends the headers and the `retry:` line at once, before any event. */
  open(): void {
    this.#res.writeHead(200, sseHeaders(this.#res));
    this.#res.write(`retry: ${RETRY_MS}\n\n`);
    this.#heartbeat = setInterval(() => this.#beat(), this.#heartbeatMs);
    this.#heartbeat.unref();
  }

  /** Writes text; when the socket buffer is full, waits for 'drain'. False when the client is gone. */
  async write(text: string): Promise<boolean> {
    const res = this.#res;
    if (res.destroyed || res.writableEnded) return false;
    this.#heartbeat?.refresh(); // any write counts as a heartbeat
    if (res.write(text)) return true;
    return new Promise<boolean>((resolve) => {
      const finish = (ok: boolean) => {
        res.off("drain", onDrain);
        res.off("close", onClose);
        resolve(ok);
      };
      const onDrain = () => finish(true);
      const onClose = () => finish(false);
      res.on("drain", onDrain);
      res.on("close", onClose);
    });
  }

  /** A comment line keeps proxies and the browser from timing the connection out. */
  #beat(): void {
    this.comment("heartbeat");
  }

  /** A comment line (HTML §9.2.6: ignored by EventSource), unless the client is not reading. */
  comment(text: string): void {
    const res = this.#res;
    if (res.destroyed || res.writableEnded || res.writableNeedDrain) return;
    res.write(`: ${text}\n\n`);
  }

  end(): void {
    clearInterval(this.#heartbeat);
    if (!this.#res.destroyed && !this.#res.writableEnded) this.#res.end();
  }
}
