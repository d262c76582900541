import type { Limits } from "../config.js";
import { EventsDbError, invalidArgument } from "../errors.js";
import type { ExtensionValue, NewEvent } from "./event.js";
import { type ParsedTime, parseTime } from "./time.js";

/** Longest source, type, subject, CloudEvents id and datacontenttype, in characters (VARCHAR(255)). */
export const MAX_ATTRIBUTE_CHARS = 255;
/** Longest dataschema URI (VARCHAR(1024)). */
export const MAX_DATASCHEMA_CHARS = 1024;
/** Most extension attributes on one event. */
export const MAX_EXTENSIONS = 64;
/** Longest extension string value, in characters. */
export const MAX_EXTENSION_VALUE_CHARS = 4096;

/** CloudEvents 1.0 §Attribute Naming Convention: lower-case ASCII letters and digits, at most 20. */
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
/** Context attributes of CloudEvents 1.0 that can never be extensions. */
export const RESERVED_ATTRIBUTES: ReadonlySet<string> = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  "data_base64",
]);
/**
 * The extension attributes that carry an event's place in the tamper-evident chain on CloudEvents
 * reads (lowercase hex): set by the server, so refused on append — a client's own attribute of the
 * same name could never be told apart from the server's.
 */
export const CHAIN_ATTRIBUTES = {
  hash: "eventsdbhash",
  prevHash: "eventsdbprevhash",
  signature: "eventsdbsignature",
} as const;
const CHAIN_ATTRIBUTE_NAMES: ReadonlySet<string> = new Set(Object.values(CHAIN_ATTRIBUTES));
// C0 controls, DEL and C1 controls: invisible in logs and UIs, never meaningful in these attributes.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// RFC 2046 media type, parameters after `;` taken as they are.
const MEDIA_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+\s*(;.*)?$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const INT32_MIN = -2_147_483_648;
const INT32_MAX = 2_147_483_647;

/** Fields of an event as a transport received them, before validation. */
export interface EventFields {
  source: unknown;
  type: unknown;
  subject: unknown;
  ceId?: unknown;
  time?: unknown;
  datacontenttype?: unknown;
  dataschema?: unknown;
  extensions?: Readonly<Record<string, unknown>> | undefined;
  data: Buffer;
}

/**
 * The one validation every transport goes through: attribute presence, lengths, characters,
 * time syntax, extension names and types, and the data size limit.
 */
export function validateEvent(fields: EventFields, limits: Limits, where = ""): NewEvent {
  const at = where === "" ? "" : `${where}: `;
  const required = (name: string, value: unknown): string => {
    if (value === undefined || value === null || value === "")
      throw invalidArgument(`${at}${name} is required`);
    return attribute(name, value, MAX_ATTRIBUTE_CHARS, at);
  };
  const optional = (name: string, value: unknown, max: number): string | undefined =>
    value === undefined || value === null ? undefined : attribute(name, value, max, at);

  const source = required("source", fields.source);
  const type = required("type", fields.type);
  // Optional (CloudEvents 1.0 §subject): absent or null = no subject; if present, non-empty.
  const subject =
    fields.subject === undefined || fields.subject === null
      ? undefined
      : fields.subject === ""
        ? invalid(`${at}subject must not be empty; leave it out for an event without a subject`)
        : validateSubject(fields.subject, at);
  const ceId = fields.ceId === undefined ? undefined : required("id", fields.ceId);

  let time: string | undefined;
  const rawTime = optional("time", fields.time, 64);
  if (rawTime !== undefined) {
    const parsed = parseTime(rawTime);
    if (!("time" in parsed))
      throw invalidArgument(`${at}${TIME_PROBLEMS[parsed.problem](JSON.stringify(rawTime))}`);
    time = parsed.time;
  }

  const datacontenttype = optional("datacontenttype", fields.datacontenttype, MAX_ATTRIBUTE_CHARS);
  if (datacontenttype !== undefined && !MEDIA_TYPE.test(datacontenttype)) {
    throw invalidArgument(`${at}datacontenttype must be a media type like application/json`);
  }
  const dataschema = optional("dataschema", fields.dataschema, MAX_DATASCHEMA_CHARS);
  if (dataschema !== undefined && !URL.canParse(dataschema)) {
    throw invalidArgument(`${at}dataschema must be an absolute URI`);
  }

  const extensions = validateExtensions(fields.extensions, at);

  if (fields.data.length > limits.maxEventBytes) {
    throw new EventsDbError(
      "payload_too_large",
      `${at}data is ${fields.data.length} bytes; the limit is ${limits.maxEventBytes} (--max-event-bytes)`,
    );
  }
  return { source, type, subject, ceId, time, datacontenttype, dataschema, extensions, data: fields.data };
}

