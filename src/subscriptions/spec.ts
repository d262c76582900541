import { invalidArgument } from "../errors.js";
import { MAX_ATTRIBUTE_CHARS, validateSubject } from "../events/validate.js";
import type {
  FilterExpression,
  HttpProtocolSettings,
  SinkCredential,
  SubscriptionConfig,
  SubscriptionRecord,
  SubscriptionSpec,
} from "./types.js";

/**
 * The CloudEvents Subscriptions API's subscription object (spec §3.2.1) as JSON, both ways: the
 * one parser every transport's create and update go through (Connect/gRPC turn their messages
 * into this JSON first), and the one rendering of a stored record. Every refusal is an
 * invalid_argument (400) naming the field.
 */

/** Filter expressions in one subscription, counting nested ones (all/any/not and their members). */
export const MAX_FILTER_NODES = 64;
/** Nesting of all/any/not. */
export const MAX_FILTER_DEPTH = 8;
/** Attributes of one exact/prefix/suffix expression. */
export const MAX_FILTER_ATTRIBUTES = 16;
/** Characters of one filter value, a type, a source. */
export const MAX_VALUE_CHARS = MAX_ATTRIBUTE_CHARS;
/** Entries of `types`. */
export const MAX_TYPES = 64;
/** Characters of the sink URL. */
export const MAX_SINK_CHARS = 2048;
/** Extra headers, and the characters of one header value. */
export const MAX_HEADERS = 32;
export const MAX_HEADER_VALUE_CHARS = 4096;
/** Characters of a sink access token and of a description. */
export const MAX_TOKEN_CHARS = 4096;
export const MAX_DESCRIPTION_CHARS = 1000;
/** Deliveries in flight per subscription (config.window). */
export const MAX_WINDOW = 64;

/** The filter dialects of spec §3.2.4.1.1 (the REQUIRED ones; `sql` is not offered). */
export const FILTER_DIALECTS = ["exact", "prefix", "suffix", "all", "any", "not"] as const;

/** Protocols the spec names that this store does not deliver to (a clearer 400 than "unknown"). */
const OTHER_PROTOCOLS: ReadonlySet<string> = new Set(["AMQP", "MQTT3", "MQTT5", "KAFKA", "NATS"]);

/**
 * Headers a subscription may not set: hop-by-hop and framing headers (the deliverer's HTTP client
 * owns them), Content-Type (the content mode sets it), CloudEvents attributes (`ce-*`, binary
 * mode) and the web hook handshake's (`webhook-*`).
 */
const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  "host",
  "content-length",
  "content-type",
  "content-encoding",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "te",
  "trailer",
  "upgrade",
  "expect",
]);
const RESERVED_HEADER_PREFIXES = ["ce-", "webhook-", ":"];

/** Whether a (lower-case) header name is one a subscription may not set: the one rule, also the deliverer's. */
export function isReservedHeader(lower: string): boolean {
  return RESERVED_HEADERS.has(lower) || RESERVED_HEADER_PREFIXES.some((p) => lower.startsWith(p));
}
/** RFC 9110 token characters. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
/** Visible ASCII, spaces and tabs (RFC 9110 field-value without obs-text, which Node refuses to send). */
const HEADER_VALUE = /^[\t\x20-\x7e]*$/;
/** CloudEvents attribute names (spec §3.1.1 of CloudEvents, as events/validate.ts accepts them). */
const ATTRIBUTE_NAME = /^[a-z0-9]{1,20}$/;

/** Where delivery starts on create: after the current last event, or after this event id. */
export type StartPosition = "now" | number;

/** A create or update request, parsed. */
export interface ParsedSubscription {
  /**
   * The spec; `sinkcredential` here is what was sent: a credential, "keep" (the rendered form
   * `{ "credentialtype": "ACCESSTOKEN" }` without a token, or the key absent on update), or
   * undefined (none; on update `null` removes the stored one).
   */
  readonly spec: Omit<SubscriptionSpec, "sinkcredential">;
  readonly sinkcredential: SinkCredential | "keep" | undefined;
  /** config.from (create only). */
  readonly from: StartPosition | undefined;
}

