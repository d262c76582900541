import { isUtf8 } from "node:buffer";
import type { Limits } from "../config.js";
import { invalidArgument } from "../errors.js";
import type { ExtensionValue, NewEvent, StoredEvent } from "./event.js";
import { isJsonWhitespace, memberValue } from "./json-text.js";
import { displayTime } from "./time.js";
import {
  CHAIN_ATTRIBUTES,
  decodeBase64,
  isJsonContentType,
  RESERVED_ATTRIBUTES,
  validateEvent,
} from "./validate.js";

/**
 * The two JSON shapes of an event: the simple format of the original Events DB
 * (`{source, type, subject, data: base64}`) and CloudEvents 1.0 structured mode (JSON event format).
 *
 * Parsing is written here rather than with the `cloudevents` SDK's `HTTP.toEvent` on purpose: the SDK
 * invents an `id` and `time` when they are missing (which would break idempotency on (source, id)),
 * validates with ajv per event (too slow for the hot path), and cannot give the precise 400 messages
 * and limits this store promises. Tests use the SDK's emitters as independent clients.
 */

type Json = Record<string, unknown>;

/** A JSON object (not an array, not null). */
export function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The simple format; unknown fields are ignored (compat: Go's JSON decoder did the same). */
export function fromSimpleJson(body: unknown, limits: Limits, where = ""): NewEvent {
  if (!isObject(body))
    throw invalidArgument(`${where === "" ? "" : `${where}: `}event must be a JSON object`);
  const data =
    body.data === undefined || body.data === null ? Buffer.alloc(0) : decodeBase64(body.data, "data", where);
  return validateEvent({ source: body.source, type: body.type, subject: body.subject, data }, limits, where);
}

/**
 * CloudEvents JSON format (structured mode), specversion 1.0 or 0.3 (stored as 1.0, see
 * {@link isVersion03}). `text` is the object's own JSON text as it came in (a slice of the request
 * body), `body` what JSON.parse made of it: JSON data is stored as the text it was sent in, not as
 * JSON.stringify would write the parsed value again.
 */
export function fromStructured(body: unknown, text: Buffer, limits: Limits, where = ""): NewEvent {
  const at = where === "" ? "" : `${where}: `;
  if (!isObject(body)) throw invalidArgument(`${at}a CloudEvent must be a JSON object`);
  const v03 = isVersion03(body.specversion, "specversion", at);
  if (body.id === undefined || body.id === null || body.id === "")
    throw invalidArgument(`${at}id is required`);
  if (v03) refuseNot03(Object.keys(body), "", at);
  const datacontenttype = body.datacontenttype ?? undefined;
  let data: Buffer;
  const hasData = body.data !== undefined && body.data !== null;
  const hasBase64 = body.data_base64 !== undefined && body.data_base64 !== null;
  if (v03 && isBase64Encoding(body.datacontentencoding, "datacontentencoding", at)) {
    // 0.3 JSON format §3.1: with datacontentencoding base64, data is the base64 string of the bytes.
    data = hasData ? decodeBase64(body.data, "data", where) : Buffer.alloc(0);
  } else if (hasData && hasBase64) {
    throw invalidArgument(`${at}data and data_base64 must not both be present`);
  } else if (hasBase64) {
    data = decodeBase64(body.data_base64, "data_base64", where);
  } else if (!hasData) {
    data = Buffer.alloc(0);
  } else if (datacontenttype === undefined || isJsonContentType(String(datacontenttype))) {
    // JSON event format §3.1: with a JSON (or absent) datacontenttype, data is the JSON value itself,
    // kept as its source text (`1.0`, `-0`, big integers and spacing included). A copy: a slice
    // would keep the whole request body alive as long as the event is buffered.
    data = Buffer.from(jsonMemberText(text, "data"));
  } else if (typeof body.data === "string") {
    data = Buffer.from(body.data, "utf8");
  } else {
    throw invalidArgument(
      `${at}data must be a string when datacontenttype is not JSON; send binary data as data_base64`,
    );
  }
  const reserved = v03 ? RESERVED_ATTRIBUTES_03 : RESERVED_ATTRIBUTES;
  const extensions: Json = Object.create(null);
  for (const key of Object.keys(body)) {
    if (!reserved.has(key)) extensions[key] = body[key];
  }
  return validateEvent(
    {
      source: body.source,
      type: body.type,
      subject: body.subject,
      ceId: body.id,
      time: body.time,
      datacontenttype,
      dataschema: v03 ? body.schemaurl : body.dataschema,
      extensions,
      data,
    },
    limits,
    where,
  );
}

/**
 * The context attributes of CloudEvents 0.3 (spec v0.3 §Context Attributes, JSON format §2.1);
 * every other member or ce- header is an extension. 0.3 events are stored as 1.0, as the 1.0
 * spec maps them: `schemaurl` is `dataschema`, and data sent with `datacontentencoding: base64`
 * is stored as the bytes it encodes.
 */
const RESERVED_ATTRIBUTES_03: ReadonlySet<string> = new Set([
  ...[...RESERVED_ATTRIBUTES].filter((name) => name !== "dataschema" && name !== "data_base64"),
  "schemaurl",
  "datacontentencoding",
]);

/** 1.0 names that 0.3 spells otherwise or lacks: in a 0.3 event they would be stored as 1.0's own. */
const NOT_IN_03: ReadonlyMap<string, string> = new Map([
  ["dataschema", "schemaurl"],
  ["data_base64", "data with datacontentencoding base64"],
]);

/** True for specversion 0.3, false for 1.0; any other value is refused. `name` as the client sent it. */
function isVersion03(value: unknown, name: string, at: string): boolean {
  if (value === "1.0") return false;
  if (value === "0.3") return true;
  throw invalidArgument(`${at}${name} must be "1.0" or "0.3", got ${JSON.stringify(value ?? null)}`);
}

/** Refuses the 1.0 attribute names of {@link NOT_IN_03} in a 0.3 event (`prefix`: "ce-" in headers). */
function refuseNot03(names: Iterable<string>, prefix: string, at: string): void {
  for (const name of names) {
    const instead = NOT_IN_03.get(name);
    if (instead !== undefined) {
      throw invalidArgument(
        `${at}${prefix}${name} is not a CloudEvents 0.3 attribute; 0.3 sends ${prefix}${instead}`,
      );
    }
  }
}

/** 0.3's datacontentencoding: absent = none, "base64" (RFC 2045 §6.1, any case) = base64; else refused. */
function isBase64Encoding(value: unknown, name: string, at: string): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value === "string" && value.toLowerCase() === "base64") return true;
  throw invalidArgument(`${at}${name} must be "base64" (the one encoding CloudEvents 0.3 defines)`);
}

