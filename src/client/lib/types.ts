/** An extension attribute's value as the server returns it. */
export type ExtensionValue = string | number | boolean;

/** An event as the server stores and returns it in the simple JSON of Events DB. */
export interface StoredEvent {
  /** The server id: increasing, never reused. */
  readonly id: number;
  readonly source: string;
  readonly type: string;
  /** Absent for an event without one (CloudEvents makes it optional). */
  readonly subject?: string;
  /** RFC 3339, UTC, to the microsecond. */
  readonly time: string;
  /** The data bytes, standard base64 (see `decodeData`). */
  readonly data: string;
  /** The CloudEvents id, when the event was appended as a CloudEvent. */
  readonly ce_id?: string;
  readonly datacontenttype?: string;
  readonly dataschema?: string;
  readonly extensions?: Readonly<Record<string, ExtensionValue>>;
  /** The event's link in the tamper-evident chain: SHA-256, lowercase hex (absent before the chain existed). */
  readonly hash?: string;
  /** The predecessor's hash, lowercase hex (64 zeros for the first event). */
  readonly prevhash?: string;
  /** Ed25519 over the hash, lowercase hex, when the server signed it (see `signingKey`). */
  readonly signature?: string;
}

/**
 * One link of the tamper-evident chain as JSON: the items of `GET /events/chain` and the lines of
 * `eventsdb export --chain`. Hashes and the signature in lowercase hex; the content with its data
 * as base64, so that a verifier recomputes the hash from exactly the stored bytes. Absent
 * attributes are omitted; a tombstone (a deleted event) has `deleted: true` and no content.
 * The server's `linkToJson` writes it, `linkFromJson` (src/events/chain.ts) reads it for verifying.
 */
export interface ChainLinkJson {
  id: number;
  hash: string;
  prevhash: string;
  signature?: string;
  deleted?: true;
  source?: string;
  type?: string;
  subject?: string;
  ceid?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions?: Record<string, ExtensionValue>;
  data_base64?: string;
}

/** One page of `GET /events/chain`. */
export interface ChainPage {
  readonly links: ChainLinkJson[];
  readonly hasMore: boolean;
  /** Pass back as `fromId` for the next page. */
  readonly nextFromId: number;
}

/** Which part of the chain `chain()` reads: links with an id above `fromId`, `limit` per page. */
export interface ChainQuery {
  readonly fromId?: number;
  /** Links per request (the server caps it, as for `GET /events`). */
  readonly limit?: number;
}

/** An event in the simple format: the server assigns id and time; no CloudEvents id (no dedupe). */
export interface SimpleEventInput {
  readonly source: string;
  readonly type: string;
  /** Optional: an event without a subject is read only over all subjects. */
  readonly subject?: string;
  /** Bytes, or text sent as UTF-8. */
  readonly data?: Uint8Array | string;
}

/**
 * A structured CloudEvent (JSON format). `specversion` defaults to "1.0". `data` is sent as JSON
 * (a Uint8Array goes as `data_base64`); other members are extension attributes.
 */
export interface CloudEvent {
  readonly specversion?: string;
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly subject?: string;
  readonly time?: string;
  readonly datacontenttype?: string;
  readonly dataschema?: string;
  readonly data?: unknown;
  readonly data_base64?: string;
  readonly [extension: string]: unknown;
}

/** Which events a read, stream or delete covers. */
export interface EventQuery {
  /** One subject or several; none = every subject (not for delete). */
  readonly subject?: string | readonly string[];
  /** The subjects and everything below them (`orders` covers `orders/1/lines`). */
  readonly recursive?: boolean;
  readonly type?: string;
  /** Only events with a larger id. */
  readonly fromId?: number;
}

/** Which subjects a subject page lists. */
export interface SubjectQuery {
  /** Only subjects starting with this plain string. */
  readonly prefix?: string;
  /** Only subjects sorting after this one (a page's `nextAfter`). */
  readonly after?: string;
  /** Subjects per request, 1 to 1000 (default 1000). */
  readonly limit?: number;
}

/** One page of `GET /subjects?limit=`. */
export interface SubjectPage {
  readonly subjects: string[];
  readonly hasMore: boolean;
  /** Pass back as `after` for the next page ("" when no more follow). */
  readonly nextAfter: string;
}

/** One page of `GET /events`. */
export interface Page<E> {
  readonly events: E[];
  readonly hasMore: boolean;
  /** Pass back as `fromId` for the next page. */
  readonly nextFromId: number;
}

/** One page as a CloudEvents batch, as the server wrote it (JSON data keeps its stored text). */
export interface RawPage {
  /** A JSON array of structured CloudEvents. */
  readonly json: string;
  readonly hasMore: boolean;
  readonly nextFromId: number;
}

/** One event of a live stream. */
export interface StreamMessage<E> {
  readonly id: number;
  /** The `data:` text as the server sent it. */
  readonly data: string;
  readonly event: E;
}