/** A subject as events carry it: a non-empty string of at most 255 characters, no controls. */
export function validateSubject(value: unknown, at = ""): string {
  if (value === "") throw invalidArgument(`${at}subject must not be empty`);
  return attribute("subject", value, MAX_ATTRIBUTE_CHARS, at);
}

function invalid(message: string): never {
  throw invalidArgument(message);
}

/** The message for each reason a time is refused, given the time as sent (JSON-quoted). */
const TIME_PROBLEMS: Record<Extract<ParsedTime, { problem: unknown }>["problem"], (time: string) => string> =
  {
    syntax: (time) => `time must be an RFC 3339 timestamp like 2026-01-02T03:04:05Z, got ${time}`,
    "leap-second": (time) =>
      `time ${time} is a leap second (second 60), which this store cannot keep; ` +
      "send the second before or after it",
    range: (time) =>
      `time ${time} falls outside the years 0001 to 9999 in UTC (0001-01-01T00:00:00Z to ` +
      "9999-12-31T23:59:59.999999Z), which this store cannot keep",
  };

function attribute(name: string, value: unknown, max: number, at: string): string {
  if (typeof value !== "string") throw invalidArgument(`${at}${name} must be a string`);
  // Cheap check first: a string of n UTF-16 units has at most n code points.
  if (value.length > max && [...value].length > max) {
    throw invalidArgument(`${at}${name} is longer than ${max} characters`);
  }
  if (CONTROL.test(value)) throw invalidArgument(`${at}${name} must not contain control characters`);
  if (!value.isWellFormed()) throw invalidArgument(`${at}${name} is not valid Unicode`);
  return value;
}

function validateExtensions(
  raw: Readonly<Record<string, unknown>> | undefined,
  at: string,
): Record<string, ExtensionValue> | undefined {
  if (raw === undefined) return undefined;
  const names = Object.keys(raw);
  if (names.length === 0) return undefined;
  if (names.length > MAX_EXTENSIONS)
    throw invalidArgument(`${at}more than ${MAX_EXTENSIONS} extension attributes`);
  const out: Record<string, ExtensionValue> = Object.create(null);
  let count = 0;
  for (const name of names.sort()) {
    const value = raw[name];
    if (value === null || value === undefined) continue; // JSON null = attribute absent
    if (!EXTENSION_NAME.test(name)) {
      throw invalidArgument(
        `${at}extension attribute name ${JSON.stringify(name)} must be 1-20 lower-case letters or digits`,
      );
    }
    if (RESERVED_ATTRIBUTES.has(name)) throw invalidArgument(`${at}${name} cannot be an extension attribute`);
    if (CHAIN_ATTRIBUTE_NAMES.has(name)) {
      throw invalidArgument(
        `${at}${name} is set by the server on reads (the event's chain hash, its predecessor's, its signature) and cannot be sent`,
      );
    }
    if (typeof value === "string") {
      out[name] = attribute(name, value, MAX_EXTENSION_VALUE_CHARS, at);
    } else if (typeof value === "boolean") {
      out[name] = value;
    } else if (
      typeof value === "number" &&
      Number.isInteger(value) &&
      value >= INT32_MIN &&
      value <= INT32_MAX
    ) {
      out[name] = value;
    } else {
      throw invalidArgument(`${at}extension ${name} must be a string, a boolean or a 32-bit integer`);
    }
    count++;
  }
  return count === 0 ? undefined : out;
}

/**
 * Strict standard base64 (RFC 4648 §4) with padding: rejects other alphabets, whitespace, missing
 * padding and non-zero pad bits, which Node's lenient decoder would silently accept.
 */
export function decodeBase64(value: unknown, name: string, where = ""): Buffer {
  const at = where === "" ? "" : `${where}: `;
  if (typeof value !== "string") throw invalidArgument(`${at}${name} must be a base64 string`);
  if (value.length % 4 !== 0 || !BASE64.test(value)) {
    throw invalidArgument(`${at}${name} is not valid base64 (standard alphabet, with padding)`);
  }
  const bytes = Buffer.from(value, "base64");
  if (bytes.toString("base64") !== value) throw invalidArgument(`${at}${name} is not canonical base64`);
  return bytes;
}

/** application/json, text/json and any `+json` media type (CloudEvents JSON format §3.1). */
export function isJsonContentType(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const semi = contentType.indexOf(";");
  const media = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  return media === "application/json" || media === "text/json" || media.endsWith("+json");
}
