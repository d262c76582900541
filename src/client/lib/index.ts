/**
 * `import { EventsDbClient } from "eventsdb/client"`: the typed client library. Browser-safe ES
 * modules (fetch, no Node modules); the web console loads these very files from /ui/client/.
 */
export { fromBase64 as decodeBase64, toBase64 as encodeBase64 } from "./base64.js";
export { type ClientOptions, EventsDbClient, reconnectDelay } from "./client.js";
export { EventsDbError, type ServerErrorBody } from "./errors.js";
export { type SseMessage, SseParser } from "./sse.js";
export type {
  AppendOptions,
  CallOptions,
  ChainLinkJson,
  ChainPage,
  ChainQuery,
  CloudEvent,
  EventQuery,
  ExtensionValue,
  Page,
  Precondition,
  RawPage,
  ReconnectInfo,
  SimpleEventInput,
  StoredEvent,
  StreamMessage,
  StreamOptions,
  SubjectPage,
  SubjectQuery,
  Subscription,
  SubscriptionFilter,
  SubscriptionInput,
} from "./types.js";
