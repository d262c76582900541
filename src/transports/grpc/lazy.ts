import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { FastifyInstance, RouteHandlerMethod } from "fastify";

// Connect, @bufbuild/protobuf, the generated descriptors and the gRPC services are a fifth of what
// a default start would load and hold (README, "Measured": idle memory). A server that is never
// called over gRPC or Connect never needs them, so they load with the first call: this module
// (no Connect import) registers every RPC path with Fastify at start, and the first request on any
// of them imports the handlers. Everything before the handler (the pipeline: credentials,
// throttle, rate limit, log line, error rendering) is Fastify's and runs as for any route.

/**
 * Every path the Connect routes answer, registered before the handlers exist (Fastify routes are
 * fixed once the app is ready). test/transports/connect-lazy.test.ts pins it to the services the
 * loaded handlers register: a new RPC in the proto that is missing here fails that test.
 */
export const RPC_PATHS: readonly string[] = [
  "/grpc.EventsDB/CreateEvent",
  "/grpc.EventsDB/GetEventByID",
  "/grpc.EventsDB/StreamEventsFromSubject",
  "/grpc.EventsDB/GetHistoricEventsFromSubject",
  "/grpc.EventsDB/CreateEvents",
  "/grpc.EventsDB/DeleteFromSubject",
  "/grpc.EventsDB/ListSubjects",
  "/grpc.EventsDB/GetChain",
  "/grpc.EventsDB/CreateSubscription",
  "/grpc.EventsDB/ListSubscriptions",
  "/grpc.EventsDB/GetSubscription",
  "/grpc.EventsDB/UpdateSubscription",
  "/grpc.EventsDB/DeleteSubscription",
  "/grpc.EventsDB/RedriveSubscription",
  "/grpc.health.v1.Health/Check",
  "/grpc.health.v1.Health/Watch",
  "/grpc.health.v1.Health/List",
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/**
 * The content types @connectrpc/connect-fastify leaves unparsed in its scope (its
 * addNoopContentTypeParsers), so Connect reads the body itself: upstream's constants, written out
 * here so that registering them does not load Connect (connect-lazy.test.ts compares them).
 */
export const CONNECT_CONTENT_TYPES: readonly string[] = [
  "application/json",
  "application/connect+json",
  "application/grpc-web+proto",
  "application/grpc-web+json",
  "application/grpc+proto",
  "application/grpc+json",
];
export const CONNECT_CONTENT_TYPE_PATTERNS: readonly RegExp[] = [
  /^application\/grpc(?:\+(?:(json)(?:; ?charset=utf-?8)?|proto))?$/i,
  /^application\/grpc-web(-text)?(?:\+(?:(json)(?:; ?charset=utf-?8)?|proto))?$/i,
  /^application\/(connect\+)?(?:(json)(?:; ?charset=utf-?8)?|(proto))$/i,
];

/** The Fastify route handler of each RPC path. */
export type RpcHandlers = ReadonlyMap<string, RouteHandlerMethod>;

export interface LazyConnectOptions {
  /** The RPC paths to register (RPC_PATHS). */
  readonly paths: readonly string[];
  /** Imports and builds the handlers, in this plugin's scope; called once, on the first call. */
  readonly load: (scope: FastifyInstance) => Promise<RpcHandlers>;
}

/**
 * Registers the RPC routes; the first request on any of them loads the handlers (`load`), which
 * every later one reuses. Requests that arrive while they load wait for the same import. A failed
 * import answers that request with an internal error and is tried again by the next one.
 */
export async function lazyConnectRoutes(app: FastifyInstance, options: LazyConnectOptions): Promise<void> {
  app.addHook("onRequest", async (request) => drainUnreadBodyAfterAnswer(request.raw));
  const noop = (_request: unknown, _payload: unknown, done: (error: null, body: undefined) => void) =>
    done(null, undefined);
  app.addContentTypeParser([...CONNECT_CONTENT_TYPES], noop);
  for (const pattern of CONNECT_CONTENT_TYPE_PATTERNS) app.addContentTypeParser(pattern, noop);
  const handlers = lazyImport(() => options.load(app));
  for (const path of options.paths) {
    app.all(path, async function rpc(request, reply) {
      const handler = (await handlers()).get(path);
      // A path in RPC_PATHS that no service registers: a bug connect-lazy.test.ts catches.
      if (handler === undefined) throw new Error(`no RPC handler for ${path}`);
      return handler.call(this, request, reply);
    });
  }
}

/**
 * `load` once: every caller gets the same promise; a rejected one is forgotten, so the next call
 * tries again instead of failing for the life of the process.
 */
export function lazyImport<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    loading ??= load().catch((error: unknown) => {
      loading = undefined;
      throw error;
    });
    return loading;
  };
}

/**
 * After the answer, an HTTP/2 request body the client is still sending (answered early: over the
 * size limit, say) is read into nothing until the client has sent it, so the call ends. Connect
 * stops reading such a body and destroys the request object, and node's compatibility layer then
 * pauses the stream at every chunk it cannot deliver: the stream would stay open (holding a
 * graceful stop) until the client gave up.
 */
function drainUnreadBodyAfterAnswer(raw: IncomingMessage | Http2ServerRequest): void {
  if (!("stream" in raw)) return;
  const stream = raw.stream;
  // 'finish': the answer has been handed to the session.
  stream.once("finish", () => {
    if (raw.readableEnded || stream.readableEnded || stream.destroyed) return;
    stream.removeAllListeners("data");
    stream.on("data", () => {});
    stream.resume();
  });
}