/** Top-level keys a client may send, plus the read-only ones a GET returns (ignored on input). */
const INPUT_KEYS: ReadonlySet<string> = new Set([
  "source",
  "types",
  "config",
  "filters",
  "sink",
  "sinkcredential",
  "protocol",
  "protocolsettings",
  "description",
]);
const READ_ONLY_KEYS: ReadonlySet<string> = new Set(["id", "status"]);

/**
 * Parses a subscription object of a create (`POST /subscriptions`) or update (`PUT
 * /subscriptions/{id}`, the whole object). `id` and `status` are ignored (the server owns them; on
 * update an `id` other than the path's is refused by the caller). Throws invalid_argument.
 */
export function parseSubscription(body: unknown, mode: "create" | "update"): ParsedSubscription {
  const object = record(body, "the subscription");
  for (const key of Object.keys(object)) {
    if (!INPUT_KEYS.has(key) && !READ_ONLY_KEYS.has(key)) {
      throw invalidArgument(
        `unknown subscription field ${JSON.stringify(key)}; the fields are ${[...INPUT_KEYS].join(", ")}`,
      );
    }
  }
  const { config, from } = parseConfig(object.config, mode);
  return {
    spec: {
      source: optionalString(object.source, "source", MAX_VALUE_CHARS),
      types: parseTypes(object.types),
      config,
      filters: parseFilters(object.filters),
      sink: parseSink(object.sink),
      protocol: parseProtocol(object.protocol),
      protocolsettings: parseProtocolSettings(object.protocolsettings),
      description: optionalString(object.description, "description", MAX_DESCRIPTION_CHARS, true),
    },
    sinkcredential: parseSinkCredential(object.sinkcredential, mode),
    from,
  };
}

/** The read-only part of a rendered subscription: this store's state of it. */
export interface SubscriptionStatus {
  readonly state: "active" | "parked";
  /** The last event id the sink acknowledged; delivery resumes after it. */
  readonly position: number;
  /** Events stored after `position` (the store's last id − position; not cut to the filters). */
  readonly lag: number;
  readonly parked?: { readonly reason: string; readonly eventid?: number; readonly at: string };
  /** The process delivering it, while one holds its lease. */
  readonly lease?: { readonly holder: string; readonly expiresat: string };
  /** The name of the token that created it. */
  readonly owner: string;
  readonly createdat: string;
  readonly updatedat: string;
}

/** A subscription as the API returns it (the spec's object plus `status`). */
export interface SubscriptionResource {
  readonly id: string;
  readonly source?: string;
  readonly types?: readonly string[];
  readonly config: {
    readonly subject?: string;
    readonly recursive: boolean;
    readonly type?: string;
    readonly window: number;
  };
  readonly filters: readonly FilterExpression[];
  readonly sink: string;
  /** Only the type: the token is write-only (spec §3.2.1 sinkcredential). */
  readonly sinkcredential?: { readonly credentialtype: "ACCESSTOKEN" };
  readonly protocol: "HTTP";
  readonly protocolsettings: HttpProtocolSettings;
  readonly description?: string;
  readonly status: SubscriptionStatus;
}

/** A stored subscription as the API returns it; `lastId` is the store's last event id (for lag). */
export function renderSubscription(record: SubscriptionRecord, lastId: number): SubscriptionResource {
  const { spec } = record;
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    id: record.id,
    ...(spec.source === undefined ? {} : { source: spec.source }),
    ...(spec.types === undefined ? {} : { types: [...spec.types] }),
    config: {
      ...(spec.config.subject === undefined ? {} : { subject: spec.config.subject }),
      recursive: spec.config.recursive,
      ...(spec.config.type === undefined ? {} : { type: spec.config.type }),
      window: spec.config.window,
    },
    filters: spec.filters,
    sink: spec.sink,
    ...(spec.sinkcredential === undefined
      ? {}
      : { sinkcredential: { credentialtype: spec.sinkcredential.credentialtype } }),
    protocol: spec.protocol,
    protocolsettings: {
      method: spec.protocolsettings.method,
      headers: { ...spec.protocolsettings.headers },
      contentmode: spec.protocolsettings.contentmode,
    },
    ...(spec.description === undefined ? {} : { description: spec.description }),
    status: {
      state: record.state,
      position: record.position,
      lag: Math.max(0, lastId - record.position),
      ...(record.parked === undefined
        ? {}
        : {
            parked: {
              reason: record.parked.reason,
              ...(record.parked.eventId === undefined ? {} : { eventid: record.parked.eventId }),
              at: iso(record.parked.at),
            },
          }),
      ...(record.lease === undefined
        ? {}
        : { lease: { holder: record.lease.holder, expiresat: iso(record.lease.expiresAt) } }),
      owner: record.owner,
      createdat: iso(record.createdAt),
      updatedat: iso(record.updatedAt),
    },
  };
}