/** The source text of a member that JSON.parse found in `text` (which it accepted). */
function jsonMemberText(text: Buffer, name: string): Buffer {
  const span = memberValue(text, name);
  if (span === undefined) throw new Error(`member ${name} not found in text JSON.parse accepted`);
  return text.subarray(span.start, span.end);
}

/**
 * Either JSON shape: a body with `specversion` is a structured CloudEvent, otherwise the simple format.
 * `text` is the object's JSON text, as for {@link fromStructured}.
 */
export function fromJsonEvent(body: unknown, text: Buffer, limits: Limits, where = ""): NewEvent {
  return isObject(body) && "specversion" in body
    ? fromStructured(body, text, limits, where)
    : fromSimpleJson(body, limits, where);
}

/**
 * CloudEvents HTTP binding §3.1 binary mode: attributes in `ce-*` headers (values percent-encoded,
 * §3.1.3.2), Content-Type is datacontenttype, the body is the data. specversion 1.0 or 0.3 (whose
 * binding also has `ce-schemaurl` and `ce-datacontentencoding`), stored as 1.0.
 */
export function fromBinary(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: Buffer,
  limits: Limits,
): NewEvent {
  const attrs: Record<string, string> = Object.create(null);
  for (const [name, value] of Object.entries(headers)) {
    if (!name.startsWith("ce-") || value === undefined) continue;
    const raw = unquote(Array.isArray(value) ? value.join(",") : value);
    try {
      attrs[name.slice(3)] = decodeURIComponent(raw);
    } catch {
      throw invalidArgument(`header ${name} has an invalid percent-encoding`);
    }
  }
  const v03 = isVersion03(attrs.specversion, "ce-specversion", "");
  if (attrs.id === undefined || attrs.id === "") throw invalidArgument("ce-id is required");
  if (v03) refuseNot03(Object.keys(attrs), "ce-", "");
  // A null prototype: an attribute named __proto__ must be a key like any other (and be refused).
  const extensions: Record<string, string> = Object.create(null);
  const reserved = v03 ? RESERVED_ATTRIBUTES_03 : RESERVED_ATTRIBUTES;
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "datacontenttype")
      throw invalidArgument("binary mode carries datacontenttype in Content-Type");
    if (name === "data" || name === "data_base64")
      throw invalidArgument(`binary mode carries the data in the body, not ce-${name}`);
    if (reserved.has(name)) continue;
    extensions[name] = value;
  }
  // 0.3 binary mode with ce-datacontentencoding: base64: the body is the base64 text of the data.
  const data =
    v03 && isBase64Encoding(attrs.datacontentencoding, "ce-datacontentencoding", "")
      ? decodeBase64(body.toString("latin1"), "the body (ce-datacontentencoding: base64)")
      : body;
  // No Content-Type: the data's type is unknown, and the event has no datacontenttype (binding §3.1.1).
  const contentType = headers["content-type"];
  return validateEvent(
    {
      source: attrs.source,
      type: attrs.type,
      subject: attrs.subject,
      ceId: attrs.id,
      time: attrs.time,
      datacontenttype: typeof contentType === "string" && contentType !== "" ? contentType : undefined,
      dataschema: v03 ? attrs.schemaurl : attrs.dataschema,
      extensions,
      data,
    },
    limits,
  );
}

