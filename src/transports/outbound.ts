import type { IncomingMessage, ServerResponse } from "node:http";
import { constants, type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from "node:http2";
import type { Socket } from "node:net";
import type { FastifyInstance } from "fastify";
import { EventsDbError } from "../errors.js";
import { eventSize, type StoredEvent } from "../events/event.js";
import { MAX_PAGE_LIMIT } from "../events/event-log.js";

type RawRequest = IncomingMessage | Http2ServerRequest;
type RawResponse = ServerResponse | Http2ServerResponse;

/** How often responses are checked against --write-timeout (one timer for all of them). */
export const WRITE_CHECK_MS = 500;

export interface OutboundOptions {
  /** --connection-buffer-bytes: response bytes one connection may have reserved and unsent. */
  readonly connectionBytes: number;
  /** --client-buffer-bytes: the byte budget of a page (at least one event). */
  readonly pageBytes: number;
  /** --max-event-bytes: the largest event data (a page of one event may hold that much). */
  readonly maxEventBytes: number;
  /** --write-timeout in milliseconds. */
  readonly writeTimeoutMs: number;
}

/** A reservation of response bytes on one connection, released when its response closes. */
export interface Hold {
  /** Corrects the reservation to the events read (fewer bytes let others in). */
  settle(events: readonly StoredEvent[]): void;
}

/** One connection: an HTTP/1.1 socket or an HTTP/2 session. */
interface Connection {
  /** Response bytes reserved by reads whose responses have not closed yet. */
  reserved: number;
  /** Reads waiting for room, in arrival order. */
  readonly waiting: Waiter[];
  /** Its responses in flight. */
  readonly responses: Set<Watched>;
}

interface Waiter {
  readonly bytes: number;
  /** Takes it off the queue and reserves its bytes. */
  readonly admit: () => void;
  /** Takes it off the queue and fails the read (the connection or response went away). */
  readonly fail: () => void;
}

/** A response in flight. */
interface Watched {
  readonly res: RawResponse;
  /** When it was first seen unwritable (waiting for 'drain') or ended but not yet flushed. */
  stuckSince: number | undefined;
}

/**
 * What one connection may hold unsent, and how long a response may stay unwritable.
 *
 * A client that sends requests and never reads the answers (HTTP/1.1 pipelining, or HTTP/2 with a
 * zero flow-control window) would otherwise make the server read and hold page after page. So:
 *
 * - Reads that answer many bytes (pages, events by id) reserve their size on their connection
 *   before they read anything, and hold it until their response is closed (flushed or dropped).
 *   Beyond --connection-buffer-bytes a read waits until earlier answers have left; one read is
 *   always let through, so a single large answer never waits for itself.
 * - Every response (streams included) that stays unwritable — waiting for 'drain', or ended and
 *   not flushed — for --write-timeout is dropped (HTTP/2: RST_STREAM; HTTP/1.1: the socket),
 *   which frees what it held. This is the one write timeout of the app: SSE and gRPC streams ask
 *   `timedOut` why their response went away.
 */
export class Outbound {
  readonly #options: OutboundOptions;
  readonly #connections = new WeakMap<Socket | Http2Session, Connection>();
  /** Connections with responses in flight (what the timer looks at). */
  readonly #busy = new Set<Connection>();
  readonly #responses = new WeakMap<RawRequest, RawResponse>();
  readonly #timedOut = new WeakSet<RawResponse>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: OutboundOptions) {
    this.#options = options;
  }

  /** Hooks every request of the app: its response is watched from the start. */
  install(app: FastifyInstance): void {
    app.addHook("onRequest", async (request, reply) => {
      this.watch(request.raw, reply.raw);
    });
    app.addHook("onClose", async () => {
      clearInterval(this.#timer);
      this.#timer = undefined;
    });
  }

  /** Watches a response against --write-timeout until it (or its connection) closes. */
  watch(req: RawRequest, res: RawResponse): void {
    const conn = this.#connection(req);
    if (conn === undefined) return;
    this.#responses.set(req, res);
    const watched: Watched = { res, stuckSince: undefined };
    conn.responses.add(watched);
    this.#busy.add(conn);
    const onDrain = () => {
      watched.stuckSince = undefined;
    };
    res.on("drain", onDrain);
    // A pipelined HTTP/1.1 response still queued behind another never closes by itself; its
    // connection's close (below) forgets it.
    res.once("close", () => {
      res.off("drain", onDrain);
      conn.responses.delete(watched);
      if (conn.responses.size === 0) this.#busy.delete(conn);
    });
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#check(), WRITE_CHECK_MS);
      this.#timer.unref();
    }
  }

  /** Whether the response of this request was dropped for staying unwritable. */
  timedOut(req: RawRequest | undefined): boolean {
    const res = req === undefined ? undefined : this.#responses.get(req);
    return res !== undefined && this.#timedOut.has(res);
  }

  /**
   * Reads a page (or one event) under a reservation of the answer's room on `req`'s connection
   * (see reserveRead), settled to what was read: the one way every transport reads. Without a
   * request (a caller outside HTTP) the read is not reserved.
   */
  async readReserved<P extends { readonly events: readonly StoredEvent[] }>(
    req: RawRequest | undefined,
    limit: number,
    read: () => Promise<P>,
  ): Promise<P> {
    const hold = req === undefined ? undefined : await this.reserveRead(req, limit);
    const page = await read();
    hold?.settle(page.events);
    return page;
  }

  /**
   * Reserves the answer of a read of up to `limit` events on the request's connection (the most
   * a page may take, until `settle` says what it took); waits while the connection holds
   * --connection-buffer-bytes of answers not yet sent, at most --write-timeout (then the response
   * is dropped and this throws). Released when the response closes.
   */
  reserveRead(req: RawRequest, limit: number): Promise<Hold> {
    const largest = Math.max(this.#options.pageBytes, this.#options.maxEventBytes);
    // Before the store has checked `limit`: a bad one is answered with 400 anyway.
    const events = Math.min(Math.max(1, limit), MAX_PAGE_LIMIT);
    return this.#reserve(req, Math.ceil((largest * 4) / 3) + events * PER_EVENT_BYTES);
  }

  async #reserve(req: RawRequest, bytes: number): Promise<Hold> {
    const res = this.#responses.get(req);
    const conn = this.#connection(req);
    if (res === undefined || conn === undefined || isGone(res)) throw notReading();
    if (conn.waiting.length === 0 && this.#fits(conn, bytes)) return this.#hold(conn, res, bytes);
    return new Promise<Hold>((resolve, reject) => {
      const stop = () => {
        clearTimeout(timer);
        res.off("close", waiter.fail);
        const at = conn.waiting.indexOf(waiter);
        if (at !== -1) conn.waiting.splice(at, 1);
      };
      const waiter: Waiter = {
        bytes,
        admit: () => {
          stop();
          resolve(this.#hold(conn, res, bytes));
        },
        fail: () => {
          stop();
          reject(notReading());
          this.#admit(conn);
        },
      };
      const timer = setTimeout(() => {
        this.#timedOut.add(res);
        cut(res);
        waiter.fail();
      }, this.#options.writeTimeoutMs);
      res.once("close", waiter.fail);
      conn.waiting.push(waiter);
    });
  }

  /** The state of the request's connection, made on its first request. */
  #connection(req: RawRequest): Connection | undefined {
    // The HTTP/2 session, or the HTTP/1.1 socket.
    const key = "stream" in req ? req.stream.session : req.socket;
    if (key === undefined) return undefined;
    let conn = this.#connections.get(key);
    if (conn === undefined) {
      const created: Connection = { reserved: 0, waiting: [], responses: new Set() };
      key.once("close", () => {
        for (const waiter of [...created.waiting]) waiter.fail();
        // Node closes only the response that holds the socket; those queued behind it (HTTP/1.1
        // pipelining) would never emit 'close', which says "completed, or its connection was
        // terminated" (node:http), and whoever counts requests in flight would wait for them.
        for (const { res } of created.responses)
          if (!("stream" in res) && res.socket === null) res.emit("close");
        created.responses.clear();
        this.#busy.delete(created);
      });
      this.#connections.set(key, created);
      conn = created;
    }
    return conn;
  }

  /** Reserves `bytes` on the connection until the response closes. */
  #hold(conn: Connection, res: RawResponse, bytes: number): Hold {
    let held = bytes;
    conn.reserved += held;
    res.once("close", () => {
      conn.reserved -= held;
      held = 0;
      this.#admit(conn);
    });
    return {
      settle: (events) => {
        if (held === 0) return; // already released
        const size = responseBytes(events);
        conn.reserved += size - held;
        held = size;
        this.#admit(conn);
      },
    };
  }

  #fits(conn: Connection, bytes: number): boolean {
    return conn.reserved === 0 || conn.reserved + bytes <= this.#options.connectionBytes;
  }

  /** Lets waiting reads in, in order, while they fit. */
  #admit(conn: Connection): void {
    for (;;) {
      const next = conn.waiting[0];
      if (next === undefined || !this.#fits(conn, next.bytes)) return;
      next.admit();
    }
  }

  /** Drops responses that stayed unwritable for --write-timeout. */
  #check(): void {
    const now = performance.now();
    for (const conn of this.#busy) {
      for (const watched of conn.responses) {
        const { res } = watched;
        const stuck = res.writableEnded ? !res.writableFinished : needsDrain(res);
        if (!stuck || isGone(res)) {
          watched.stuckSince = undefined;
          continue;
        }
        watched.stuckSince ??= now;
        if (now - watched.stuckSince >= this.#options.writeTimeoutMs) {
          conn.responses.delete(watched);
          this.#timedOut.add(res);
          cut(res);
        }
      }
      if (conn.responses.size === 0) this.#busy.delete(conn);
    }
    if (this.#busy.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

/** Response bytes per event beside its data: attributes, JSON or protobuf framing. */
const PER_EVENT_BYTES = 512;

/** About the bytes events take in a response (data as base64 in JSON; protobuf takes less). */
function responseBytes(events: readonly StoredEvent[]): number {
  let bytes = 64;
  for (const event of events) bytes += Math.ceil((eventSize(event) * 4) / 3) + PER_EVENT_BYTES;
  return bytes;
}

/** A read dropped because its connection does not take its answers: the client's doing, not a 5xx. */
function notReading(): EventsDbError {
  return new EventsDbError(
    "too_many_requests",
    "this connection does not read its answers (--connection-buffer-bytes, --write-timeout); this one was dropped",
  );
}

/**
 * Drops a response: HTTP/2 cancels its stream (RST_STREAM CANCEL, "no longer needed", RFC 9113
 * §7; gRPC clients see CANCELLED); HTTP/1.1 has no other way than closing the connection.
 */
function cut(res: RawResponse): void {
  if ("stream" in res) res.stream.close(constants.NGHTTP2_CANCEL);
  else res.destroy();
}

function isGone(res: RawResponse): boolean {
  return "stream" in res ? res.stream.destroyed : res.destroyed;
}

function needsDrain(res: RawResponse): boolean {
  return "stream" in res ? res.stream.writableNeedDrain : res.writableNeedDrain;
}
