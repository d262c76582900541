/**
 * Push subscriptions: the CloudEvents Subscriptions API's subscription object (as this store keeps
 * it) and the record around it (owner, checkpoint, parked state, lease). The API (service.ts and the
 * transports) writes specs; the deliverer (delivery/) reads records and writes checkpoints.
 */

/**
 * A filter expression in one of the CloudEvents Subscriptions API's dialects (§3.2.4): `exact`,
 * `prefix`, `suffix` map attribute names to values (every pair must match); `all`, `any`, `not`
 * combine expressions.
 */
export type FilterExpression =
  | { readonly exact: Readonly<Record<string, string>> }
  | { readonly prefix: Readonly<Record<string, string>> }
  | { readonly suffix: Readonly<Record<string, string>> }
  | { readonly all: readonly FilterExpression[] }
  | { readonly any: readonly FilterExpression[] }
  | { readonly not: FilterExpression };

/** How events go to an HTTP sink (the spec's HTTP protocol settings plus the content mode). */
export interface HttpProtocolSettings {
  /** The spec's `method`: POST (the default) or PUT. */
  readonly method: "POST" | "PUT";
  /** The spec's `headers`: copied into every delivery request. */
  readonly headers: Readonly<Record<string, string>>;
  /** This store's `contentmode`: CloudEvents HTTP binding structured (the default) or binary. */
  readonly contentmode: "structured" | "binary";
}

/** This store's own settings, in the spec's `config` map. */
export interface SubscriptionConfig {
  /** Shorthand for the store's read filter: one exact subject (absent = every subject)… */
  readonly subject: string | undefined;
  /** …and everything below it. */
  readonly recursive: boolean;
  /** Shorthand: one CloudEvents type (absent = any). */
  readonly type: string | undefined;
  /** Deliveries in flight at once (1 = strictly one after another, the default). */
  readonly window: number;
}

/** The spec's sink credential (§3.2.3): write-only, never returned by reads. */
export interface SinkCredential {
  readonly credentialtype: "ACCESSTOKEN";
  /** Sent as `Authorization: Bearer <accesstoken>` with every delivery. */
  readonly accesstoken: string;
}

/** A subscription as a client sets it (create, update), normalized; what `spec` stores as JSON. */
export interface SubscriptionSpec {
  /** Only events with this CloudEvents `source`. */
  readonly source: string | undefined;
  /** Only events with one of these CloudEvents `type`s (absent or empty = any). */
  readonly types: readonly string[] | undefined;
  readonly config: SubscriptionConfig;
  /** Every expression must hold (absent or empty = true). */
  readonly filters: readonly FilterExpression[];
  /** The web hook URL (http or https). */
  readonly sink: string;
  readonly sinkcredential: SinkCredential | undefined;
  /** Only "HTTP" is delivered. */
  readonly protocol: "HTTP";
  readonly protocolsettings: HttpProtocolSettings;
  readonly description: string | undefined;
}

export type SubscriptionState = "active" | "parked";

/** Why and where delivery gave up (state "parked"). */
export interface Parked {
  readonly reason: string;
  /** The event that could not be delivered, if one was being delivered. */
  readonly eventId: number | undefined;
  /** Epoch ms. */
  readonly at: number;
}

/** A stored subscription. */
export interface SubscriptionRecord {
  readonly id: string;
  readonly spec: SubscriptionSpec;
  /** Counts changes of spec or state by the API (create = 1); a deliverer holding an older one restarts. */
  readonly generation: number;
  /** The name of the token that created it. */
  readonly owner: string;
  /** That token's read scopes when it created (or last updated) it. */
  readonly ownerScopes: readonly string[];
  /** The last event id the sink acknowledged: delivery resumes after it. */
  readonly position: number;
  readonly state: SubscriptionState;
  readonly parked: Parked | undefined;
  /** The sink the web hook handshake last succeeded for (a new sink needs a new handshake). */
  readonly validatedSink: string | undefined;
  /** WebHook-Allowed-Rate granted by the handshake, requests per minute; undefined = no limit. */
  readonly validatedRate: number | undefined;
  /** The process delivering it and until when (epoch ms, database clock), if leased. */
  readonly lease: { readonly holder: string; readonly expiresAt: number } | undefined;
  /** Epoch ms. */
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** A lease on one subscription, as a deliverer holds it: its token fences every write it makes. */
export interface Lease {
  readonly subscription: SubscriptionRecord;
  readonly token: string;
}
