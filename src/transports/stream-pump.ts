import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { Principal } from "../auth/tokens.js";
import type { StoredEvent } from "../events/event.js";
import type { EventLog, StreamRequest } from "../events/event-log.js";
import { secondsSincePublished } from "../hub/hub.js";
import type { Subscription } from "../hub/subscription.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Outbound } from "./outbound.js";

type RawRequest = IncomingMessage | Http2ServerRequest;

export interface StreamPumpDeps {
  readonly eventLog: EventLog;
  readonly metrics: Metrics;
  /** Drops a response that stays unwritable for --write-timeout; says whether it did. */
  readonly outbound: Outbound;
}

/** One open stream as the pump sees it. */
export interface PumpedStream {
  readonly subscription: Subscription;
  /** The request under it: whether --write-timeout dropped its response. */
  readonly raw: RawRequest | undefined;
  readonly log: Logger;
  readonly caller: Principal;
  /** The transport, for the log lines: "sse" or "grpc" (gRPC, gRPC-Web and Connect). */
  readonly transport: string;
}

/**
 * The one stream pump of every streaming transport (SSE, and Connect/gRPC/gRPC-Web server
 * streams): it opens the subscription (counted as stream_events, refusals included), says
 * "stream opened" and "stream closed" with the close reason, measures the delivery lag of live
 * events and decides why a stream whose writes stopped ended (--write-timeout or the client).
 * A transport only frames the batches and writes them.
 */
export class StreamPump {
  readonly #deps: StreamPumpDeps;

  constructor(deps: StreamPumpDeps) {
    this.#deps = deps;
  }

  /**
   * Subscribes, after `request()` has read the stream's parameters; a bad parameter or a refusal
   * (limits, scopes) is counted as a failed stream_events and thrown.
   */
  open(request: () => StreamRequest, principal: Principal): Subscription {
    const { eventLog, metrics } = this.#deps;
    try {
      const subscription = eventLog.subscribe(request(), principal);
      metrics.operations.inc({ operation: "stream_events", status: "success" });
      return subscription;
    } catch (error) {
      metrics.operations.inc({ operation: "stream_events", status: "error" });
      throw error;
    }
  }

  /**
   * The stream's batches, for the transport to write: each is handed over when the transport
   * asks for the next, which it does once the previous one is written (or handed to its socket).
   * Ends when the subscription does, or when the transport stops asking.
   */
  async *batches(stream: PumpedStream): AsyncGenerator<readonly StoredEvent[]> {
    const { subscription, log } = stream;
    const { subjects, recursive, type } = subscription.filter;
    log.info(
      {
        transport: stream.transport,
        subjects,
        recursive,
        type,
        fromId: subscription.cursor,
        caller: stream.caller.name,
      },
      "stream opened",
    );
    try {
      for await (const batch of subscription) {
        // Commit to hand-over to the transport's writer.
        const lag = secondsSincePublished(batch.at(-1) as StoredEvent);
        if (lag !== undefined) this.#deps.metrics.deliveryLag.observe(lag);
        yield batch;
      }
    } catch (error) {
      this.#stopped(stream, "error");
      throw error;
    } finally {
      // The transport stopped asking (its write failed, or the client left) unless closed before.
      this.#stopped(stream, "client left");
      log.info(
        { transport: stream.transport, reason: subscription.closeReason, lastId: subscription.cursor },
        "stream closed",
      );
    }
  }

  /**
   * Why a stream the transport no longer writes ended: the response was dropped after
   * --write-timeout, else `otherwise` (the client left, or the stream failed).
   */
  #stopped(stream: PumpedStream, otherwise: "client left" | "error"): void {
    stream.subscription.close(this.#deps.outbound.timedOut(stream.raw) ? "write timeout" : otherwise);
  }
}
