/** A CloudEvents extension attribute value (CloudEvents 1.0 §Type System: String, Integer, Boolean). */
export type ExtensionValue = string | number | boolean;

/** An event accepted from a client, validated, not yet stored. */
export interface NewEvent {
  readonly source: string;
  readonly type: string;
  /**
   * Optional as in CloudEvents 1.0: undefined = the event has no subject. Such an event is read only
   * by reads and streams over all subjects, and written and read only with the scope "*".
   */
  readonly subject: string | undefined;
  /** The producer's CloudEvents `id`; with `source` the idempotency key. Absent in the simple format. */
  readonly ceId: string | undefined;
  /** RFC 3339 in UTC with microseconds, see time.ts; absent = the server's time of append. */
  readonly time: string | undefined;
  readonly datacontenttype: string | undefined;
  readonly dataschema: string | undefined;
  readonly extensions: Readonly<Record<string, ExtensionValue>> | undefined;
  readonly data: Buffer;
}

/** An event as stored: the server id is the cursor everywhere. */
export interface StoredEvent {
  readonly id: number;
  readonly source: string;
  readonly type: string;
  /** Undefined = no subject (see {@link NewEvent.subject}). */
  readonly subject: string | undefined;
  readonly ceId: string | undefined;
  /** Canonical UTC RFC 3339 with six fractional digits, e.g. `2026-01-02T03:04:05.123456Z`. */
  readonly time: string;
  readonly datacontenttype: string | undefined;
  readonly dataschema: string | undefined;
  readonly extensions: Readonly<Record<string, ExtensionValue>> | undefined;
  readonly data: Buffer;
  /**
   * Its place in the tamper-evident chain (src/events/chain.ts): SHA-256 over its id, prevHash and
   * content; absent only on events stored before the chain existed, until `eventsdb migrate`.
   */
  readonly hash?: Buffer;
  /** The hash of the event before it (id order, deleted ones included); 32 zero bytes for the first. */
  readonly prevHash?: Buffer;
  /** Ed25519 over `hash`, when the server signed it (--signing-key-file). */
  readonly signature?: Buffer;
  /** Only in chain reads: the tombstone of a deleted event (id and chain fields, no content). */
  readonly deleted?: true;
}

/** What a read selects: some subjects (or all), optionally everything below them, optionally one type. */
export interface EventFilter {
  /** Exact subjects, any of which matches; empty = all subjects. */
  readonly subjects: readonly string[];
  /** Each subject itself and every subject below it in `/`-separated segments. */
  readonly recursive: boolean;
  readonly type: string | undefined;
}

/** A page read: events with id > fromId in id order. */
export interface PageQuery extends EventFilter {
  readonly fromId: number;
  readonly limit: number;
  /**
   * Most bytes of events (see {@link eventSize}) in the page; the first event is returned however
   * large it is, so a page always moves the cursor. Absent = no byte bound (internal reads only).
   */
  readonly maxBytes?: number;
  /** Include deleted events' tombstones (chain reads only). */
  readonly tombstones?: boolean;
}

export interface Page {
  readonly events: readonly StoredEvent[];
  readonly hasMore: boolean;
  /** The cursor to pass as the next fromId: the last id returned, or the given fromId when empty. */
  readonly nextFromId: number;
}

/**
 * A condition on one subject checked atomically with an append (optimistic concurrency): the
 * append stores nothing unless every condition holds at commit. "The subject" is exactly that
 * subject, not the subjects below it.
 * - pristine: the subject has no events;
 * - populated: the subject has at least one event;
 * - on_event: the subject's last event (highest id) is `id`.
 */
export type Precondition =
  | { readonly kind: "pristine"; readonly subject: string }
  | { readonly kind: "populated"; readonly subject: string }
  | { readonly kind: "on_event"; readonly subject: string; readonly id: number };

/** The outcome of appending one event. */
export interface AppendResult {
  readonly id: number;
  /** False when (source, ceId) was already stored and this append created nothing. */
  readonly created: boolean;
}

const extensionSizes = new WeakMap<object, number>();

/**
 * The bytes an event counts for in every byte budget (stream buffers, stream messages, pages):
 * its data and its extension attributes as JSON, as the store's `event_size` column counts them
 * (sql/mysql/006_event_size.sql). The other attributes are short and bounded (validate.ts).
 */
export function eventSize(event: StoredEvent): number {
  const extensions = event.extensions;
  if (extensions === undefined) return event.data.length;
  // A live event is one object shared by every subscriber: measure its extensions once.
  let size = extensionSizes.get(extensions);
  if (size === undefined) {
    size = Buffer.byteLength(JSON.stringify(extensions));
    extensionSizes.set(extensions, size);
  }
  return event.data.length + size;
}
