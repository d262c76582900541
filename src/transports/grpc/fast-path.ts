import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { ANYONE, type Principal } from "../../auth/tokens.js";
import { EventsDbError } from "../../errors.js";
import { type AppendDeps, append } from "../append.js";
import type { Pipeline } from "../pipeline.js";
import { sendGrpcError, WireError } from "../render-error.js";
import { Code, connectCode } from "../status.js";
import { lazyImport } from "./lazy.js";

export interface GrpcFastPathDeps extends AppendDeps {
  /** The steps every request passes (credentials, CSRF, throttle, rate limit, log line, errors). */
  readonly pipeline: Pipeline;
}

const CREATE_EVENT = "/grpc.EventsDB/CreateEvent";
const CREATE_EVENTS = "/grpc.EventsDB/CreateEvents";

/**
 * A short path for the two append RPCs over plain gRPC (HTTP/2, uncompressed protobuf): it reads
 * the one length-prefixed message straight off the raw HTTP/2 stream and answers on it, without
 * node's HTTP/2 compatibility layer, Fastify and the Connect pipeline, which together cost several
 * times the append itself. Only the wire is its own: the request passes the same pipeline as
 * every other (pipeline.ts: credentials, CSRF, throttle, --rate-limit, the log line, the error
 * renderer) and the same append core (append.ts, events/proto.ts: validation, scopes, metrics).
 * Everything else — other RPCs, gRPC-Web, Connect, compression — goes the usual way. Returns
 * whether it took the stream. The protobuf codec (fast-path-codec.ts) loads with the first call
 * that is admitted.
 */
