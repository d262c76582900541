import { toBase64 } from "./base64.js";
import { EventsDbError, networkReason, readText, responseError, timedOut, unreachable } from "./errors.js";
import { SseParser, SseTooLarge } from "./sse.js";
import type {
  AppendOptions,
  CallOptions,
  ChainLinkJson,
  ChainPage,
  ChainQuery,
  CloudEvent,
  EventQuery,
  Page,
  RawPage,
  SimpleEventInput,
  StoredEvent,
  StreamMessage,
  StreamOptions,
  SubjectPage,
  SubjectQuery,
  Subscription,
  SubscriptionInput,
} from "./types.js";

export interface ClientOptions {
  /** The server's base URL (`http://localhost:8080`, a path prefix behind a proxy; in a page also relative). */
  readonly url: string | URL;
  /** Sent as `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** Added to every request (the web console sends `x-eventsdb-console`). */
  readonly headers?: Readonly<Record<string, string>>;
  /** fetch's `credentials` (browsers: "same-origin" sends the session cookie). */
  readonly credentials?: "omit" | "same-origin" | "include";
  /** Every call's timeout in milliseconds (default 30 000); a stream's until its headers arrive. */
  readonly timeoutMs?: number;
  /** Retries of idempotent appends (CloudEvents, batches) after 429/5xx or a network failure (default 3). */
  readonly retries?: number;
  /** The cap on one response body, and on one stream event (default 64 MiB). */
  readonly maxResponseBytes?: number;
  /** Another fetch (tests, instrumentation). */
  readonly fetch?: typeof fetch;
}

const CE_JSON = "application/cloudevents+json";
const CE_BATCH = "application/cloudevents-batch+json";
const PEM = "application/x-pem-file";
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
const DEFAULT_IDLE_MS = 60_000;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 10_000;
/** Subjects per `GET /subjects` request when the caller names no limit: the server's cap. */
const SUBJECT_PAGE_LIMIT = 1000;
/** A stream connection that lasted this long (or delivered events) resets the reconnection delay. */
const HEALTHY_MS = 5_000;
/** Statuses worth retrying: the server is busy, restarting, or behind a failing proxy. */
const RETRYABLE: ReadonlySet<number> = new Set([408, 425, 429, 500, 502, 503, 504]);

