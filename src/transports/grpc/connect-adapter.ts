import { isUtf8 } from "node:buffer";
import type { Http2ServerRequest } from "node:http2";
import type { JsonValue } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
} from "@connectrpc/connect";
import type { UniversalServerResponse } from "@connectrpc/connect/protocol";
import * as protoConnect from "@connectrpc/connect/protocol-connect";
import * as protoGrpc from "@connectrpc/connect/protocol-grpc";
import * as protoGrpcWeb from "@connectrpc/connect/protocol-grpc-web";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { EventsDbError, invalidArgument } from "../../errors.js";
import { MAX_JSON_DEPTH, nestedDeeperThan } from "../../events/formats.js";
import { asDomainError, encodeGrpcMessage, sendError } from "../render-error.js";

export interface ConnectPluginOptions extends ConnectRouterOptions {
  readonly readMaxBytes: number;
  readonly routes: (router: ConnectRouter) => void;
  readonly contextValues: (request: FastifyRequest) => ContextValues;
}

/**
 * @connectrpc/connect-fastify's plugin, with two fixes for hostile input that the library
 * answers as server errors (INTERNAL, HTTP 500):
 * - a request that cannot be parsed or decompressed ("parse binary: …", "decompression failed")
 *   is the client's fault: INVALID_ARGUMENT, like connect-go answers it;
 * - Connect unary JSON must be valid UTF-8 (the library's decoder would store U+FFFD, where REST
 *   answers 400): the body is read and checked here and handed to Connect already parsed;
 */
