import { invalidArgument } from "../../errors.js";
import type { Precondition } from "../../events/event.js";
import { isObject } from "../../events/formats.js";

/** The request header of every REST append mode (simple JSON, structured, binary, batch). */
export const PRECONDITIONS_HEADER = "eventsdb-preconditions";

/** Longest header value read, in bytes (Node refuses all headers together beyond 16 KiB anyway). */
export const MAX_PRECONDITIONS_HEADER_BYTES = 8192;

const HEADER = "EventsDB-Preconditions";

/**
 * The preconditions of a REST append from its `EventsDB-Preconditions` header, in EventSourcingDB's
 * shape: a JSON array of `{"type": "isSubjectPristine" | "isSubjectPopulated", "payload":
 * {"subject": …}}` and `{"type": "isSubjectOnEventId", "payload": {"subject": …, "eventId": "7"}}`
 * (eventId a decimal string or a number). Absent = none. Only the shape is checked here; subjects,
 * ids and the count are EventLog.append's (one rule for every transport).
 */
export function parsePreconditionsHeader(value: string | string[] | undefined): Precondition[] {
  if (value === undefined) return [];
  if (Array.isArray(value)) throw invalidArgument(`${HEADER} must be sent once`);
  if (Buffer.byteLength(value) > MAX_PRECONDITIONS_HEADER_BYTES) {
    throw invalidArgument(`${HEADER} is longer than ${MAX_PRECONDITIONS_HEADER_BYTES} bytes`);
  }
  let items: unknown;
  try {
    items = JSON.parse(value);
  } catch (error) {
    throw invalidArgument(`${HEADER} is not JSON: ${(error as Error).message}`);
  }
  if (!Array.isArray(items)) throw invalidArgument(`${HEADER} must be a JSON array of preconditions`);
  return items.map((item, i) => toPrecondition(item, `${HEADER} [${i}]`));
}

function toPrecondition(item: unknown, at: string): Precondition {
  if (!isObject(item)) throw invalidArgument(`${at} must be an object with type and payload`);
  const payload = item.payload;
  if (!isObject(payload)) throw invalidArgument(`${at}: payload must be an object`);
  const subject = payload.subject;
  if (typeof subject !== "string") throw invalidArgument(`${at}: payload.subject must be a string`);
  switch (item.type) {
    case "isSubjectPristine":
      return { kind: "pristine", subject };
    case "isSubjectPopulated":
      return { kind: "populated", subject };
    case "isSubjectOnEventId":
      return { kind: "on_event", subject, id: eventId(payload.eventId, at) };
    default:
      throw invalidArgument(
        `${at}: type must be isSubjectPristine, isSubjectPopulated or isSubjectOnEventId, not ${JSON.stringify(item.type) ?? "absent"}`,
      );
  }
}

/** A decimal string (EventSourcingDB's ids are strings) or a number; the range is checked by the core. */
function eventId(value: unknown, at: string): number {
  if (typeof value === "number" && Number.isInteger(value)) return value;
  if (typeof value === "string" && /^[0-9]{1,16}$/.test(value)) return Number(value);
  throw invalidArgument(`${at}: payload.eventId must be an event id (a decimal string or an integer)`);
}