export function grpcFastPath(
  deps: GrpcFastPathDeps,
): (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => boolean {
  const { pipeline } = deps;
  return (stream, headers) => {
    if (headers[":method"] !== "POST") return false;
    const path = headers[":path"];
    if (path !== CREATE_EVENT && path !== CREATE_EVENTS) return false;
    const type = headers["content-type"];
    if (type !== "application/grpc" && type !== "application/grpc+proto") return false;
    const encoding = headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    // A reset or broken stream only ends this call (an unhandled 'error' would end the process).
    stream.on("error", ignore);
    const call: Call = { path, started: performance.now(), principal: undefined };
    const batch = path === CREATE_EVENTS;
    // Read from the start: a body that ends before anyone listens would end unseen.
    const message = readMessage(stream, deps.eventLog.limits.maxBodyBytes);
    const reply = pipeline.admit(pipeline.streamRequest(stream, headers)).then(async (principal) => {
      call.principal = principal;
      const body = await message;
      const codec = await loadCodec();
      const request = oneMessage(body, batch, codec.parseAppend);
      return append(deps, {
        batch,
        principal,
        decode: () => codec.decodeAppend(batch, request, deps.eventLog.limits),
        encode: (ids) => codec.encodeAppendReply(batch, ids),
      });
    });
    void respond(deps, stream, reply, call);
    return true;
  };
}

function ignore(): void {}

const loadCodec = lazyImport(() => import("./fast-path-codec.js"));

interface Call {
  readonly path: string;
  readonly started: number;
  /** Set once admitted. */
  principal: Principal | undefined;
}

const OK_HEADERS = { ":status": 200, "content-type": "application/grpc" } as const;
const OK_TRAILERS = { "grpc-status": "0" } as const;

/** Sends the reply, or the error as a trailers-only response (render-error.ts); then the log line. */
async function respond(
  deps: GrpcFastPathDeps,
  stream: ServerHttp2Stream,
  reply: Promise<Uint8Array>,
  call: Call,
): Promise<void> {
  const { pipeline } = deps;
  let grpcStatus: number;
  try {
    const message = await reply;
    if (stream.destroyed || stream.closed) {
      // The caller went away meanwhile: the events are stored; there is no one to tell.
      grpcStatus = Code.Canceled;
    } else {
      stream.respond(OK_HEADERS, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(OK_TRAILERS));
      stream.end(grpcFrame(message));
      grpcStatus = 0;
    }
  } catch (error) {
    // A WireError is the wire's own (framing); anything else goes through the pipeline.
    const failure = error instanceof WireError ? error : pipeline.failure(error);
    // An over-limit message is still arriving: sendGrpcError then resets the stream (NO_ERROR).
    sendGrpcError(stream, failure);
    grpcStatus = failure instanceof WireError ? failure.code : connectCode(failure.code);
  }
  pipeline.logLine({
    method: "POST",
    route: call.path,
    status: 200,
    grpcStatus,
    ms: Math.round((performance.now() - call.started) * 100) / 100,
    caller: (call.principal ?? ANYONE).name,
  });
}

/** One uncompressed gRPC Length-Prefixed-Message: flag 0, the length (big-endian), the message. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

/**
 * The body of a unary call (gRPC over HTTP/2: one "Length-Prefixed-Message", see oneMessage).
 * Beyond the size limit it stops reading and fails at once. Never an unhandled rejection: a call
 * refused before its message is read answers the refusal and leaves this one unawaited.
 */
function readMessage(stream: ServerHttp2Stream, maxBytes: number): Promise<Buffer> {
  let done!: (error: Error | undefined, body?: Buffer) => void;
  const read = new Promise<Buffer>((resolve, reject) => {
    done = (error, body) => (error === undefined ? resolve(body as Buffer) : reject(error));
  });
  read.catch(ignore);
  const chunks: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer) => {
    size += chunk.length;
    if (size > maxBytes + 5) {
      // Still flowing, into nothing: the stream can only end (and free its slot) once read.
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.on("data", ignore);
      done(overLimit(size - 5, maxBytes));
      return;
    }
    chunks.push(chunk);
  };
  const onEnd = () => done(undefined, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
  stream.on("data", onData);
  stream.on("end", onEnd);
  return read;
}

/** The message over --max-body-bytes, worded as the Connect adapter words it. */
function overLimit(size: number, maxBytes: number): EventsDbError {
  return new EventsDbError(
    "resource_exhausted",
    `message size ${size} is larger than --max-body-bytes ${maxBytes}`,
  );
}

/**
 * The message of a unary request body, or the error the Connect path (upstream's envelope reader
 * and unary handler) throws for the same body, in the same order: it parses the first message
 * before it reads a second. The gRPC status codes document counts zero or two messages as a
 * cardinality violation (UNIMPLEMENTED); a cut envelope is the client's (INVALID_ARGUMENT); a
 * compressed flag without a grpc-encoding cannot be read (INTERNAL, as grpc-go answers too).
 * `parse` is the codec's parseAppend (it throws for a first message that is not one).
 */
function oneMessage(
  body: Buffer,
  batch: boolean,
  parse: (batch: boolean, message: Uint8Array) => unknown,
): Uint8Array {
  if (body.length === 0)
    throw wireError("protocol error: missing input message for unary method", Code.Unimplemented);
  const message = envelope(body);
  const end = 5 + message.length;
  if (body.length > end) {
    parse(batch, message);
    envelope(body.subarray(end));
    throw wireError("protocol error: received extra input message for unary method", Code.Unimplemented);
  }
  return message;
}

/** The first uncompressed envelope's message. */
function envelope(body: Buffer): Uint8Array {
  const end = body.length < 5 ? Number.POSITIVE_INFINITY : 5 + body.readUInt32BE(1);
  if (body.length < end) throw wireError("protocol error: incomplete envelope", Code.InvalidArgument);
  if (body[0] !== 0)
    throw wireError("received compressed envelope, but do not know how to decompress", Code.Internal);
  return body.subarray(5, end);
}

/** A failure of the gRPC wire itself, not of the request's content: it has no domain code. */
function wireError(message: string, code: Code): WireError {
  return new WireError(message, code);
}
