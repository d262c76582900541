import { constants, type Http2ServerRequest, type ServerHttp2Stream } from "node:http2";
import type { FastifyReply, FastifyRequest } from "fastify";
import { EventsDbError, invalidArgument } from "../errors.js";
import { type Code, connectCode, connectCodeName, connectHttpStatus, httpStatus } from "./status.js";

/**
 * One renderer per wire format for errors the transports' own handlers do not answer: those
 * raised before a handler runs (authentication 401, throttling and rate limits 429, CSRF 403,
 * unreadable bodies) and the gRPC unary fast path's. The app's error handler, the Connect plugin's
 * error handler and the fast path all answer through here, so a gRPC client gets a gRPC status, a
 * Connect client a Connect error, and REST the JSON error — with the retry delay in each shape.
 * No Connect import here (nor in status.ts): REST answers errors without loading Connect.
 */
export type WireFormat = "rest" | "connect" | "connect-stream" | "grpc" | "grpc-web";

/** The wire format of a request: the RPC protocols live under /grpc.*, told apart by content type. */
export function wireFormat(path: string, contentType: string | undefined): WireFormat {
  if (!path.startsWith("/grpc.")) return "rest";
  const type = (contentType ?? "").toLowerCase();
  if (type.startsWith("application/grpc-web")) return "grpc-web";
  if (type.startsWith("application/grpc")) return "grpc";
  if (type.startsWith("application/connect+")) return "connect-stream";
  return "connect"; // unary: application/json, application/proto (or anything a client gets wrong)
}

/**
 * Any error as a domain error: domain errors as they are; Fastify's own 4xx (bad JSON, body too
 * large, …) by status; anything else is `fallback`, by default an internal error without detail.
 */
export function asDomainError(error: unknown, fallback?: EventsDbError): EventsDbError {
  if (error instanceof EventsDbError) return error;
  const fastifyError = error as { statusCode?: number; message?: string };
  const status = fastifyError.statusCode;
  if (status === 413) return new EventsDbError("payload_too_large", "the request body is too large");
  if (status === 415) return new EventsDbError("unsupported_media_type", "unsupported Content-Type");
  if (status !== undefined && status >= 400 && status < 500) {
    return invalidArgument(fastifyError.message ?? "bad request");
  }
  return fallback ?? new EventsDbError("internal", "internal error", { cause: error });
}

/** The REST error body, `{"error": {"code", "message"}}`. */
export function restErrorBody(error: EventsDbError): { error: { code: string; message: string } } {
  return { error: { code: error.code, message: error.message } };
}

/**
 * Answers a request with the error in its wire format. gRPC answers on the raw HTTP/2 stream
 * (a trailers-only response); the others through the reply.
 */
export function sendError(request: FastifyRequest, reply: FastifyReply, error: EventsDbError): FastifyReply {
  const path = request.url.split("?", 1)[0] as string;
  const contentType = request.headers["content-type"];
  const format = wireFormat(path, contentType);
  if (format === "grpc" && "stream" in request.raw) {
    reply.hijack();
    sendGrpcError((request.raw as unknown as Http2ServerRequest).stream, error, contentType);
    return reply;
  }
  if (format === "grpc" || format === "grpc-web") {
    // gRPC-Web: the status in the headers of an empty 200 (its trailers-only form); gRPC over
    // HTTP/1.1 does not exist, but a confused client gets the same.
    return reply
      .code(200)
      .headers(grpcStatus(error))
      .type(contentType ?? "application/grpc-web+proto")
      .send("");
  }
  if (error.retryAfterSeconds !== undefined)
    void reply.header("retry-after", String(error.retryAfterSeconds));
  const code = connectCode(error.code);
  if (format === "connect-stream") {
    // Connect streaming: HTTP 200 and the error in the end-of-stream message (flag 0b10); a
    // non-200 status would only let the client guess a code from the HTTP status.
    const json = Buffer.from(
      JSON.stringify({ error: { code: connectCodeName(code), message: error.message } }),
    );
    const envelope = Buffer.alloc(5 + json.length);
    envelope[0] = 0b10;
    envelope.writeUInt32BE(json.length, 1);
    json.copy(envelope, 5);
    return reply
      .code(200)
      .type(contentType ?? "application/connect+json")
      .send(envelope);
  }
  if (format === "connect") {
    return reply
      .code(connectHttpStatus(code))
      .type("application/json")
      .send({ code: connectCodeName(code), message: error.message });
  }
  if (error.code === "unauthenticated") void reply.header("www-authenticate", 'Bearer realm="eventsdb"');
  return reply.code(httpStatus(error.code)).send(restErrorBody(error));
}

/**
 * A gRPC error as a trailers-only response (gRPC over HTTP/2: one HEADERS frame with the status
 * and END_STREAM), then RST_STREAM(NO_ERROR) if the client is still sending its message, which
 * asks it to stop (RFC 9113 §8.1) instead of holding the stream open.
 */
export function sendGrpcError(
  stream: ServerHttp2Stream,
  error: EventsDbError | WireError,
  contentType = "application/grpc",
): void {
  if (stream.destroyed || stream.closed) return;
  if (stream.headersSent) {
    stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  stream.respond({ ":status": 200, "content-type": contentType, ...grpcStatus(error) }, { endStream: true });
  if (!stream.readableEnded) stream.close(constants.NGHTTP2_NO_ERROR);
}

/**
 * The status fields of a gRPC or gRPC-Web error: grpc-status, grpc-message and, when the client
 * should wait, grpc-retry-pushback-ms (the server pushback of gRPC's retry design, gRFC A6). A
 * WireError is an error of the gRPC wire itself (the fast path's framing), which has no domain code.
 */
export function grpcStatus(error: EventsDbError | WireError): Record<string, string> {
  if (error instanceof WireError) {
    return { "grpc-status": String(error.code), "grpc-message": encodeGrpcMessage(error.message) };
  }
  const fields: Record<string, string> = {
    "grpc-status": String(connectCode(error.code)),
    "grpc-message": encodeGrpcMessage(error.message),
  };
  if (error.retryAfterSeconds !== undefined) {
    fields["grpc-retry-pushback-ms"] = String(error.retryAfterSeconds * 1000);
  }
  return fields;
}

/**
 * A failure of the gRPC wire itself (the fast path's framing: no message, two, a cut envelope), not
 * of the request's content: it has a gRPC code and no domain code, and its message is the one
 * upstream's Connect path gives for the same body.
 */
export class WireError extends Error {
  readonly code: Code;

  constructor(message: string, code: Code) {
    super(message);
    this.name = "WireError";
    this.code = code;
  }
}

/**
 * grpc-message as the gRPC over HTTP/2 protocol spec encodes it: the UTF-8 bytes, with every byte
 * outside 0x20–0x7E and `%` itself percent-encoded. Not encodeURIComponent: that also encodes `/`
 * and other printable characters, which decoders that follow the spec (grpc-js uses decodeURI)
 * leave as they are, so clients saw `orders%2F1`.
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
