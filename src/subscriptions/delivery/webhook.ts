import type { StoredEvent } from "../../events/event.js";
import { toStructuredJson } from "../../events/formats.js";
import { isReservedHeader } from "../spec.js";
import type { SubscriptionSpec } from "../types.js";
import type { SinkClient, SinkResponse } from "./sink-request.js";
import { SinkRequestError } from "./sink-request.js";

/**
 * The CloudEvents HTTP 1.1 Web Hooks spec (cloudevents/http-webhook.md) on the sender's side: the
 * validation handshake (§4) and one delivery request per event in the subscription's content mode
 * (cloudevents/bindings/http-protocol-binding.md §3.1 binary, §3.2 structured). The asynchronous
 * variant of the handshake (WebHook-Request-Callback, §4.1.3) is not offered: a sink must answer
 * the OPTIONS request itself.
 */

/** The outcome of a validation handshake. */
export type Handshake =
  | {
      readonly accepted: true /** Requests per minute; undefined = no limit ("*" or not said). */;
      readonly rate: number | undefined;
    }
  | { readonly accepted: false; readonly reason: string };

/**
 * Asks the sink for permission (§4.1): OPTIONS to the sink URL with WebHook-Request-Origin. Granted
 * when WebHook-Allowed-Origin is our origin or `*` (§4.2.1), whatever the status (§4.2: status codes
 * are not consent); WebHook-Allowed-Rate is recorded (§4.2.2). Throws SinkRequestError when no
 * answer came (a retryable failure), answers accepted false when the sink said no.
 */
export async function handshake(
  client: SinkClient,
  sink: string,
  origin: string,
  signal: AbortSignal,
): Promise<Handshake> {
  const response = await client.send({
    url: sink,
    method: "OPTIONS",
    headers: { "webhook-request-origin": origin },
    signal,
  });
  const allowed = header(response, "webhook-allowed-origin");
  if (allowed === undefined) {
    return {
      accepted: false,
      reason: `handshake refused: HTTP ${response.status} without WebHook-Allowed-Origin`,
    };
  }
  if (allowed !== "*" && allowed.toLowerCase() !== origin.toLowerCase()) {
    return {
      accepted: false,
      reason: `handshake refused: WebHook-Allowed-Origin ${allowed.slice(0, 200)} is not ${origin}`,
    };
  }
  const rate = header(response, "webhook-allowed-rate");
  const perMinute = rate === undefined || rate === "*" || !/^\d+$/.test(rate) ? undefined : Number(rate);
  return { accepted: true, rate: perMinute === 0 ? undefined : perMinute };
}

function header(response: SinkResponse, name: string): string | undefined {
  const value = response.headers[name];
  const text = Array.isArray(value) ? value[0] : value;
  return text === undefined ? undefined : text.trim();
}

/** One event as the request a sink receives. */
export interface DeliveryRequest {
  readonly method: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | string;
}

/**
 * The request for one event: the subscription's method and headers, `Authorization: Bearer` with
 * its sink credential (else its own Authorization header, if it has one), WebHook-Request-Origin (§4.1.2: on every delivery after the handshake), and
 * the event in the content mode — structured: the store's CloudEvents JSON (formats.ts renders it,
 * for streams and reads alike); binary: every attribute as a `ce-` header (taken from that same
 * rendering, without data), the data as the body with its datacontenttype as Content-Type.
 */
export function deliveryRequest(spec: SubscriptionSpec, event: StoredEvent, origin: string): DeliveryRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(spec.protocolsettings.headers)) {
    const lower = name.toLowerCase();
    // The parser refused reserved names already (spec.ts). Authorization is sent as given (e.g.
    // Basic) unless the subscription has a sink credential, which sets it (the service refuses both).
    if (isReservedHeader(lower) || (lower === "authorization" && spec.sinkcredential !== undefined)) continue;
    headers[lower] = value;
  }
  headers["webhook-request-origin"] = origin;
  if (spec.sinkcredential !== undefined) {
    headers.authorization = `Bearer ${spec.sinkcredential.accesstoken}`;
  }
  if (spec.protocolsettings.contentmode === "binary") {
    const attributes = JSON.parse(toStructuredJson({ ...event, data: Buffer.alloc(0) })) as Record<
      string,
      unknown
    >;
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "datacontenttype" || value === undefined || value === null) continue;
      headers[`ce-${name}`] = encodeHeaderValue(String(value));
    }
    if (event.datacontenttype !== undefined) headers["content-type"] = event.datacontenttype;
    return { method: spec.protocolsettings.method, headers, body: event.data };
  }
  headers["content-type"] = "application/cloudevents+json; charset=utf-8";
  return { method: spec.protocolsettings.method, headers, body: toStructuredJson(event) };
}

/**
 * An attribute value as a header value (HTTP binding §3.1.3.2): UTF-8, with space, `"`, `%` and
 * everything outside printable ASCII percent-encoded.
 */
export function encodeHeaderValue(value: string): string {
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    if (byte <= 0x20 || byte >= 0x7f || byte === 0x22 || byte === 0x25) {
      out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
    } else out += String.fromCharCode(byte);
  }
  return out;
}

/** How one delivery attempt ended. */
export type Outcome =
  | { readonly ok: true }
  | {
      readonly ok: false;
      /** A bounded label: http_<status>, redirect, timeout, connection, refused, aborted. */
      readonly reason: string;
      readonly message: string;
      /** Retry-After as given (429 and 503 only). */
      readonly retryAfter: string | undefined;
      /** No retry can help (410 Gone: §2.2, the sink is retired; a refused address). */
      readonly permanent: boolean;
    };

/** Sends one delivery request and says how it ended: 2xx acknowledges, anything else fails. */
export async function deliver(
  client: SinkClient,
  sink: string,
  request: DeliveryRequest,
  signal: AbortSignal,
): Promise<Outcome> {
  let response: SinkResponse;
  try {
    response = await client.send({ url: sink, ...request, signal });
  } catch (error) {
    if (error instanceof SinkRequestError) {
      return {
        ok: false,
        reason: error.reason,
        message: error.message,
        retryAfter: undefined,
        permanent: error.reason === "refused",
      };
    }
    throw error;
  }
  const status = response.status;
  if (status >= 200 && status < 300) return { ok: true };
  if (status >= 300 && status < 400) {
    // Redirects are never followed (§2.2: the client MUST NOT): a sink could otherwise point the server anywhere.
    return {
      ok: false,
      reason: "redirect",
      message: `HTTP ${status} redirect (not followed)`,
      retryAfter: undefined,
      permanent: false,
    };
  }
  const retryAfter = status === 429 || status === 503 ? header(response, "retry-after") : undefined;
  return {
    ok: false,
    reason: `http_${status}`,
    message: `HTTP ${status}`,
    retryAfter,
    permanent: status === 410,
  };
}