/** Why a live stream reconnects, and when. */
export interface ReconnectInfo {
  readonly reason: string;
  readonly delayMs: number;
  /** The last delivered id: the stream resumes after it (`Last-Event-ID`). */
  readonly lastId: number;
}

/** Per-call options: every call has a timeout; `signal` cancels it. */
export interface CallOptions {
  readonly signal?: AbortSignal;
  /** Overrides the client's `timeoutMs` for this call. */
  readonly timeoutMs?: number;
}

/**
 * A condition on a subject checked atomically with an append: all must hold, else the server
 * answers 409 `failed_precondition` and stores nothing (optimistic concurrency).
 */
export type Precondition =
  /** The subject has no events. */
  | { readonly kind: "pristine"; readonly subject: string }
  /** The subject has at least one event. */
  | { readonly kind: "populated"; readonly subject: string }
  /** The subject's last event has this id. */
  | { readonly kind: "on_event"; readonly subject: string; readonly id: number };

export interface AppendOptions extends CallOptions {
  /** Sent as the EventsDB-Preconditions header; a failed one rejects with code `failed_precondition`. */
  readonly preconditions?: readonly Precondition[];
}

export interface StreamOptions extends EventQuery {
  readonly signal?: AbortSignal;
  /** Reconnect when nothing, not even a heartbeat, arrived for this long (default 60 000; 0 = never). */
  readonly idleTimeoutMs?: number;
  /** The first reconnection delay (default 250 ms); it doubles after each failure, up to 10 s. */
  readonly reconnectDelayMs?: number;
  /** Called each time a connection is established. */
  readonly onOpen?: () => void;
  /** Called before each reconnection wait. */
  readonly onReconnect?: (info: ReconnectInfo) => void;
}

/**
 * A filter in one of the CloudEvents Subscriptions API's dialects: exactly one key. `exact`,
 * `prefix`, `suffix` map attribute names to values that must all match; `all`, `any`, `not` combine.
 */
export type SubscriptionFilter =
  | { readonly exact: Readonly<Record<string, string>> }
  | { readonly prefix: Readonly<Record<string, string>> }
  | { readonly suffix: Readonly<Record<string, string>> }
  | { readonly all: readonly SubscriptionFilter[] }
  | { readonly any: readonly SubscriptionFilter[] }
  | { readonly not: SubscriptionFilter };

/** A push subscription as `createSubscription` and `updateSubscription` send it (see openapi.yaml). */
export interface SubscriptionInput {
  /** The web hook: an absolute http or https URL. */
  readonly sink: string;
  /** Default "HTTP" (the only protocol delivered). */
  readonly protocol?: "HTTP";
  readonly source?: string;
  readonly types?: readonly string[];
  readonly config?: {
    /** One subject (absent = every subject: needs the read scope "*"). */
    readonly subject?: string;
    readonly recursive?: boolean;
    readonly type?: string;
    /** Deliveries in flight at once, 1 to 64 (default 1). */
    readonly window?: number;
    /** Create only: "now" (the default) or an event id to deliver after. */
    readonly from?: "now" | number;
  };
  readonly filters?: readonly SubscriptionFilter[];
  readonly protocolsettings?: {
    readonly method?: "POST" | "PUT";
    readonly headers?: Readonly<Record<string, string>>;
    readonly contentmode?: "structured" | "binary";
  };
  /** Sent as a bearer token with every delivery; write-only. `null` on update removes it. */
  readonly sinkcredential?: { readonly credentialtype: "ACCESSTOKEN"; readonly accesstoken?: string } | null;
  readonly description?: string;
}

/** A push subscription as the server returns it. */
export interface Subscription {
  readonly id: string;
  readonly source?: string;
  readonly types?: readonly string[];
  readonly config: {
    readonly subject?: string;
    readonly recursive: boolean;
    readonly type?: string;
    readonly window: number;
  };
  readonly filters: readonly SubscriptionFilter[];
  readonly sink: string;
  /** Present when it has a credential; the token is never returned. */
  readonly sinkcredential?: { readonly credentialtype: "ACCESSTOKEN" };
  readonly protocol: "HTTP";
  readonly protocolsettings: {
    readonly method: "POST" | "PUT";
    readonly headers: Readonly<Record<string, string>>;
    readonly contentmode: "structured" | "binary";
  };
  readonly description?: string;
  readonly status: {
    readonly state: "active" | "parked";
    /** The last event id the sink acknowledged. */
    readonly position: number;
    /** Events stored after `position`. */
    readonly lag: number;
    readonly parked?: { readonly reason: string; readonly eventid?: number; readonly at: string };
    readonly lease?: { readonly holder: string; readonly expiresat: string };
    readonly owner: string;
    readonly createdat: string;
    readonly updatedat: string;
  };
}