// ---------------------------------------------------------------------------------------------

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidArgument(`${what} must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

function optionalString(value: unknown, field: string, max: number, mayBeEmpty = false): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalidArgument(`${field} must be a string`);
  if (value === "" && !mayBeEmpty) throw invalidArgument(`${field} must not be empty`);
  if (value.length > max) throw invalidArgument(`${field} is longer than ${max} characters`);
  if (hasControl(value)) throw invalidArgument(`${field} must not contain control characters`);
  return value === "" ? undefined : value;
}

function hasControl(value: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing them is the point
  return /[\u0000-\u001f\u007f]/.test(value);
}

function parseTypes(value: unknown): readonly string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) throw invalidArgument("types must be an array of strings");
  if (value.length > MAX_TYPES) throw invalidArgument(`types has more than ${MAX_TYPES} entries`);
  const types = value.map((type, i) => optionalString(type, `types[${i}]`, MAX_VALUE_CHARS));
  for (const [i, type] of types.entries()) {
    if (type === undefined) throw invalidArgument(`types[${i}] must be a non-empty string`);
  }
  // An empty list means any type (spec: absent or empty).
  return types.length === 0 ? undefined : (types as string[]);
}

const CONFIG_KEYS = ["subject", "recursive", "type", "window", "from"];

function parseConfig(
  value: unknown,
  mode: "create" | "update",
): { config: SubscriptionConfig; from: StartPosition | undefined } {
  const object = value === undefined || value === null ? {} : record(value, "config");
  for (const key of Object.keys(object)) {
    if (!CONFIG_KEYS.includes(key)) {
      throw invalidArgument(
        `unknown config key ${JSON.stringify(key)}; the keys are ${CONFIG_KEYS.join(", ")}`,
      );
    }
  }
  const subject =
    object.subject === undefined || object.subject === null
      ? undefined
      : validateSubject(object.subject, "config.");
  const recursive = object.recursive ?? false;
  if (typeof recursive !== "boolean") throw invalidArgument("config.recursive must be true or false");
  const window = object.window ?? 1;
  if (typeof window !== "number" || !Number.isInteger(window) || window < 1 || window > MAX_WINDOW) {
    throw invalidArgument(`config.window must be a whole number from 1 to ${MAX_WINDOW}`);
  }
  let from: StartPosition | undefined;
  if (object.from !== undefined && object.from !== null) {
    if (mode === "update") {
      throw invalidArgument(
        "config.from is only taken on create; to move an existing subscription's position, redrive it with from",
      );
    }
    from = parseStart(object.from, "config.from");
  }
  return {
    config: {
      subject,
      recursive,
      type: optionalString(object.type, "config.type", MAX_VALUE_CHARS),
      window,
    },
    from,
  };
}

/** "now", or an event id ≥ 0 (delivery starts after it; 0 = from the first event). */
export function parseStart(value: unknown, field: string): StartPosition {
  if (value === "now") return "now";
  const id = typeof value === "string" && /^\d{1,16}$/.test(value) ? Number(value) : value;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
    throw invalidArgument(`${field} must be "now" or an event id (a whole number ≥ 0)`);
  }
  return id;
}

function parseSink(value: unknown): string {
  if (value === undefined || value === null || value === "") throw invalidArgument("sink is required");
  if (typeof value !== "string") throw invalidArgument("sink must be a string (an http or https URL)");
  if (value.length > MAX_SINK_CHARS)
    throw invalidArgument(`sink is longer than ${MAX_SINK_CHARS} characters`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalidArgument(`sink must be an absolute http or https URL, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalidArgument(`sink must be an http or https URL, got scheme ${url.protocol.slice(0, -1)}`);
  }
  if (url.username !== "" || url.password !== "") {
    throw invalidArgument("sink must not carry a user or password; use sinkcredential");
  }
  if (url.hash !== "") throw invalidArgument("sink must not have a fragment (#…)");
  return url.href;
}