interface RequestSpec extends CallOptions {
  readonly method?: string;
  readonly params?: URLSearchParams;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

/**
 * A typed client for the eventsdb REST API and its Server-Sent Events streams, for Node (≥ 20) and
 * browsers: fetch only, no Node modules. Every call has a timeout; failures are {@link EventsDbError}s
 * carrying the server's `{"error":{code,message}}`.
 */
export class EventsDbClient {
  /** The base URL, ending in `/`. */
  readonly url: string;
  /** The base URL without its final `/`, as messages name the server. */
  readonly #name: string;
  readonly #token: string | undefined;
  readonly #headers: Readonly<Record<string, string>>;
  readonly #credentials: "omit" | "same-origin" | "include" | undefined;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #maxBytes: number;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions) {
    // In a page, a relative URL ("/", "../") is resolved against the page's address.
    const page = (globalThis as { location?: { href?: string } }).location?.href;
    const url = new URL(options.url, page);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new TypeError(`the URL must be http:// or https://, got ${JSON.stringify(String(options.url))}`);
    }
    this.url = url.href.endsWith("/") ? url.href : `${url.href}/`;
    this.#name = this.url.slice(0, -1);
    this.#token = options.token === "" ? undefined : options.token;
    this.#headers = { ...options.headers };
    this.#credentials = options.credentials;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#retries = options.retries ?? 3;
    this.#maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /** Appends one event in the simple format; resolves with its id. Never retried: it has no id to dedupe on. */
  async append(event: SimpleEventInput, options: AppendOptions = {}): Promise<number> {
    const body = {
      source: event.source,
      type: event.type,
      subject: event.subject,
      data: toBase64(
        typeof event.data === "string"
          ? new TextEncoder().encode(event.data)
          : (event.data ?? new Uint8Array()),
      ),
    };
    const response = await this.#json<{ id: number }>(
      {
        ...options,
        method: "POST",
        headers: { "content-type": "application/json", ...preconditionsHeader(options) },
        body: JSON.stringify(body),
      },
      "events",
    );
    return response.id;
  }

  /**
   * Appends a structured CloudEvent (an object, or its JSON text as it should be stored); resolves
   * with its id. The server stores (source, id) once, so a failed attempt is retried safely: a
   * repeat answers the stored event's id.
   */
  async appendCloudEvent(event: CloudEvent | string, options: AppendOptions = {}): Promise<number> {
    const body = typeof event === "string" ? event : JSON.stringify(structured(event));
    const response = await this.#idempotent<{ id: number }>(CE_JSON, body, options);
    return response.id;
  }

  /** Appends structured CloudEvents all or nothing, retried like {@link appendCloudEvent}; ids in order. */
  async appendBatch(events: readonly CloudEvent[] | string, options: AppendOptions = {}): Promise<number[]> {
    const body = typeof events === "string" ? events : JSON.stringify(events.map(structured));
    const response = await this.#idempotent<{ ids: number[] }>(CE_BATCH, body, options);
    return response.ids;
  }

  /** One event by its server id (404 `not_found` when there is none). */
  get(id: number, options: CallOptions = {}): Promise<StoredEvent> {
    return this.#json<StoredEvent>(options, `events/${id}`);
  }

  /** One event as a structured CloudEvent, as the text the server sent (JSON data as stored). */
  async getCloudEvent(id: number, options: CallOptions = {}): Promise<string> {
    const response = await this.#request(`events/${id}`, { ...options, headers: { accept: CE_JSON } });
    return response.text;
  }

  /** Pages of `GET /events` in id order, following `next_from_id` until the last page. */
  async *pages(
    query: EventQuery & { limit?: number } = {},
    options: CallOptions = {},
  ): AsyncGenerator<Page<StoredEvent>> {
    yield* follow(query.fromId ?? 0, async (from) => {
      const params = queryParams(query, from);
      if (query.limit !== undefined) params.set("limit", String(query.limit));
      const page = await this.#json<{ events: StoredEvent[]; has_more: boolean; next_from_id: number }>(
        { ...options, params },
        "events",
      );
      return { events: page.events, hasMore: page.has_more, nextFromId: page.next_from_id };
    });
  }

  /** Every matching event in id order, a page at a time. */
  async *events(query: EventQuery = {}, options: CallOptions = {}): AsyncGenerator<StoredEvent> {
    for await (const page of this.pages(query, options)) yield* page.events;
  }

  /** Pages as CloudEvents batches, the text as the server wrote it (what `eventsdb export` saves). */
  async *cloudEventPages(
    query: EventQuery & { limit?: number } = {},
    options: CallOptions = {},
  ): AsyncGenerator<RawPage> {
    yield* follow(query.fromId ?? 0, async (from) => {
      const params = queryParams(query, from);
      if (query.limit !== undefined) params.set("limit", String(query.limit));
      const { text, headers } = await this.#request("events", {
        ...options,
        params,
        headers: { accept: CE_BATCH },
      });
      return {
        json: text,
        hasMore: headers.get("x-has-more") === "true",
        nextFromId: Number(headers.get("x-next-from-id")),
      };
    });
  }

  /**
   * The highest id matching the query (0 when none), found with `limit=1` pages: a galloping search
   * then a bisection, about 2·log2(id) small requests (the API has no "last id" route).
   */
  async newestId(query: EventQuery = {}, options: CallOptions = {}): Promise<number> {
    const firstAfter = async (fromId: number): Promise<number | undefined> => {
      const params = queryParams(query, fromId);
      params.set("limit", "1");
      const page = await this.#json<{ events: StoredEvent[] }>({ ...options, params }, "events");
      return page.events[0]?.id;
    };
    let known = await firstAfter(query.fromId ?? 0);
    if (known === undefined) return query.fromId ?? 0;
    // Invariant from here: `known` matches; nothing matches above `high`.
    let high: number;
    for (let step = 1; ; step *= 2) {
      const probe = Math.min(known + step, Number.MAX_SAFE_INTEGER);
      const next = await firstAfter(probe);
      if (next === undefined) {
        high = probe;
        break;
      }
      known = next;
    }
    while (known < high) {
      const middle = Math.floor((known + high) / 2);
      const next = await firstAfter(middle);
      if (next === undefined) high = middle;
      else known = next;
    }
    return known;
  }

  /**
   * Pages of `GET /events/chain`: every link of the tamper-evident chain above `fromId` (default 0:
   * from the first), tombstones of deleted events included, following `next_from_id` to the end.
   * Reading the chain needs a token that may read every subject.
   */
  async *chainPages(query: ChainQuery = {}, options: CallOptions = {}): AsyncGenerator<ChainPage> {
    yield* follow(query.fromId ?? 0, async (from) => {
      const params = new URLSearchParams({ from_id: String(from) });
      if (query.limit !== undefined) params.set("limit", String(query.limit));
      const page = await this.#json<{ links: ChainLinkJson[]; has_more: boolean; next_from_id: number }>(
        { ...options, params },
        "events/chain",
      );
      return { links: page.links, hasMore: page.has_more, nextFromId: page.next_from_id };
    });
  }

  /** Every link of the chain in id order, a page at a time (see {@link chainPages}). */
  async *chain(query: ChainQuery = {}, options: CallOptions = {}): AsyncGenerator<ChainLinkJson> {
    for await (const page of this.chainPages(query, options)) yield* page.links;
  }

  /**
   * The server's Ed25519 public key (PEM, `GET /.well-known/eventsdb/signing-key`) that verifies
   * the events' signatures; undefined when the server does not sign.
   */
  async signingKey(options: CallOptions = {}): Promise<string | undefined> {
    try {
      const { text } = await this.#request(".well-known/eventsdb/signing-key", {
        ...options,
        headers: { accept: PEM },
      });
      return text;
    } catch (error) {
      if (error instanceof EventsDbError && error.status === 404) return undefined;
      throw error;
    }
  }

  /**
   * Sorted subjects, optionally only those starting with `prefix`, all in one answer (the unpaged
   * list; {@link eachSubject} reads them a page at a time).
   */
  subjects(prefix?: string, options: CallOptions = {}): Promise<string[]> {
    const params = new URLSearchParams();
    if (prefix !== undefined) params.set("prefix", prefix);
    return this.#json<string[]>({ ...options, params }, "subjects");
  }

  /**
   * One page of `GET /subjects`: at most `limit` (default 1000, the server's cap) sorted subjects
   * after `after`, with whether more follow and the `after` of the next page. A server without
   * paging (the Go service) answers everything in one page with `hasMore` false.
   */
  async subjectPage(query: SubjectQuery = {}, options: CallOptions = {}): Promise<SubjectPage> {
    const params = new URLSearchParams();
    if (query.prefix !== undefined) params.set("prefix", query.prefix);
    if (query.after !== undefined && query.after !== "") params.set("after", query.after);
    params.set("limit", String(query.limit ?? SUBJECT_PAGE_LIMIT));
    const { text, headers } = await this.#request("subjects", { ...options, params });
    const hasMore = headers.get("x-has-more") === "true";
    return {
      subjects: JSON.parse(text) as string[],
      hasMore,
      nextAfter: hasMore ? decodeURIComponent(headers.get("x-next-after") ?? "") : "",
    };
  }

  /** Pages of `GET /subjects` from `after`, following `nextAfter` until the last page. */
  async *subjectPages(query: SubjectQuery = {}, options: CallOptions = {}): AsyncGenerator<SubjectPage> {
    for (let after = query.after ?? ""; ; ) {
      const page = await this.subjectPage({ ...query, after }, options);
      yield page;
      if (!page.hasMore) return;
      if (page.nextAfter === "" || page.nextAfter === after) {
        throw new EventsDbError(`the server's cursor did not advance past subject ${after}`, {
          status: 200,
          code: "unknown",
        });
      }
      after = page.nextAfter;
    }
  }

  /** Every matching subject in order, a page at a time (see {@link subjectPages}). */
  async *eachSubject(query: SubjectQuery = {}, options: CallOptions = {}): AsyncGenerator<string> {
    for await (const page of this.subjectPages(query, options)) yield* page.subjects;
  }

  /** Deletes the matching events (a subject is required); resolves with how many. */
  async delete(
    query: EventQuery & { subject: string | readonly string[] },
    options: CallOptions = {},
  ): Promise<number> {
    const params = queryParams(query, query.fromId);
    const response = await this.#json<{ deleted: number }>(
      { ...options, method: "DELETE", params },
      "events",
    );
    return response.deleted;
  }

  /** Creates a push subscription (`POST /subscriptions`); the server assigns its id. Never retried. */
  createSubscription(subscription: SubscriptionInput, options: CallOptions = {}): Promise<Subscription> {
    return this.#json<Subscription>(
      {
        ...options,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ protocol: "HTTP", ...subscription }),
      },
      "subscriptions",
    );
  }

  /** The caller's subscriptions, oldest first (a token with the write scope "*": everyone's). */
  listSubscriptions(options: CallOptions = {}): Promise<Subscription[]> {
    return this.#json<Subscription[]>(options, "subscriptions");
  }

  /** One subscription (404 `not_found` when absent or someone else's). */
  getSubscription(id: string, options: CallOptions = {}): Promise<Subscription> {
    return this.#json<Subscription>(options, `subscriptions/${encodeURIComponent(id)}`);
  }

  /**
   * Replaces a subscription (`PUT`): every field as given, defaults for the others. Without
   * `sinkcredential` the stored one stays while the sink is the same; `null` removes it.
   */
  updateSubscription(
    id: string,
    subscription: SubscriptionInput,
    options: CallOptions = {},
  ): Promise<Subscription> {
    return this.#json<Subscription>(
      {
        ...options,
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ protocol: "HTTP", ...subscription }),
      },
      `subscriptions/${encodeURIComponent(id)}`,
    );
  }

  async deleteSubscription(id: string, options: CallOptions = {}): Promise<void> {
    await this.#request(`subscriptions/${encodeURIComponent(id)}`, { ...options, method: "DELETE" });
  }

  /**
   * Resumes a parked subscription where it stopped, or after `from` (an event id, or "now"). On an
   * active one, `from` moves its position.
   */
  redriveSubscription(id: string, from?: number | "now", options: CallOptions = {}): Promise<Subscription> {
    return this.#json<Subscription>(
      {
        ...options,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(from === undefined ? {} : { from }),
      },
      `subscriptions/${encodeURIComponent(id)}/redrive`,
    );
  }

  /** Exchanges a token for the browser's session cookie (`POST /auth/session`); resolves with who signed in. */
  signIn<User = unknown>(token: string, options: CallOptions = {}): Promise<User> {
    return this.#json<User>(
      {
        ...options,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token }),
      },
      "auth/session",
    );
  }

  /** Ends the browser's session (`DELETE /auth/session`). */
  async signOut(options: CallOptions = {}): Promise<void> {
    await this.#request("auth/session", { ...options, method: "DELETE" });
  }

  /**
   * The live stream (`GET /events/stream`): stored events after `fromId` (default 0: all), then new
   * ones as they are committed, each once and in id order. After a drop — server restart, network
   * error, 429/5xx, `idleTimeoutMs` without a heartbeat — it reconnects by itself with
   * `Last-Event-ID` (250 ms, doubling up to 10 s, or the server's `Retry-After`), so nothing is
   * missed or repeated. It ends (returns) when `signal` aborts or the loop breaks; it throws when the first
   * connection fails or the server refuses the stream for good (400, 401, 403, …).
   */
  stream(options: StreamOptions = {}): AsyncGenerator<StreamMessage<StoredEvent>> {
    return this.#stream<StoredEvent>(options, undefined);
  }

  /** {@link stream} with each event as a structured CloudEvent (`format=cloudevents`). */
  streamCloudEvents(options: StreamOptions = {}): AsyncGenerator<StreamMessage<Record<string, unknown>>> {
    return this.#stream<Record<string, unknown>>(options, "cloudevents");
  }

  async *#stream<E>(options: StreamOptions, format: string | undefined): AsyncGenerator<StreamMessage<E>> {
    const outer = options.signal;
    const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_MS;
    const firstDelay = options.reconnectDelayMs ?? FIRST_DELAY_MS;
    let cursor = options.fromId ?? 0;
    let connected = false;
    for (let failures = 0; ; failures++) {
      const started = Date.now();
      let delivered = 0;
      let reason = "";
      let retryAfterMs = 0;
      const connection = new AbortController();
      const signal = outer === undefined ? connection.signal : AbortSignal.any([outer, connection.signal]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      let timeoutReason = "";
      const arm = (ms: number, why: string) => {
        clearTimeout(timer);
        timer = undefined;
        if (ms > 0) {
          timer = setTimeout(() => {
            timeoutReason = why;
            connection.abort();
          }, ms);
        }
      };
      try {
        const params = queryParams(options, cursor);
        if (format !== undefined) params.set("format", format);
        const headers: Record<string, string> = { accept: "text/event-stream" };
        if (cursor > 0) headers["last-event-id"] = String(cursor);
        arm(this.#timeoutMs, `no answer within ${this.#timeoutMs / 1000} s`);
        let response: Response | undefined;
        try {
          response = await this.#fetch(this.#url("events/stream", params), this.#init({ headers, signal }));
        } catch (error) {
          if (outer?.aborted) return;
          if (!connected)
            throw timeoutReason === ""
              ? unreachable(this.#name, error)
              : timedOut(this.#name, this.#timeoutMs);
          reason = timeoutReason || `cannot reach ${this.#name} (${networkReason(error)})`;
        }
        if (response !== undefined && (!response.ok || response.body === null)) {
          const failure = await responseError(response);
          if (!RETRYABLE.has(response.status)) throw failure;
          reason = `the server refused the stream: ${failure.message}`;
          retryAfterMs = (failure.retryAfter ?? 0) * 1000;
        } else if (response?.body) {
          connected = true;
          options.onOpen?.();
          // A cap in characters: a text never has more UTF-16 units than UTF-8 bytes, so no event
          // within the byte cap is refused.
          const parser = new SseParser(this.#maxBytes);
          const decoder = new TextDecoder();
          const reader = response.body.getReader();
          for (;;) {
            arm(idleMs, `nothing received for ${idleMs / 1000} s`);
            let chunk: Awaited<ReturnType<typeof reader.read>>;
            try {
              chunk = await reader.read();
            } catch (error) {
              if (outer?.aborted) return;
              reason = timeoutReason || `the stream broke (${networkReason(error)})`;
              break;
            }
            if (chunk.done) {
              reason = "the server ended the stream";
              break;
            }
            arm(0, ""); // a slow consumer is not an idle server
            let messages: ReturnType<SseParser["push"]>;
            try {
              messages = parser.push(decoder.decode(chunk.value, { stream: true }));
            } catch (error) {
              if (!(error instanceof SseTooLarge)) throw error;
              // Not retried: the same event would come again.
              throw tooLarge(response.status, this.#maxBytes);
            }
            for (const message of messages) {
              const id = /^\d{1,16}$/.test(message.id) ? Number(message.id) : Number.NaN;
              if (id <= cursor) continue; // already delivered before a reconnect
              const event = JSON.parse(message.data) as E;
              if (Number.isSafeInteger(id)) cursor = id;
              delivered++;
              yield { id, data: message.data, event };
            }
          }
        }
      } finally {
        clearTimeout(timer);
        connection.abort();
      }
      if (delivered > 0 || Date.now() - started >= HEALTHY_MS) failures = 0;
      const delayMs = Math.max(retryAfterMs, reconnectDelay(failures, firstDelay));
      options.onReconnect?.({ reason, delayMs, lastId: cursor });
      try {
        await sleep(delayMs, outer);
      } catch (error) {
        if (outer?.aborted) return;
        throw error;
      }
    }
  }

  /** POSTs an idempotent body, retrying 408/425/429/5xx and network failures (Retry-After, backoff). */
  async #idempotent<T>(contentType: string, body: string, options: AppendOptions): Promise<T> {
    const headers = { "content-type": contentType, ...preconditionsHeader(options) };
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#json<T>({ ...options, method: "POST", headers, body }, "events");
      } catch (error) {
        if (!(error instanceof EventsDbError) || attempt >= this.#retries) throw error;
        if (error.status !== 0 && !RETRYABLE.has(error.status)) throw error;
        const delay = Math.max((error.retryAfter ?? 0) * 1000, reconnectDelay(attempt, FIRST_DELAY_MS));
        await sleep(Math.min(delay, 30_000), options.signal);
      }
    }
  }

  async #json<T>(spec: RequestSpec, path: string): Promise<T> {
    const { text } = await this.#request(path, {
      ...spec,
      headers: { accept: "application/json", ...spec.headers },
    });
    if (text === "") return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new EventsDbError(`the server answered text that is not JSON from ${path}`, {
        status: 200,
        code: "unknown",
      });
    }
  }

  /** One request with its timeout; resolves with the whole 2xx body, rejects with EventsDbError. */
  async #request(path: string, spec: RequestSpec): Promise<{ text: string; headers: Headers }> {
    const timeoutMs = spec.timeoutMs ?? this.#timeoutMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = spec.signal === undefined ? timeout : AbortSignal.any([spec.signal, timeout]);
    try {
      const response = await this.#fetch(
        this.#url(path, spec.params),
        this.#init({
          method: spec.method ?? "GET",
          headers: spec.headers ?? {},
          signal,
          ...(spec.body === undefined ? {} : { body: spec.body }),
        }),
      );
      if (!response.ok) throw await responseError(response);
      const text = await readText(response, this.#maxBytes);
      if (text === undefined) throw tooLarge(response.status, this.#maxBytes);
      return { text, headers: response.headers };
    } catch (error) {
      if (error instanceof EventsDbError) throw error;
      if (spec.signal?.aborted) throw spec.signal.reason;
      if (timeout.aborted) throw timedOut(this.#name, timeoutMs);
      throw unreachable(this.#name, error);
    }
  }

  #url(path: string, params?: URLSearchParams): string {
    const query = params === undefined ? "" : params.toString();
    return `${this.url}${path}${query === "" ? "" : `?${query}`}`;
  }

  #init(init: {
    method?: string;
    headers: Record<string, string>;
    signal: AbortSignal;
    body?: string;
  }): RequestInit {
    const headers: Record<string, string> = { ...this.#headers, ...init.headers };
    if (this.#token !== undefined) headers.authorization = `Bearer ${this.#token}`;
    return {
      ...init,
      headers,
      ...(this.#credentials === undefined ? {} : { credentials: this.#credentials }),
    };
  }
}

function tooLarge(status: number, max: number): EventsDbError {
  return new EventsDbError(`the server's answer is larger than maxResponseBytes (${max} bytes)`, {
    status,
    code: "resource_exhausted",
  });
}

/** A CloudEvent object as the JSON the server takes: specversion 1.0 by default, bytes as data_base64. */
function structured(event: CloudEvent): Record<string, unknown> {
  const out: Record<string, unknown> = { specversion: "1.0", ...event };
  if (event.data instanceof Uint8Array) {
    delete out.data;
    out.data_base64 = toBase64(event.data);
  }
  return out;
}

/** The filter parameters of `GET /events`, `/events/stream` and `DELETE /events`. */
export function queryParams(query: EventQuery, fromId: number | undefined): URLSearchParams {
  const params = new URLSearchParams();
  const subjects =
    query.subject === undefined ? [] : typeof query.subject === "string" ? [query.subject] : query.subject;
  for (const subject of subjects) params.append("subject", subject);
  if (query.recursive) params.set("recursive", "true");
  if (query.type !== undefined) params.set("type", query.type);
  if (fromId !== undefined) params.set("from_id", String(fromId));
  return params;
}

/**
 * The pages of a paged route from cursor `from`: `read` fetches the page at a cursor; the next is
 * read at its `nextFromId` while `hasMore`, and a cursor that does not advance is refused.
 */
async function* follow<P extends { readonly hasMore: boolean; readonly nextFromId: number }>(
  from: number,
  read: (from: number) => Promise<P>,
): AsyncGenerator<P> {
  for (let at = from; ; ) {
    const page = await read(at);
    yield page;
    if (!page.hasMore) return;
    at = advance(at, page.nextFromId);
  }
}

function advance(from: number, next: number): number {
  if (!Number.isSafeInteger(next) || next <= from) {
    throw new EventsDbError(`the server's cursor did not advance past id ${from}`, {
      status: 200,
      code: "unknown",
    });
  }
  return next;
}

/** The wait before reconnection attempt `failures` (0-based): doubling from `first`, at most 10 s, ±20 %. */
export function reconnectDelay(failures: number, first: number = FIRST_DELAY_MS): number {
  return Math.round(Math.min(MAX_DELAY_MS, first * 2 ** failures) * (0.8 + Math.random() * 0.4));
}

/** setTimeout as a promise that rejects with the signal's reason when it aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The EventsDB-Preconditions header of an append (EventSourcingDB's shape), or none. */
function preconditionsHeader(options: AppendOptions): Record<string, string> {
  const preconditions = options.preconditions ?? [];
  if (preconditions.length === 0) return {};
  const wire = preconditions.map((condition) => {
    switch (condition.kind) {
      case "pristine":
        return { type: "isSubjectPristine", payload: { subject: condition.subject } };
      case "populated":
        return { type: "isSubjectPopulated", payload: { subject: condition.subject } };
      default:
        return {
          type: "isSubjectOnEventId",
          payload: { subject: condition.subject, eventId: String(condition.id) },
        };
    }
  });
  // A header is ASCII: other characters of subjects travel as JSON \u escapes.
  const json = JSON.stringify(wire).replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return { "eventsdb-preconditions": json };
}