/**
 * HTTP binding §3.1.3.2 (1.0.2): a header value is first unescaped "with respect to double-quoted
 * strings" (RFC 7230 §3.2.6), then percent-decoded once — older producers sent `"value"` with
 * backslash escapes. A value that is one quoted-string as a whole loses its quotes and escapes;
 * any other value, such as `{"a": 5}` (quotes inside, as older producers also sent), is kept as it
 * is, since it is not a quoted-string.
 */
export function unquote(value: string): string {
  if (value.length < 2 || value[0] !== '"' || value[value.length - 1] !== '"') return value;
  let out = "";
  for (let i = 1; i < value.length - 1; i++) {
    const c = value[i] as string;
    if (c === '"') return value; // a quote inside: not one quoted-string
    if (c === "\\") {
      if (i + 1 === value.length - 1) return value; // the closing quote is escaped
      i++;
      out += value[i];
    } else out += c;
  }
  return out;
}

/** The simple read format of Events DB, with the CloudEvents attributes it lacks added when present. */
export interface SimpleEventJson {
  id: number;
  source: string;
  type: string;
  /** Absent for an event without a subject (the key is left out, never "" or null). */
  subject?: string;
  time: string;
  data: string;
  ce_id?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions?: Record<string, ExtensionValue>;
  /** The event's chain hash (src/events/chain.ts), lowercase hex; absent on an event not yet hashed. */
  hash?: string;
  /** Its predecessor's hash, lowercase hex (64 zeros for the first event). */
  prevhash?: string;
  /** Ed25519 over the hash, lowercase hex, when the server signed it. */
  signature?: string;
}

/** The names the chain fields go by in the simple format (CloudEvents: CHAIN_ATTRIBUTES). */
const SIMPLE_CHAIN_FIELDS = { hash: "hash", prevHash: "prevhash", signature: "signature" } as const;

/**
 * An event's chain fields as lowercase hex under `names`, the signature only when signed: none on
 * an event not yet hashed. The one rendering of them for both JSON formats.
 */
function chainFields(
  event: StoredEvent,
  names: Readonly<Record<"hash" | "prevHash" | "signature", string>>,
): Record<string, string> {
  const fields: Record<string, string> = {};
  if (event.hash === undefined || event.prevHash === undefined) return fields;
  fields[names.hash] = event.hash.toString("hex");
  fields[names.prevHash] = event.prevHash.toString("hex");
  if (event.signature !== undefined) fields[names.signature] = event.signature.toString("hex");
  return fields;
}

/**
 * The simple format. What Events DB returned stays as it was; the CloudEvents attributes it lacks
 * and the chain fields (`hash`, `prevhash`, `signature`) are added when present.
 */
export function toSimpleJson(event: StoredEvent): SimpleEventJson {
  const out: SimpleEventJson = {
    id: event.id,
    source: event.source,
    type: event.type,
    ...(event.subject === undefined ? {} : { subject: event.subject }),
    time: displayTime(event.time),
    data: event.data.toString("base64"),
  };
  if (event.ceId !== undefined) out.ce_id = event.ceId;
  if (event.datacontenttype !== undefined) out.datacontenttype = event.datacontenttype;
  if (event.dataschema !== undefined) out.dataschema = event.dataschema;
  if (event.extensions !== undefined) out.extensions = { ...event.extensions };
  return Object.assign(out, chainFields(event, SIMPLE_CHAIN_FIELDS));
}

/** How {@link toStructuredJson} may embed JSON data. */
export interface StructuredOptions {
  /**
   * False where a carriage return cannot travel (an SSE data line: every client turns CR into a
   * line break, HTML §9.2.6): JSON data with one between its tokens goes as data_base64 instead.
   * Line feeds remain; the SSE writer splits them into `data:` lines, which clients join with LF.
   */
  readonly carriageReturns?: boolean;
}

/**
 * An event's JSON text in three parts: what comes before the data, the data's text, and what comes
 * after; joined, they are the JSON. A writer of a large event sends the parts one by one, so the
 * data's text (a megabyte of base64, say) is never copied into a second, larger string.
 */
export interface JsonParts {
  readonly head: string;
  readonly data: string;
  readonly tail: string;
}

