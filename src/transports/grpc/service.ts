import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { create } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextKey,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import type { FastifyBaseLogger } from "fastify";
import { ANYONE, type Principal } from "../../auth/tokens.js";
import type { Config } from "../../config.js";
import type { StoredEvent } from "../../events/event.js";
import { DEFAULT_PAGE_LIMIT } from "../../events/event-log.js";
import { appendReply, toAppendInput, toChainLink, toFilter, toProto, toSafeId } from "../../events/proto.js";
import {
  EventsDB,
  type StreamEventsFromSubjectReply,
  StreamEventsFromSubjectReplySchema,
  type StreamEventsFromSubjectRequest,
} from "../../gen/grpc/eventsdb_pb.js";
import type { CloseReason } from "../../hub/subscription.js";
import type { Operation } from "../../metrics.js";
import type { SubscriptionService } from "../../subscriptions/service.js";
import { type AppendDeps, append } from "../append.js";
import type { Outbound } from "../outbound.js";
import type { Pipeline } from "../pipeline.js";
import { connectCode } from "../status.js";
import type { StreamPump } from "../stream-pump.js";
import { connectHandlers } from "./connect-adapter.js";
import type { RpcHandlers } from "./lazy.js";
import { subscriptionFromProto, subscriptionToProto } from "./subscriptions.js";

export interface ConnectDeps extends AppendDeps {
  readonly config: Config;
  /** Reserves page answers per connection, drops responses unwritable for --write-timeout. */
  readonly outbound: Outbound;
  /** Opens server streams, logs them, measures delivery lag (shared with SSE). */
  readonly pump: StreamPump;
  /** Turns a handler's failure into the domain error to answer, logging bugs (as for REST). */
  readonly pipeline: Pipeline;
  /** Managing push subscriptions (the same service as REST's /subscriptions). */
  readonly subscriptions: SubscriptionService;
  /** Extra services (health, reflection) registered on the same router. */
  readonly extraRoutes?: (router: ConnectRouter) => void;
}

/**
 * `grpc.EventsDB` over gRPC (HTTP/2), gRPC-Web and the Connect protocol, on the same Fastify app.
 * Handlers are thin: they translate messages and call the same EventLog and subscription engine
 * as REST and SSE. The route handler of each RPC path, for lazy.ts's routes (registered in a scope
 * of their own: the no-op content-type parsers must not reach the REST routes); `log` is that
 * scope's logger.
 */
export function connectRoutes(log: FastifyBaseLogger, deps: ConnectDeps): RpcHandlers {
  const { config, eventLog, metrics, outbound, pump, pipeline, subscriptions } = deps;
  const limits = eventLog.limits;
  /** Domain errors keep their message with the mapped code; bugs are logged and INTERNAL without detail. */
  const toConnectError = (error: unknown): ConnectError => {
    if (error instanceof ConnectError) return error;
    const domain = pipeline.failure(error);
    return new ConnectError(domain.message, connectCode(domain.code));
  };
  const rpc = <T>(answer: Promise<T>): Promise<T> =>
    answer.catch((error: unknown) => {
      throw toConnectError(error);
    });
  const observe = <T>(operation: Operation, fn: () => Promise<T>): Promise<T> =>
    rpc(metrics.observe(operation, fn));

  const routes = (router: ConnectRouter) => {
    router.service(EventsDB, {
      createEvent: (request, context) =>
        rpc(
          append(deps, {
            batch: false,
            principal: caller(context),
            decode: () => toAppendInput(request, limits),
            encode: (ids) => appendReply(false, ids),
          }),
        ),
      createEvents: (request, context) =>
        rpc(
          append(deps, {
            batch: true,
            principal: caller(context),
            decode: () => toAppendInput(request, limits),
            encode: (ids) => appendReply(true, ids),
          }),
        ),
      getEventByID: (request, context) =>
        observe("get_event", async () => {
          const id = toSafeId(request.id, "id");
          const { events } = await readReserved(outbound, context, 1, async () => ({
            events: [await eventLog.get(id, caller(context))],
          }));
          return toProto(events[0] as StoredEvent);
        }),
      getHistoricEventsFromSubject: (request, context) =>
        observe("historic_events", async () => {
          const query = {
            ...toFilter(request),
            fromId: toSafeId(request.fromId ?? 0n, "from_id"),
            limit: request.limit ?? DEFAULT_PAGE_LIMIT,
          };
          // Reserved before the read: a connection that does not read its answers gets no more.
          const page = await readReserved(outbound, context, query.limit, () =>
            eventLog.page(query, caller(context)),
          );
          // The cursor is the page's own (one rule with REST's next_from_id, see Page.nextFromId).
          return {
            events: page.events.map(toProto),
            hasMore: page.hasMore,
            nextFromId: BigInt(page.nextFromId),
          };
        }),
      deleteFromSubject: (request, context) =>
        observe("delete_events", async () => ({
          deleted: BigInt(
            await eventLog.delete(
              toFilter(request),
              toSafeId(request.fromId ?? 0n, "from_id"),
              caller(context),
            ),
          ),
        })),
      listSubjects: (request, context) =>
        observe("list_subjects", () =>
          eventLog.subjectPage(
            { prefix: request.prefix, after: request.after ?? "", limit: request.limit },
            caller(context),
          ),
        ),
      getChain: (request, context) =>
        observe("read_chain", async () => {
          const query = {
            fromId: toSafeId(request.fromId ?? 0n, "from_id"),
            limit: request.limit ?? DEFAULT_PAGE_LIMIT,
          };
          const page = await readReserved(outbound, context, query.limit, () =>
            eventLog.chain(query, caller(context)),
          );
          return {
            links: page.events.map(toChainLink),
            hasMore: page.hasMore,
            nextFromId: BigInt(page.nextFromId),
          };
        }),
      createSubscription: (request, context) =>
        rpc(
          subscriptions
            .create(caller(context), subscriptionFromProto(request.subscription))
            .then(subscriptionToProto),
        ),
      listSubscriptions: (_request, context) =>
        rpc(
          subscriptions
            .list(caller(context))
            .then((list) => ({ subscriptions: list.map(subscriptionToProto) })),
        ),
      getSubscription: (request, context) =>
        rpc(subscriptions.get(caller(context), request.id).then(subscriptionToProto)),
      updateSubscription: (request, context) => {
        const body = subscriptionFromProto(request.subscription);
        if (request.removeSinkcredential) body.sinkcredential = null;
        return rpc(subscriptions.update(caller(context), request.id, body).then(subscriptionToProto));
      },
      deleteSubscription: (request, context) =>
        rpc(subscriptions.delete(caller(context), request.id).then(() => ({}))),
      redriveSubscription: (request, context) =>
        rpc(
          subscriptions
            .redrive(caller(context), request.id, request.fromNow ? "now" : request.fromId?.toString())
            .then(subscriptionToProto),
        ),
      streamEventsFromSubject: (request, context) =>
        streamEvents({ pump, config, log, toConnectError }, request, context),
    });
    deps.extraRoutes?.(router);
  };

  return connectHandlers({
    routes,
    readMaxBytes: limits.maxBodyBytes,
    contextValues: (request) =>
      createContextValues()
        .set(RAW_REQUEST, request.raw)
        .set(CLIENT_ADDRESS, request.ip)
        .set(PRINCIPAL, request.principal),
  });
}