export async function connectPlugin(app: FastifyInstance, options: ConnectPluginOptions): Promise<void> {
  const router = createConnectRouter({
    acceptCompression: [compressionGzip, compressionBrotli],
    // Connect gzips replies from 1 KiB; a list of ids or one event is not worth the CPU.
    compressMinBytes: 16 * 1024,
    ...options,
  });
  options.routes(router);

  app.addContentTypeParser(protoConnect.contentTypeUnaryJson, (request, payload, done) => {
    // A compressed body is left to Connect, which decompresses it (with its own size limit).
    if (
      request.headers["content-encoding"] !== undefined &&
      request.headers["content-encoding"] !== "identity"
    ) {
      done(null);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    payload.on("data", (chunk: Buffer) => {
      size += chunk.length;
      // Past the limit, keep reading (and dropping) so the answer can be sent on this connection.
      if (size <= options.readMaxBytes) chunks.push(chunk);
    });
    payload.on("error", (error) => done(error, undefined));
    payload.on("end", () => {
      if (size > options.readMaxBytes) {
        done(
          new EventsDbError("payload_too_large", `the request body is over ${options.readMaxBytes} bytes`),
          undefined,
        );
        return;
      }
      try {
        done(null, { json: parseJsonBody(Buffer.concat(chunks)) });
      } catch (error) {
        done(error as Error, undefined);
      }
    });
  });
  // Errors before a handler runs (authentication, throttling, rate limit, the parser above), in the
  // protocol of the call; what cannot be attributed is an unreadable request.
  app.setErrorHandler((error, request, reply) =>
    sendError(request, reply, asDomainError(error, invalidArgument("the request cannot be read"))),
  );
  const noop = (_request: unknown, _payload: unknown, done: (error: null, body?: unknown) => void) =>
    done(null);
  app.addContentTypeParser(
    [
      protoConnect.contentTypeStreamJson,
      protoGrpcWeb.contentTypeProto,
      protoGrpcWeb.contentTypeJson,
      protoGrpc.contentTypeProto,
      protoGrpc.contentTypeJson,
    ],
    noop,
  );
  app.addContentTypeParser(protoGrpc.contentTypeRegExp, noop);
  app.addContentTypeParser(protoGrpcWeb.contentTypeRegExp, noop);
  app.addContentTypeParser(protoConnect.contentTypeRegExp, noop);

  for (const handler of router.handlers) {
    app.all(handler.requestPath, async (request, reply) => {
      drainUnreadRequestAfterAnswer(request.raw);
      const parsed = request.body as { json?: unknown } | undefined;
      try {
        const response = await handler(
          universalRequestFromNodeRequest(
            request.raw,
            reply.raw,
            parsed?.json as JsonValue | undefined,
            options.contextValues(request),
          ),
        );
        for (const [key, value] of Object.entries(reply.getHeaders())) {
          if (value !== undefined) reply.raw.setHeader(key, value);
        }
        await universalResponseToNodeResponse(await asClientErrors(response), reply.raw);
      } catch (error) {
        if (ConnectError.from(error).code !== Code.Aborted)
          request.log.error({ err: error }, `rpc ${handler.method.name} failed`);
      }
    });
  }
}

/**
 * After the answer, an HTTP/2 request body the client is still sending (answered early: over the
 * size limit, say) is read into nothing until the client has sent it, so the call ends. Connect
 * stops reading such a body and destroys the request object, and node's compatibility layer then
 * pauses the stream at every chunk it cannot deliver: the stream would stay open (holding a
 * graceful stop) until the client gave up.
 */
function drainUnreadRequestAfterAnswer(raw: FastifyRequest["raw"] | Http2ServerRequest): void {
  if (!("stream" in raw)) return;
  const stream = raw.stream;
  // 'finish': the answer has been handed to the session.
  stream.once("finish", () => {
    if (raw.readableEnded || stream.readableEnded || stream.destroyed) return;
    stream.removeAllListeners("data");
    stream.on("data", ignore);
    stream.resume();
  });
}

function ignore(): void {}

/**
 * A Connect unary JSON body: UTF-8 (the library's decoder would store U+FFFD), bounded nesting,
 * and no `__proto__` key (protobuf-es would drop it from a map without a word).
 */
function parseJsonBody(bytes: Buffer): JsonValue {
  if (bytes.length === 0) return {};
  if (!isUtf8(bytes)) throw new EventsDbError("invalid_argument", "the request body is not valid UTF-8");
  if (nestedDeeperThan(bytes, MAX_JSON_DEPTH)) {
    throw new EventsDbError(
      "invalid_argument",
      `the request body nests JSON deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  let json: JsonValue;
  try {
    json = JSON.parse(bytes.toString("utf8")) as JsonValue;
  } catch {
    throw new EventsDbError("invalid_argument", "the request body is not valid JSON");
  }
  const check = (value: JsonValue): void => {
    if (value === null || typeof value !== "object") return;
    if (!Array.isArray(value) && Object.hasOwn(value, "__proto__")) {
      throw new EventsDbError("invalid_argument", '"__proto__" is not a valid field or attribute name');
    }
    for (const child of Array.isArray(value) ? value : Object.values(value)) check(child as JsonValue);
  };
  check(json);
  return json;
}

/** Errors the library raises for unreadable requests, as INTERNAL. */
const REQUEST_ERRORS = /^(\[internal\] )?(parse binary|decompression failed)/;

/** Rewrites INTERNAL errors about unreadable requests into INVALID_ARGUMENT. */
async function asClientErrors(response: UniversalServerResponse): Promise<UniversalServerResponse> {
  const { body, trailer } = response;
  if (body === undefined) return response;
  // Connect protocol, unary: the error is the (small) JSON body of an HTTP 500.
  if (response.status === 500) {
    const chunks: Uint8Array[] = [];
    for await (const chunk of body) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    let rewritten = bytes;
    let status = response.status;
    try {
      const error = JSON.parse(bytes.toString("utf8")) as { code?: string; message?: string };
      if (error.code === "internal" && REQUEST_ERRORS.test(error.message ?? "")) {
        rewritten = Buffer.from(JSON.stringify({ ...error, code: "invalid_argument" }));
        status = 400;
      }
    } catch {
      // not a Connect error body: send it as it was
    }
    response.header?.set("content-length", String(rewritten.length));
    return {
      ...response,
      status,
      body: (async function* () {
        yield rewritten;
      })(),
    };
  }
  // gRPC: the status travels in trailers, filled in while the body is written.
  if (trailer === undefined) return response;
  return {
    ...response,
    body: (async function* () {
      yield* body;
      const encoded = trailer.get("grpc-message");
      if (encoded === null) return;
      const message = decodeMessage(encoded);
      if (trailer.get("grpc-status") === String(Code.Internal) && REQUEST_ERRORS.test(message)) {
        trailer.set("grpc-status", String(Code.InvalidArgument));
      }
      // Connect encodes with encodeURIComponent; the gRPC spec (and grpc-js, which decodes with
      // decodeURI) wants only bytes outside 0x20–0x7E and "%" encoded: re-encode, or clients read
      // `orders%2F1`.
      trailer.set("grpc-message", encodeGrpcMessage(message));
    })(),
  };
}

/** grpc-message as Connect wrote it (encodeURIComponent); as it stands when it cannot be decoded. */
function decodeMessage(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    return encoded;
  }
}