function parseProtocol(value: unknown): "HTTP" {
  if (value === undefined || value === null || value === "") {
    throw invalidArgument('protocol is required; this server delivers with "HTTP"');
  }
  if (value === "HTTP") return "HTTP";
  if (typeof value === "string" && OTHER_PROTOCOLS.has(value)) {
    throw invalidArgument(`protocol ${value} is not supported; this server delivers with "HTTP" only`);
  }
  throw invalidArgument(
    `protocol must be "HTTP" (case-sensitive), got ${JSON.stringify(value)}; this server delivers with HTTP only`,
  );
}

const SETTINGS_KEYS = ["method", "headers", "contentmode"];

function parseProtocolSettings(value: unknown): HttpProtocolSettings {
  const object = value === undefined || value === null ? {} : record(value, "protocolsettings");
  for (const key of Object.keys(object)) {
    if (!SETTINGS_KEYS.includes(key)) {
      throw invalidArgument(
        `unknown protocolsettings key ${JSON.stringify(key)}; the HTTP settings are ${SETTINGS_KEYS.join(", ")}`,
      );
    }
  }
  const method = object.method ?? "POST";
  if (method !== "POST" && method !== "PUT") {
    throw invalidArgument(`protocolsettings.method must be "POST" or "PUT", got ${JSON.stringify(method)}`);
  }
  const contentmode = object.contentmode ?? "structured";
  if (contentmode !== "structured" && contentmode !== "binary") {
    throw invalidArgument(
      `protocolsettings.contentmode must be "structured" or "binary", got ${JSON.stringify(contentmode)}`,
    );
  }
  return { method, headers: parseHeaders(object.headers), contentmode };
}

function parseHeaders(value: unknown): Record<string, string> {
  if (value === undefined || value === null) return {};
  const object = record(value, "protocolsettings.headers");
  const entries = Object.entries(object);
  if (entries.length > MAX_HEADERS) {
    throw invalidArgument(`protocolsettings.headers has more than ${MAX_HEADERS} headers`);
  }
  const headers: Record<string, string> = Object.create(null);
  for (const [name, headerValue] of entries) {
    const at = `protocolsettings.headers[${JSON.stringify(name)}]`;
    if (!HEADER_NAME.test(name)) throw invalidArgument(`${at}: not a valid HTTP header name`);
    const lower = name.toLowerCase();
    if (isReservedHeader(lower)) {
      throw invalidArgument(
        `${at}: the deliverer sets this header itself (reserved: ${[...RESERVED_HEADERS].join(", ")}, ce-*, webhook-*)`,
      );
    }
    if (lower in headers) throw invalidArgument(`${at}: the header is given twice`);
    if (typeof headerValue !== "string") throw invalidArgument(`${at} must be a string`);
    if (headerValue.length > MAX_HEADER_VALUE_CHARS || !HEADER_VALUE.test(headerValue)) {
      throw invalidArgument(
        `${at} must be at most ${MAX_HEADER_VALUE_CHARS} characters of visible ASCII, spaces and tabs (no line breaks)`,
      );
    }
    headers[lower] = headerValue.trim();
  }
  // A plain object again (JSON and equality in tests treat a null prototype the same, but callers may not).
  return { ...headers };
}

function parseFilters(value: unknown): FilterExpression[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw invalidArgument("filters must be an array of filter expressions");
  const budget = { nodes: 0 };
  return value.map((item, i) => parseFilter(item, `filters[${i}]`, 1, budget));
}

