import type { JsonReadOptions } from "@bufbuild/protobuf";
import { ConnectError, type ConnectRouter, type ContextValues } from "@connectrpc/connect";
import {
  type Compression,
  createAsyncIterable,
  encodeEnvelope,
  pipe,
  type UniversalHandler,
  type UniversalServerRequest,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import { trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type { FastifyInstance, FastifyRequest, RouteHandlerMethod } from "fastify";
import { jsonMessageText } from "../../events/json-body.js";
import { encodeGrpcMessage } from "../render-error.js";
import { Code, codeFromConnectName, connectCodeName, connectHttpStatus } from "../status.js";
import type { RpcHandlers } from "./lazy.js";

export interface ConnectAdapterOptions {
  readonly readMaxBytes: number;
  readonly routes: (router: ConnectRouter) => void;
  readonly contextValues: (request: FastifyRequest) => ContextValues;
}

/**
 * @connectrpc/connect-fastify as published, and what eventsdb adds (README, "gRPC, gRPC-Web and
 * Connect"). Errors raised before a handler (authentication, throttle, rate limit, CSRF) reach the
 * app's error handler, which answers in the call's protocol (render-error.ts). Where upstream
 * answers against its own contracts, test/transports/connect-adapter.test.ts pins upstream's
 * answer: when that test fails, upstream has changed and the override here can go.
 *
 * Returns upstream's route handler for each RPC path instead of registering them: the routes are
 * registered at start without Connect (lazy.ts), and this runs with the first call.
 */
export function connectHandlers(options: ConnectAdapterOptions): RpcHandlers {
  const handlers = new Map<string, RouteHandlerMethod>();
  // The plugin as upstream writes it, on a stand-in for its Fastify scope that keeps the route
  // handlers. Its no-op content-type parsers are in place already (lazy.ts); it adds hooks only
  // for options not given here.
  const scope = {
    all: (path: string, _options: unknown, handler: RouteHandlerMethod) => handlers.set(path, handler),
    addContentTypeParser: () => {},
    addHook: (name: string) => {
      throw new Error(`@connectrpc/connect-fastify added a ${name} hook the lazy routes do not run`);
    },
  };
  fastifyConnectPlugin(
    scope as unknown as FastifyInstance,
    {
      routes: (router) => {
        options.routes(router);
        router.handlers.forEach((handler, i) => {
          router.handlers[i] = withClientErrorsAsInvalid(handler);
        });
      },
      contextValues: options.contextValues,
      readMaxBytes: options.readMaxBytes,
      acceptCompression: [compressionGzip, compressionBrotli].map(withDecompressFailuresAsInvalid),
      // Connect compresses replies from 1 KiB; a list of ids or one event is not worth the CPU.
      compressMinBytes: 16 * 1024,
      jsonOptions,
    },
    (error) => {
      if (error) throw error;
    },
  );
  return handlers;
}

/**
 * JSON messages pass the checks of every JSON body and may not hide a `__proto__` map key
 * (json-body.ts). Connect's JSON serialization reads `textDecoder` from these options, although
 * the handler options' type does not list it (hence a variable, not a literal).
 */
const jsonOptions: Partial<JsonReadOptions> & { textDecoder: { decode(bytes?: Uint8Array): string } } = {
  textDecoder: { decode: jsonMessageText },
};

/** Upstream: a body that does not decompress is INTERNAL but for two zlib codes. It is the client's. */
function withDecompressFailuresAsInvalid(compression: Compression): Compression {
  return {
    ...compression,
    decompress: (bytes, readMaxBytes) =>
      compression.decompress(bytes, readMaxBytes).catch((error: unknown) => {
        const failure = ConnectError.from(error);
        if (failure.code !== Code.Internal) throw failure;
        throw new ConnectError(failure.rawMessage, Code.InvalidArgument, undefined, undefined, error);
      }),
  };
}

/**
 * Two upstream answers corrected where each protocol carries its status:
 * - a request message that is not protobuf is INTERNAL "parse binary: …", though upstream's own
 *   Serialization.parse promises INVALID_ARGUMENT (connect-go's answer);
 * - a message over the size limit names `readMaxBytes`, an option the user never set: it names
 *   --max-body-bytes, as the fast path and REST do.
 * gRPC and gRPC-Web also get grpc-message as the gRPC spec encodes it: upstream's
 * encodeURIComponent reaches grpc-js (decodeURI) as `orders%2F1`.
 */
function withClientErrorsAsInvalid(handler: UniversalHandler): UniversalHandler {
  const corrected = async (request: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const response = await handler(request);
    const { body, trailer } = response;
    if (body === undefined) return response;
    if (CONNECT_ERROR_STATUSES.has(response.status) && !response.header?.has("content-encoding")) {
      // Connect unary: the error is the whole (small) JSON body.
      const chunks: Uint8Array[] = [];
      for await (const chunk of body) chunks.push(chunk);
      const error = correctedConnectError(Buffer.concat(chunks), (json) => json);
      if (error === undefined) return { ...response, body: createAsyncIterable(chunks) };
      response.header?.set("content-length", String(error.json.length));
      return { ...response, status: connectHttpStatus(error.code), body: createAsyncIterable([error.json]) };
    }
    const type = response.header?.get("content-type") ?? "";
    const envelopes = async function* (chunks: AsyncIterable<Uint8Array>) {
      for await (const chunk of chunks) yield correctedEnvelope(type, chunk);
      // gRPC: the status travels in trailers, set while the body is written.
      if (trailer !== undefined) correctGrpcStatus(trailer);
    };
    return { ...response, body: pipe(body, envelopes, { propagateDownStreamError: true }) };
  };
  return Object.assign(corrected, handler);
}

/** The HTTP statuses of the Connect unary errors corrected (INTERNAL and RESOURCE_EXHAUSTED). */
const CONNECT_ERROR_STATUSES: ReadonlySet<number> = new Set(
  [Code.Internal, Code.ResourceExhausted].map(connectHttpStatus),
);

/** The flag of the Connect protocol's end-of-stream message. */
const END_STREAM = 0b10;

/** The corrected code and message of an upstream error, or undefined when it stands. */
function correction(code: Code, message: string): { code: Code; message: string } | undefined {
  if (code === Code.Internal && message.startsWith("parse binary:"))
    return { code: Code.InvalidArgument, message };
  if (code === Code.ResourceExhausted && message.includes(READ_MAX_BYTES)) {
    return { code, message: message.replace(READ_MAX_BYTES, "--max-body-bytes") };
  }
  return undefined;
}

/** How upstream names the size limit (protocol/limit-io.js). */
const READ_MAX_BYTES = "configured readMaxBytes";

/** A message of a streaming protocol: the gRPC-Web trailer or the Connect end of stream corrected. */
function correctedEnvelope(type: string, chunk: Uint8Array): Uint8Array {
  if (type.startsWith("application/grpc-web") && chunk[0] === trailerFlag) {
    return encodeEnvelope(trailerFlag, trailerSerialize(correctGrpcStatus(trailerParse(chunk.subarray(5)))));
  }
  if (type.startsWith("application/connect+") && chunk[0] === END_STREAM) {
    const end = correctedConnectError(chunk.subarray(5), (json) => (json as { error?: unknown }).error);
    return end === undefined ? chunk : encodeEnvelope(END_STREAM, end.json);
  }
  return chunk;
}

/** gRPC / gRPC-Web status fields corrected, and grpc-message re-encoded. */
function correctGrpcStatus(fields: Headers): Headers {
  const encoded = fields.get("grpc-message");
  if (encoded === null) return fields;
  const message = decodeURIComponent(encoded);
  const found = correction(Number(fields.get("grpc-status")) as Code, message);
  if (found !== undefined) fields.set("grpc-status", String(found.code));
  fields.set("grpc-message", encodeGrpcMessage(found?.message ?? message));
  return fields;
}

/** Connect's error JSON (`error` finds it in the document) corrected; undefined if it stands. */
function correctedConnectError(
  bytes: Uint8Array,
  error: (json: unknown) => unknown,
): { code: Code; json: Buffer } | undefined {
  const json: unknown = JSON.parse(Buffer.from(bytes).toString("utf8"));
  const found = error(json) as { code?: string; message?: string } | undefined;
  const code = codeFromConnectName(found?.code ?? "");
  if (found === undefined || code === undefined) return undefined;
  const fixed = correction(code, found.message ?? "");
  if (fixed === undefined) return undefined;
  found.code = connectCodeName(fixed.code);
  found.message = fixed.message;
  return { code: fixed.code, json: Buffer.from(JSON.stringify(json)) };
}
