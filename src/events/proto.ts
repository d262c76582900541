import { create, fromBinary } from "@bufbuild/protobuf";
import type { Limits } from "../config.js";
import { invalidArgument } from "../errors.js";
import {
  type ChainLink,
  ChainLinkSchema,
  type CreateEventReply,
  CreateEventReplySchema,
  type CreateEventRequest,
  CreateEventRequestSchema,
  type CreateEventsReply,
  CreateEventsReplySchema,
  type CreateEventsRequest,
  CreateEventsRequestSchema,
  type Event,
  EventSchema,
  type Precondition as PreconditionMessage,
} from "../gen/grpc/eventsdb_pb.js";
import { canonicalJson } from "./chain.js";
import type { EventFilter, NewEvent, Precondition, StoredEvent } from "./event.js";
import { displayTime } from "./time.js";
import { validateEvent } from "./validate.js";

/**
 * Events as the messages of `grpc.EventsDB` (proto/grpc/eventsdb.proto), both ways. Every gRPC
 * path (the Connect service and the unary fast path) converts here, so they cannot differ.
 */

/**
 * A CreateEventRequest as a validated event; proto3 strings are "" when unset, which means absent
 * (a subject of "" is an event without a subject).
 */
export function toNewEvent(request: CreateEventRequest, limits: Limits, where = ""): NewEvent {
  const data = Buffer.from(request.data.buffer, request.data.byteOffset, request.data.byteLength);
  return validateEvent(
    {
      source: request.source,
      type: request.type,
      subject: request.subject === "" ? undefined : request.subject,
      ceId: request.id === "" ? undefined : request.id,
      time: request.time === "" ? undefined : request.time,
      datacontenttype: request.datacontenttype === "" ? undefined : request.datacontenttype,
      dataschema: request.dataschema === "" ? undefined : request.dataschema,
      extensions: request.extensions,
      data,
    },
    limits,
    where,
  );
}

/** The events of a CreateEvents request, validated; each error names its event. */
function toNewEvents(requests: readonly CreateEventRequest[], limits: Limits): NewEvent[] {
  return requests.map((event, i) => {
    if (event.preconditions.length > 0) {
      throw invalidArgument(`event ${i}: set preconditions on CreateEventsRequest, not on its events`);
    }
    return toNewEvent(event, limits, `event ${i}`);
  });
}

/** The events and preconditions of a CreateEvent or CreateEvents request (Connect and the fast path). */
export function toAppendInput(
  request: CreateEventRequest | CreateEventsRequest,
  limits: Limits,
): { events: NewEvent[]; preconditions: Precondition[] } {
  return request.$typeName === "grpc.CreateEventsRequest"
    ? { events: toNewEvents(request.events, limits), preconditions: toPreconditions(request.preconditions) }
    : { events: [toNewEvent(request, limits)], preconditions: toPreconditions(request.preconditions) };
}

/** Preconditions as the domain's, shape only (EventLog.append validates subjects and ids). */
export function toPreconditions(messages: readonly PreconditionMessage[]): Precondition[] {
  return messages.map((message, i): Precondition => {
    const condition = message.condition;
    switch (condition.case) {
      case "pristine":
        return { kind: "pristine", subject: condition.value };
      case "populated":
        return { kind: "populated", subject: condition.value };
      case "onEvent":
        return {
          kind: "on_event",
          subject: condition.value.subject,
          id: toSafeId(condition.value.id, `precondition ${i}: id`),
        };
      default:
        throw invalidArgument(`precondition ${i}: set one of pristine, populated, on_event`);
    }
  });
}

/** The events and preconditions of a binary CreateEvent (`batch` false) or CreateEvents message. */
export function decodeAppend(
  batch: boolean,
  message: Uint8Array,
  limits: Limits,
): { events: NewEvent[]; preconditions: Precondition[] } {
  return toAppendInput(parseAppend(batch, message), limits);
}

/** The protobuf of CreateEvents (`batch`) or CreateEvent, not yet validated. */
export function parseAppend(batch: true, message: Uint8Array): CreateEventsRequest;
export function parseAppend(batch: false, message: Uint8Array): CreateEventRequest;
export function parseAppend(batch: boolean, message: Uint8Array): CreateEventRequest | CreateEventsRequest;
export function parseAppend(batch: boolean, message: Uint8Array): CreateEventRequest | CreateEventsRequest {
  return batch
    ? parse(() => fromBinary(CreateEventsRequestSchema, message))
    : parse(() => fromBinary(CreateEventRequestSchema, message));
}

/** Not protobuf: worded as the Connect library words it, with the code its contract promises. */
function parse<T>(decode: () => T): T {
  try {
    return decode();
  } catch (error) {
    throw invalidArgument(`parse binary: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** The reply to CreateEvent (`batch` false: one id) or CreateEvents. */
export function appendReply(batch: false, ids: readonly number[]): CreateEventReply;
export function appendReply(batch: true, ids: readonly number[]): CreateEventsReply;
export function appendReply(batch: boolean, ids: readonly number[]): CreateEventReply | CreateEventsReply;
export function appendReply(batch: boolean, ids: readonly number[]): CreateEventReply | CreateEventsReply {
  if (batch) return create(CreateEventsReplySchema, { ids: ids.map(BigInt) });
  return create(CreateEventReplySchema, { id: BigInt(ids[0] as number) });
}

/**
 * A stored event as the Event message; absent attributes are "" (proto3 has no absent string),
 * the subject of an event without one included, and absent chain fields empty bytes.
 */
export function toProto(event: StoredEvent): Event {
  const extensions: Record<string, string> = {};
  if (event.extensions !== undefined) {
    for (const [name, value] of Object.entries(event.extensions)) extensions[name] = String(value);
  }
  return create(EventSchema, {
    id: BigInt(event.id),
    source: event.source,
    type: event.type,
    subject: event.subject ?? "",
    time: displayTime(event.time),
    data: event.data,
    ceId: event.ceId ?? "",
    datacontenttype: event.datacontenttype ?? "",
    dataschema: event.dataschema ?? "",
    extensions,
    hash: event.hash ?? EMPTY,
    prevHash: event.prevHash ?? EMPTY,
    signature: event.signature ?? EMPTY,
  });
}

const EMPTY = new Uint8Array(0);

/**
 * A link of the chain as the ChainLink message: a tombstone has `deleted` and no event; a stored
 * event comes as GetEventByID answers it, with its extensions also as the JSON the hash covers.
 */
export function toChainLink(event: StoredEvent): ChainLink {
  const deleted = event.deleted === true;
  return create(ChainLinkSchema, {
    id: BigInt(event.id),
    hash: event.hash ?? EMPTY,
    prevHash: event.prevHash ?? EMPTY,
    signature: event.signature ?? EMPTY,
    deleted,
    ...(deleted ? {} : { event: toProto(event) }),
    extensionsJson: deleted || event.extensions === undefined ? "" : canonicalJson(event.extensions),
  });
}

/** The filter of a stream, page or delete request: "" = all subjects, no type. */
export function toFilter(request: { subject: string; type?: string; recursive?: boolean }): EventFilter {
  return {
    subjects: request.subject === "" ? [] : [request.subject],
    recursive: request.recursive ?? false,
    type: request.type === undefined || request.type === "" ? undefined : request.type,
  };
}

/** An int64 id as a number; ids beyond 2^53 - 1 (or negative) cannot exist and are refused. */
export function toSafeId(value: bigint, name: string): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`${name} is out of range`);
  return Number(value);
}