/** The Node request under a call: its connection, and whether --write-timeout dropped its response. */
const RAW_REQUEST = createContextKey<IncomingMessage | Http2ServerRequest | undefined>(undefined, {
  description: "the raw Node request",
});

/** The caller's address as Fastify sees it (anonymous callers count per address for stream limits). */
const CLIENT_ADDRESS = createContextKey<string>("", { description: "the client address" });

/** A read reserved on the call's connection (see Outbound.readReserved). */
function readReserved<P extends { readonly events: readonly StoredEvent[] }>(
  outbound: Outbound,
  context: HandlerContext,
  limit: number,
  read: () => Promise<P>,
): Promise<P> {
  return outbound.readReserved(context.values.get(RAW_REQUEST), limit, read);
}

/**
 * Catch-up pages as one message each, then live events that arrive together in one message,
 * never more than --stream-batch-size events or --client-buffer-bytes bytes per message (at least
 * one event). Ends when the client cancels; on shutdown with UNAVAILABLE (reconnect and resume
 * from the last id), when the credential stops being valid with UNAUTHENTICATED.
 */
async function* streamEvents(
  { pump, config, log, toConnectError }: StreamDeps,
  request: StreamEventsFromSubjectRequest,
  context: HandlerContext,
): AsyncGenerator<StreamEventsFromSubjectReply> {
  const principal = caller(context);
  let subscription: ReturnType<StreamPump["open"]>;
  try {
    subscription = pump.open(
      () => ({
        filter: toFilter(request),
        fromId: toSafeId(request.fromId ?? 0n, "from_id"),
        batchSize: config.streams.streamBatchSize,
        signal: context.signal,
        address: context.values.get(CLIENT_ADDRESS),
      }),
      principal,
    );
  } catch (error) {
    throw toConnectError(error);
  }
  const stream = {
    subscription,
    raw: context.values.get(RAW_REQUEST),
    log,
    caller: principal,
    transport: "grpc",
  };
  try {
    // The yield returns once Connect has written the message; a client that stops reading keeps
    // it pending (flow control) until Outbound drops the response after --write-timeout.
    for await (const batch of pump.batches(stream)) {
      yield create(StreamEventsFromSubjectReplySchema, { events: batch.map(toProto) });
    }
  } catch (error) {
    throw toConnectError(error);
  }
  const ended = streamEnd(subscription.closeReason ?? "client left");
  if (ended !== undefined) throw ended;
}

interface StreamDeps {
  readonly pump: StreamPump;
  readonly config: Config;
  readonly log: FastifyBaseLogger;
  readonly toConnectError: (error: unknown) => ConnectError;
}

/** The status a stream the server ended closes with; undefined = OK (the client is gone anyway). */
function streamEnd(reason: CloseReason): ConnectError | undefined {
  switch (reason) {
    case "client left":
    case "write timeout":
    case "error":
      return undefined;
    case "shutdown":
      // Not OK: a client must not take a shutdown for the end of the stream, but reconnect and resume.
      return new ConnectError(
        "the server is shutting down; reconnect and resume after the last id",
        Code.Unavailable,
      );
    case "revoked":
      return new ConnectError("the credential is no longer valid (revoked or expired)", Code.Unauthenticated);
  }
}

/** The principal of a Connect call, from the pipeline (pipeline.ts). */
export const PRINCIPAL = createContextKey<Principal>(ANYONE, { description: "caller" });

/** The authenticated caller (the pipeline refuses unauthenticated calls before they get here). */
function caller(context: HandlerContext): Principal {
  return context.values.get(PRINCIPAL);
}