/** The simple format as JSON text in parts: `JSON.stringify(toSimpleJson(event))`, split at `data`. */
export function simpleJsonParts(event: StoredEvent): JsonParts {
  // JSON.stringify leaves out an undefined subject, as toSimpleJson does.
  const head = JSON.stringify({
    id: event.id,
    source: event.source,
    type: event.type,
    subject: event.subject,
    time: displayTime(event.time),
  });
  const rest: Omit<SimpleEventJson, "id" | "source" | "type" | "subject" | "time" | "data"> = {};
  if (event.ceId !== undefined) rest.ce_id = event.ceId;
  if (event.datacontenttype !== undefined) rest.datacontenttype = event.datacontenttype;
  if (event.dataschema !== undefined) rest.dataschema = event.dataschema;
  if (event.extensions !== undefined) rest.extensions = { ...event.extensions };
  Object.assign(rest, chainFields(event, SIMPLE_CHAIN_FIELDS));
  const after = JSON.stringify(rest);
  return {
    head: `${head.slice(0, -1)},"data":"`,
    data: event.data.toString("base64"),
    tail: after === "{}" ? '"}' : `",${after.slice(1)}`,
  };
}

/**
 * A structured CloudEvent as JSON text. Its `id` is the producer's, or the server id as a decimal
 * string when the producer gave none. The stored bytes are the event, and every read gives them
 * back exactly (see {@link embeddableJson}): JSON data goes out as the stored text itself, text
 * types as a JSON string, anything else as `data_base64`.
 */
export function toStructuredJson(event: StoredEvent, options: StructuredOptions = {}): string {
  const { head, data, tail } = structuredJsonParts(event, options);
  return head + data + tail;
}

/** {@link toStructuredJson} in parts. */
export function structuredJsonParts(event: StoredEvent, options: StructuredOptions = {}): JsonParts {
  const out: Record<string, unknown> = {
    specversion: "1.0",
    id: event.ceId ?? String(event.id),
    source: event.source,
    type: event.type,
    subject: event.subject, // undefined (no subject): JSON.stringify leaves the member out
    time: displayTime(event.time),
  };
  if (event.datacontenttype !== undefined) out.datacontenttype = event.datacontenttype;
  if (event.dataschema !== undefined) out.dataschema = event.dataschema;
  if (event.extensions !== undefined) Object.assign(out, event.extensions);
  // The chain fields as extension attributes, after the event's own: no client can send these names
  // (validate.ts), and one stored before they were reserved is overridden, not repeated.
  Object.assign(out, chainFields(event, CHAIN_ATTRIBUTES));
  const attributes = JSON.stringify(out);
  if (event.data.length === 0) return { head: attributes, data: "", tail: "" };
  const open = attributes.slice(0, -1);
  const ct = event.datacontenttype;
  const jsonType = ct === undefined || isJsonContentType(ct);
  const json = jsonType ? embeddableJson(event.data, options) : undefined;
  if (json !== undefined) return { head: `${open},"data":`, data: json, tail: "}" };
  if (!jsonType && ct.toLowerCase().startsWith("text/") && isUtf8(event.data)) {
    return { head: `${open},"data":`, data: JSON.stringify(event.data.toString("utf8")), tail: "}" };
  }
  return { head: `${open},"data_base64":"`, data: event.data.toString("base64"), tail: '"}' };
}

/**
 * The stored bytes as a JSON text to embed as `data`, when a reader who extracts the member's text
 * (or parses it) gets exactly these bytes back: valid UTF-8 JSON, no whitespace around it (that
 * belongs to the enclosing object, not to the member), not `null` (a null member reads as an
 * absent one: CloudEvents JSON format, "Type System Mapping"; this store does the same on ingest),
 * and not nested deeper than a reader's JSON.parse can take.
 */
export function embeddableJson(bytes: Buffer, options: StructuredOptions = {}): string | undefined {
  if (bytes.length === 0) return undefined;
  if (isJsonWhitespace(bytes[0]) || isJsonWhitespace(bytes[bytes.length - 1])) return undefined;
  if (!isUtf8(bytes) || nestedDeeperThan(bytes, MAX_JSON_DEPTH)) return undefined;
  if (options.carriageReturns === false && bytes.includes(0x0d)) return undefined;
  const text = bytes.toString("utf8");
  if (text === "null") return undefined;
  try {
    JSON.parse(text);
  } catch {
    return undefined;
  }
  return text;
}

/**
 * JSON nested deeper than this is refused in request bodies and sent as data_base64 on reads:
 * recursive JSON code (V8's JSON.stringify, many readers' parsers) overflows its stack at a few
 * thousand levels.
 */
export const MAX_JSON_DEPTH = 256;

/** Whether JSON text nests arrays/objects deeper than `max` (strings are skipped; no parsing). */
export function nestedDeeperThan(bytes: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}