function parseFilter(value: unknown, at: string, depth: number, budget: { nodes: number }): FilterExpression {
  if (depth > MAX_FILTER_DEPTH) {
    throw invalidArgument(`${at}: filters nest deeper than ${MAX_FILTER_DEPTH} levels`);
  }
  budget.nodes += 1;
  if (budget.nodes > MAX_FILTER_NODES) {
    throw invalidArgument(`filters hold more than ${MAX_FILTER_NODES} expressions`);
  }
  const object = record(value, `${at}`);
  const keys = Object.keys(object);
  if (keys.length !== 1) {
    throw invalidArgument(
      `${at} must have exactly one dialect key (${FILTER_DIALECTS.join(", ")}), got ${keys.length === 0 ? "none" : keys.join(", ")}`,
    );
  }
  const dialect = keys[0] as string;
  const body = object[dialect];
  switch (dialect) {
    case "exact":
    case "prefix":
    case "suffix": {
      const attributes = parseAttributes(body, `${at}.${dialect}`);
      return dialect === "exact"
        ? { exact: attributes }
        : dialect === "prefix"
          ? { prefix: attributes }
          : { suffix: attributes };
    }
    case "all":
    case "any": {
      if (!Array.isArray(body) || body.length === 0) {
        throw invalidArgument(`${at}.${dialect} must be a non-empty array of filter expressions`);
      }
      const members = body.map((item, i) => parseFilter(item, `${at}.${dialect}[${i}]`, depth + 1, budget));
      return dialect === "all" ? { all: members } : { any: members };
    }
    case "not":
      return { not: parseFilter(body, `${at}.not`, depth + 1, budget) };
    default:
      throw invalidArgument(
        `${at}: filter dialect ${JSON.stringify(dialect)} is not supported; the dialects are ${FILTER_DIALECTS.join(", ")}`,
      );
  }
}

function parseAttributes(value: unknown, at: string): Record<string, string> {
  const object = record(value, at);
  const entries = Object.entries(object);
  if (entries.length === 0) throw invalidArgument(`${at} must name at least one attribute`);
  if (entries.length > MAX_FILTER_ATTRIBUTES) {
    throw invalidArgument(`${at} names more than ${MAX_FILTER_ATTRIBUTES} attributes`);
  }
  const attributes: Record<string, string> = {};
  for (const [name, attributeValue] of entries) {
    if (!ATTRIBUTE_NAME.test(name)) {
      throw invalidArgument(
        `${at}: ${JSON.stringify(name)} is not a CloudEvents attribute name (a-z, 0-9, 1 to 20 characters)`,
      );
    }
    if (typeof attributeValue !== "string" || attributeValue === "") {
      throw invalidArgument(`${at}.${name} must be a non-empty string`);
    }
    if (attributeValue.length > MAX_VALUE_CHARS) {
      throw invalidArgument(`${at}.${name} is longer than ${MAX_VALUE_CHARS} characters`);
    }
    attributes[name] = attributeValue;
  }
  return attributes;
}

const CREDENTIAL_KEYS = ["credentialtype", "accesstoken", "accesstokentype"];

function parseSinkCredential(value: unknown, mode: "create" | "update"): SinkCredential | "keep" | undefined {
  if (value === null) return undefined;
  if (value === undefined) return mode === "update" ? "keep" : undefined;
  const object = record(value, "sinkcredential");
  for (const key of Object.keys(object)) {
    if (!CREDENTIAL_KEYS.includes(key)) {
      throw invalidArgument(
        `unknown sinkcredential key ${JSON.stringify(key)}; the keys are ${CREDENTIAL_KEYS.join(", ")}`,
      );
    }
  }
  if (object.credentialtype !== "ACCESSTOKEN") {
    throw invalidArgument(
      `sinkcredential.credentialtype must be "ACCESSTOKEN" (the only type supported), got ${JSON.stringify(object.credentialtype)}`,
    );
  }
  const type = object.accesstokentype;
  if (type !== undefined && (typeof type !== "string" || type.toLowerCase() !== "bearer")) {
    throw invalidArgument(
      'sinkcredential.accesstokentype must be "Bearer" (the token is sent as a bearer token)',
    );
  }
  // The rendered form (type only): on update, the stored token stays.
  if (object.accesstoken === undefined) {
    if (mode === "update") return "keep";
    throw invalidArgument("sinkcredential.accesstoken is required");
  }
  const token = object.accesstoken;
  if (
    typeof token !== "string" ||
    token === "" ||
    token.length > MAX_TOKEN_CHARS ||
    !/^[\x21-\x7e]+$/.test(token)
  ) {
    throw invalidArgument(
      `sinkcredential.accesstoken must be 1 to ${MAX_TOKEN_CHARS} visible ASCII characters (no spaces)`,
    );
  }
  return { credentialtype: "ACCESSTOKEN", accesstoken: token };
}
