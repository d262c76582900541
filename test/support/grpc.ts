import http from "node:http";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { EventsDB } from "../../src/gen/grpc/eventsdb_pb.js";

// ---------------------------------------------------------------------------------------------
// @grpc/grpc-js: an independent peer that knows nothing but the .proto file.
// ---------------------------------------------------------------------------------------------

/** proto-loader's view of the messages (keepCase, longs as String, defaults, oneofs). */
export interface ProtoCreateEventRequest {
  source?: string;
  type?: string;
  subject?: string;
  data?: Buffer;
  id?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions?: Record<string, string>;
}

export interface ProtoEvent {
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  data: Buffer;
  ce_id: string;
  datacontenttype: string;
  dataschema: string;
  extensions: Record<string, string>;
  /** The chain fields (empty when absent). */
  hash: Buffer;
  prev_hash: Buffer;
  signature: Buffer;
}

export interface ProtoChainLink {
  id: string;
  hash: Buffer;
  prev_hash: Buffer;
  signature: Buffer;
  deleted: boolean;
  /** null for a tombstone. */
  event: ProtoEvent | null;
  extensions_json: string;
}

export interface ProtoChainReply {
  links: ProtoChainLink[];
  has_more: boolean;
  next_from_id: string;
}

export interface ProtoStreamRequest {
  subject?: string;
  type?: string;
  from_id?: string;
  recursive?: boolean;
  limit?: number;
}

export interface ProtoStreamReply {
  events: ProtoEvent[];
  has_more: boolean;
  next_from_id: string;
}

export interface ProtoDeleteRequest {
  subject?: string;
  type?: string;
  from_id?: string;
  recursive?: boolean;
}

/** The unary methods of grpc.EventsDB with their request and reply shapes. */
export interface UnaryMethods {
  CreateEvent: [ProtoCreateEventRequest, { id: string }];
  CreateEvents: [{ events: ProtoCreateEventRequest[] }, { ids: string[] }];
  GetEventByID: [{ id: string }, ProtoEvent];
  GetHistoricEventsFromSubject: [ProtoStreamRequest, ProtoStreamReply];
  DeleteFromSubject: [ProtoDeleteRequest, { deleted: string }];
  ListSubjects: [{ prefix?: string }, { subjects: string[] }];
  GetChain: [{ from_id?: string; limit?: number }, ProtoChainReply];
}

type UnaryCallback<R> = (error: grpc.ServiceError | null, reply?: R) => void;
type DynamicClient = grpc.Client & {
  [method: string]: (request: unknown, ...rest: unknown[]) => unknown;
};

const PROTO = fileURLToPath(new URL("../../proto/grpc/eventsdb.proto", import.meta.url));

let eventsDbClass: grpc.ServiceClientConstructor | undefined;

