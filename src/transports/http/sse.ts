import type { ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import { invalidArgument } from "../../errors.js";
import type { StoredEvent } from "../../events/event.js";
import type { EventLog } from "../../events/event-log.js";
import { type JsonParts, simpleJsonParts, structuredJsonParts } from "../../events/formats.js";
import { secondsSincePublished } from "../../hub/hub.js";
import type { StreamPump } from "../stream-pump.js";
import { parseFilter, parseInteger, type Query, single } from "./query.js";

export interface SseOptions {
  readonly eventLog: EventLog;
  /** Opens streams, logs them, measures delivery lag, tells why they stopped. */
  readonly pump: StreamPump;
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
  const { eventLog, pump } = options;

  app.get("/events/stream", async (request, reply) => {
    const query = request.query as Query;
    let frames: FrameFormat = simpleFrames;
    const streamRequest = () => {
      const format = single(query.format, "format") ?? "simple";
      if (format !== "simple" && format !== "cloudevents") {
        throw invalidArgument("format must be simple or cloudevents");
      }
      frames = format === "cloudevents" ? cloudEventFrames : simpleFrames;
      // The browser sends Last-Event-ID on reconnect; it wins over the from_id of the original URL.
      const lastEventId = request.headers["last-event-id"];
      const fromId =
        typeof lastEventId === "string" && lastEventId.trim() !== ""
          ? parseInteger(lastEventId.trim(), "Last-Event-ID", 0)
          : parseInteger(query.from_id, "from_id", 0);
      // SSE may coalesce up to a whole buffer per write; batches only bound how much is held at once.
      return { filter: parseFilter(query), fromId, batchSize: options.clientBufferSize, address: request.ip };
    };
    if (request.method === "HEAD") {
      // What a GET would get, after the same checks and limits, without opening a stream.
      eventLog.checkStream(streamRequest(), request.principal);
      reply.hijack();
      reply.raw.writeHead(200, sseHeaders(reply.raw as ServerResponse));
      reply.raw.end();
      return;
    }
    const subscription = pump.open(streamRequest, request.principal);

    reply.hijack();
    const res = reply.raw as ServerResponse;
    const writer = new SseWriter(res, options.heartbeatIntervalSeconds);
    const onClose = () => subscription.close("client left");
    res.once("close", onClose);
    const stream = {
      subscription,
      raw: request.raw,
      log: request.log,
      caller: request.principal,
      transport: "sse",
    };
    try {
      writer.open();
      for await (const batch of pump.batches(stream)) {
        // Written before waiting: while a stalled client's socket holds the frames, nothing else
        // here holds them too.
        // The client is gone (or was dropped after --write-timeout): the pump says which.
        if (!(await writer.write(frames.chunks(batch)))) break;
      }
    } catch (error) {
      request.log.warn({ err: error }, "event stream failed");
    } finally {
      res.off("close", onClose);
      subscription.close(); // already closed, unless the stream failed before its first batch
      // EventSource cannot see why a stream ended; its reconnect gets the 401. Others read this.
      if (subscription.closeReason === "revoked") writer.comment(REVOKED_COMMENT);
      writer.end();
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

/** Events with this much data or more are framed in parts (see JsonParts) and not cached. */
export const LARGE_FRAME_BYTES = 64 * 1024;

/** One event's SSE frame: one string, or, for a large event, its parts in order. */
type Frame = string | readonly string[];

/** A batch's frames as the chunks to write: a Buffer for all of it, or strings. */
type Chunks = readonly (string | Buffer)[];

/** The last batch a format serialized ending at an event: its events, and their frames as bytes. */
interface SharedBatch {
  readonly events: readonly StoredEvent[];
  readonly bytes: Buffer;
}

/**
 * The frames of one data format. A live event is one object shared by every subscriber, so its
 * frame is built once and remembered, not built once per client (at 1000 clients that was a
 * seventh of the server's time); an event read from the store belongs to one stream and is not
 * remembered. A large event's frame stays in parts, so its data is not copied into one more
 * string per client. A line feed in the JSON (only possible inside JSON data kept as stored)
 * continues on another `data:` line; clients join them with LF (HTML §9.2.6), so the data
 * arrives byte for byte.
 *
 * The streams woken together for the same live events get the same batch: its frames are encoded
 * to bytes once and that one Buffer is written to every socket (remembered by the batch's last
 * event, for as long as that event lives), instead of each stream joining the frames into a string
 * of its own that its socket then encodes again — at 1000 clients that was 1000 copies of every
 * batch per wake-up, most of the young-generation garbage and so most of the GC pauses.
 */
export class FrameFormat {
  readonly #toParts: (event: StoredEvent) => JsonParts;
  readonly #frames = new WeakMap<StoredEvent, Frame>();
  readonly #batches = new WeakMap<StoredEvent, SharedBatch>();

  constructor(toParts: (event: StoredEvent) => JsonParts) {
    this.#toParts = toParts;
  }

  frame(event: StoredEvent): Frame {
    let frame = this.#frames.get(event);
    if (frame !== undefined) return frame;
    const { head, data, tail } = this.#toParts(event);
    const lines = data.includes("\n") ? data.replaceAll("\n", "\ndata: ") : data;
    frame =
      event.data.length >= LARGE_FRAME_BYTES
        ? [`id: ${event.id}\ndata: ${head}`, lines, `${tail}\n\n`]
        : `id: ${event.id}\ndata: ${head}${lines}${tail}\n\n`;
    if (secondsSincePublished(event) !== undefined) this.#frames.set(event, frame);
    return frame;
  }

  /** A batch's frames as the chunks to write: small frames joined, a large frame's parts as they are. */
  chunks(batch: readonly StoredEvent[]): Chunks {
    const last = batch.at(-1);
    if (last === undefined) return [];
    const shared = this.#batches.get(last);
    if (shared !== undefined && sameEvents(shared.events, batch)) return [shared.bytes];
    const chunks: string[] = [];
    let text = "";
    let live = true;
    for (const event of batch) {
      if (live && secondsSincePublished(event) === undefined) live = false;
      const next = this.frame(event);
      if (typeof next === "string") {
        text += next;
        continue;
      }
      if (text !== "") chunks.push(text);
      text = "";
      chunks.push(...next);
    }
    if (text !== "") chunks.push(text);
    // Live events of small frames only: a large event's data is not copied into one more buffer.
    if (!live || chunks.length !== 1) return chunks;
    const bytes = Buffer.from(chunks[0] as string, "utf8");
    this.#batches.set(last, { events: batch, bytes });
    return [bytes];
  }
}

/** Whether two batches hold the same event objects in the same order. */
function sameEvents(a: readonly StoredEvent[], b: readonly StoredEvent[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const simpleFrames = new FrameFormat(simpleJsonParts);
const cloudEventFrames = new FrameFormat((event) => structuredJsonParts(event, { carriageReturns: false }));

/**
 * Writes SSE text to one response with heartbeats and backpressure. A client that stays
 * unwritable for --write-timeout loses its response (Outbound), which ends the wait for 'drain'.
 */
class SseWriter {
  readonly #res: ServerResponse;
  readonly #heartbeatMs: number;
  #heartbeat: NodeJS.Timeout | undefined;
  /** When the last frame was written (performance.now()). */
  #lastWrite = 0;

  constructor(res: ServerResponse, heartbeatIntervalSeconds: number) {
    this.#res = res;
    this.#heartbeatMs = heartbeatIntervalSeconds * 1000;
  }

  /** Sends the headers and the `retry:` line at once, before any event. */
  open(): void {
    this.#res.writeHead(200, sseHeaders(this.#res));
    this.#res.write(`retry: ${RETRY_MS}\n\n`);
    this.#lastWrite = performance.now();
    this.#schedule(this.#heartbeatMs);
  }

  /**
   * Any write counts as a heartbeat: the timer, when it fires, sends one only if nothing was
   * written for a whole interval, else waits for the rest of it. A write only notes the time, so
   * a thousand streams written to 50 times a second do not move a thousand timers each time.
   */
  #schedule(ms: number): void {
    this.#heartbeat = setTimeout(() => {
      const quiet = performance.now() - this.#lastWrite;
      if (quiet < this.#heartbeatMs) {
        this.#schedule(this.#heartbeatMs - quiet);
        return;
      }
      this.#beat();
      this.#schedule(this.#heartbeatMs);
    }, ms);
    this.#heartbeat.unref();
  }

  /**
   * Writes the chunks at once; when the socket buffer is full, the promise waits for 'drain'
   * (holding nothing of what was written). False when the client is gone.
   */
  write(chunks: Chunks): Promise<boolean> {
    const res = this.#res;
    if (res.destroyed || res.writableEnded) return Promise.resolve(false);
    this.#lastWrite = performance.now();
    let writable = true;
    for (const chunk of chunks) writable = res.write(chunk);
    if (writable) return Promise.resolve(true);
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
    clearTimeout(this.#heartbeat);
    if (!this.#res.destroyed && !this.#res.writableEnded) this.#res.end();
  }
}