/** The generic client class built at run time from proto/grpc/eventsdb.proto. */
function eventsDbConstructor(): grpc.ServiceClientConstructor {
  if (eventsDbClass === undefined) {
    const definition = protoLoader.loadSync(PROTO, {
      keepCase: true,
      longs: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(definition).grpc as grpc.GrpcObject;
    eventsDbClass = pkg.EventsDB as grpc.ServiceClientConstructor;
  }
  return eventsDbClass;
}

/** A grpc-js stream as the tests observe it: every reply, the ids in order, the final status. */
export interface GrpcJsStream {
  readonly call: grpc.ClientReadableStream<ProtoStreamReply>;
  readonly replies: ProtoStreamReply[];
  /** Resolves with the status the call ended with (CANCELLED after cancel()). */
  readonly ended: Promise<grpc.StatusObject>;
  /** The error event, when there was one. */
  error: grpc.ServiceError | undefined;
  ids(): number[];
  cancel(): void;
}

/** A grpc-js client of grpc.EventsDB on insecure h2c (prior knowledge), with promise helpers. */
export class GrpcJsClient {
  readonly client: DynamicClient;
  readonly #streams = new Set<GrpcJsStream>();

  /**
   * @param ownConnection by default grpc-js shares one connection between clients with the same
   *   target and options; true gives this client a connection of its own (a stalled stream then
   *   cannot hold back the connection window of the others).
   */
  constructor(port: number, ownConnection = false) {
    const Ctor = eventsDbConstructor();
    const options: grpc.ChannelOptions = ownConnection ? { "grpc.use_local_subchannel_pool": 1 } : {};
    this.client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options) as DynamicClient;
  }

  unary<M extends keyof UnaryMethods>(method: M, request: UnaryMethods[M][0]): Promise<UnaryMethods[M][1]> {
    return new Promise((resolve, reject) => {
      const callback: UnaryCallback<UnaryMethods[M][1]> = (error, reply) => {
        if (error !== null) reject(error);
        else resolve(reply as UnaryMethods[M][1]);
      };
      const fn = this.client[method];
      if (fn === undefined) throw new Error(`no method ${method}`);
      fn.call(this.client, request, callback);
    });
  }

  /** The gRPC status code a unary call fails with (throws when it succeeds). */
  async failure<M extends keyof UnaryMethods>(
    method: M,
    request: UnaryMethods[M][0],
  ): Promise<{ code: grpc.status; details: string }> {
    try {
      const reply = await this.unary(method, request);
      throw new Error(`${method} succeeded unexpectedly: ${JSON.stringify(reply)}`);
    } catch (error) {
      const e = error as grpc.ServiceError;
      if (typeof e.code !== "number") throw error;
      return { code: e.code, details: e.details };
    }
  }

  stream(request: ProtoStreamRequest, metadata: grpc.Metadata = new grpc.Metadata()): GrpcJsStream {
    const fn = this.client.StreamEventsFromSubject as (
      request: ProtoStreamRequest,
      metadata: grpc.Metadata,
    ) => grpc.ClientReadableStream<ProtoStreamReply>;
    const call = fn.call(this.client, request, metadata);
    const replies: ProtoStreamReply[] = [];
    const stream: GrpcJsStream = {
      call,
      replies,
      error: undefined,
      ended: new Promise((resolve) => call.once("status", resolve)),
      ids: () => replies.flatMap((reply) => reply.events.map((event) => Number(event.id))),
      cancel: () => call.cancel(),
    };
    call.on("data", (reply: ProtoStreamReply) => replies.push(reply));
    // Without a listener an error event (CANCELLED after cancel) would be thrown.
    call.on("error", (error: grpc.ServiceError) => {
      stream.error = error;
    });
    this.#streams.add(stream);
    void stream.ended.then(() => this.#streams.delete(stream));
    return stream;
  }

  /** Cancels every open stream and closes the channel. */
  close(): void {
    for (const stream of this.#streams) stream.cancel();
    this.#streams.clear();
    this.client.close();
  }
}

// ---------------------------------------------------------------------------------------------
// @connectrpc/connect-node: the generated descriptor over each protocol and HTTP version.
// ---------------------------------------------------------------------------------------------

export type ConnectKind = "grpc (HTTP/2)" | "grpc-web (HTTP/1.1)" | "connect (HTTP/1.1)" | "connect (HTTP/2)";

export const CONNECT_KINDS: readonly ConnectKind[] = [
  "grpc (HTTP/2)",
  "grpc-web (HTTP/1.1)",
  "connect (HTTP/1.1)",
  "connect (HTTP/2)",
];

/** A connect-node client with the connection it owns, so a test can close it. */
export interface ConnectPeer {
  readonly client: Client<typeof EventsDB>;
  readonly transport: Transport;
  close(): void;
}

/**
 * A client on its own connection(s): an Http2SessionManager for HTTP/2, a keep-alive agent for
 * HTTP/1.1; close() aborts the session or destroys the agent's sockets.
 */
export function connectPeer(kind: ConnectKind, urls: { url: string; grpcUrl: string }): ConnectPeer {
  let transport: Transport;
  let close: () => void;
  if (kind === "grpc (HTTP/2)" || kind === "connect (HTTP/2)") {
    const baseUrl = kind === "grpc (HTTP/2)" ? urls.grpcUrl : urls.url;
    const sessionManager = new Http2SessionManager(baseUrl);
    transport =
      kind === "grpc (HTTP/2)"
        ? createGrpcTransport({ baseUrl, sessionManager })
        : createConnectTransport({ baseUrl, httpVersion: "2", sessionManager });
    close = () => sessionManager.abort();
  } else {
    const agent = new http.Agent({ keepAlive: true });
    const options = { baseUrl: urls.url, httpVersion: "1.1" as const, nodeOptions: { agent } };
    transport =
      kind === "grpc-web (HTTP/1.1)" ? createGrpcWebTransport(options) : createConnectTransport(options);
    close = () => agent.destroy();
  }
  return { client: createClient(EventsDB, transport), transport, close };
}

/** A server stream read with connect-node until close(). */
export interface ConnectStream {
  readonly replies: { events: { id: bigint }[] }[];
  /** Resolves when the stream ends; rejects with anything but the cancellation close() causes. */
  readonly ended: Promise<void>;
  ids(): number[];
  close(): void;
}

export function openConnectStream(
  read: (signal: AbortSignal) => AsyncIterable<{ events: { id: bigint }[] }>,
): ConnectStream {
  const controller = new AbortController();
  const replies: { events: { id: bigint }[] }[] = [];
  const ended = (async () => {
    try {
      for await (const reply of read(controller.signal)) replies.push(reply);
    } catch (error) {
      if (controller.signal.aborted && ConnectError.from(error).code === Code.Canceled) return;
      throw error;
    }
  })();
  // Observed by the test when it cares; never an unhandled rejection.
  ended.catch(() => {});
  return {
    replies,
    ended,
    ids: () => replies.flatMap((reply) => reply.events.map((event) => Number(event.id))),
    close: () => controller.abort(),
  };
}

// ---------------------------------------------------------------------------------------------
// Raw gRPC over node:http2: what is on the wire.
// ---------------------------------------------------------------------------------------------

/** A gRPC call as the wire carried it. */
export interface RawGrpcAnswer {
  readonly httpStatus: number;
  /** grpc-status, from the headers (trailers-only) or the trailers. */
  readonly grpcStatus: string | undefined;
  /** grpc-message as sent (still percent-encoded). */
  readonly rawMessage: string | undefined;
  /** The status came in the one HEADERS frame, with END_STREAM (a trailers-only response). */
  readonly trailersOnly: boolean;
  /** Headers and trailers together. */
  readonly fields: http2.IncomingHttpHeaders;
  readonly data: Buffer;
}

/** One length-prefixed gRPC message (uncompressed). */
export function grpcMessage(message: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** One unary gRPC call on its own HTTP/2 connection (node:http2, prior knowledge). */
export function rawGrpcCall(
  url: string,
  path: string,
  body: Buffer,
  headers: Record<string, string> = {},
): Promise<RawGrpcAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    let httpStatus = 0;
    let trailersOnly = false;
    const fields: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h, flags) => {
      httpStatus = Number(h[":status"]);
      trailersOnly = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      Object.assign(fields, h);
    });
    stream.on("trailers", (h) => Object.assign(fields, h));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {}); // RST_STREAM(NO_ERROR) after a complete answer
    stream.on("close", () => {
      session.close();
      resolve({
        httpStatus,
        grpcStatus: fields["grpc-status"] as string | undefined,
        rawMessage: fields["grpc-message"] as string | undefined,
        trailersOnly,
        fields,
        data: Buffer.concat(chunks),
      });
    });
    stream.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// The unary fast path (--grpc-fast-path)
// ---------------------------------------------------------------------------------------------

/**
 * The unary gRPC fast path on (the default) and off. Suites that must answer alike either way run
 * once per mode (`describe.each`), so every expectation holds on both paths.
 */
export const FAST_PATH_MODES: readonly {
  readonly fastPath: "on" | "off";
  readonly flags: Readonly<Record<string, string>>;
}[] = [
  { fastPath: "on", flags: { "grpc-fast-path": "true" } },
  { fastPath: "off", flags: { "grpc-fast-path": "false" } },
];
