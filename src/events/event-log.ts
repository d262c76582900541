import {
  ANYONE,
  canRead,
  clientKey,
  type Principal,
  readableFilter,
  requireReadAll,
  requireWrite,
} from "../auth/tokens.js";
import type { Config, Limits } from "../config.js";
import { EventsDbError, invalidArgument } from "../errors.js";
import { FailureLog } from "../failure-log.js";
import { CommitFeed } from "../hub/feed.js";
import { Hub, type SubscribeRequest } from "../hub/hub.js";
import type { Subscription } from "../hub/subscription.js";
import { errorReason, type Logger, SILENT_LOGGER } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { StorageDialect } from "../storage/dialect.js";
import { migrate } from "../storage/migrate.js";
import { openDialect } from "../storage/open.js";
import { EventRepository, type SubjectsPage, type SubjectsQuery } from "../storage/repository.js";
import { withTimeout } from "../storage/timeout.js";
import type {
  AppendResult,
  EventFilter,
  NewEvent,
  Page,
  PageQuery,
  Precondition,
  StoredEvent,
} from "./event.js";
import { createSigner, type Signer } from "./signing.js";
import { validateSubject } from "./validate.js";
import { Writer } from "./writer.js";

/** Largest page a client may ask for. */
export const MAX_PAGE_LIMIT = 1000;
/** Most subjects one read or stream may name (browsers multiplex several on one connection). */
export const MAX_FILTER_SUBJECTS = 100;
/** Most preconditions one append may carry. */
export const MAX_PRECONDITIONS = 100;
const PRECONDITION_KINDS: ReadonlySet<string> = new Set(["pristine", "populated", "on_event"]);
/** Page size when the client names none. */
export const DEFAULT_PAGE_LIMIT = 100;
/**
 * The longest /readyz (and gRPC health) waits for the store, below --db-timeout when that is
 * longer: probes give up after about a second (Kubernetes' default timeoutSeconds is 1).
 */
export const READINESS_TIMEOUT_MS = 1000;

/** What a client asks of a page of subjects (the read scopes come from the principal). */
export type SubjectsRequest = Omit<SubjectsQuery, "scopes">;
export type { SubjectsPage };

export interface DependencyCheck {
  readonly status: "ok" | "unavailable";
  readonly [detail: string]: unknown;
}

export interface Readiness {
  readonly status: "ok" | "unavailable";
  readonly checks: { readonly store: DependencyCheck; readonly writer: DependencyCheck };
}

type CommitListener = (events: readonly StoredEvent[]) => void;

/** A stream as a transport asks for it. */
export interface StreamRequest extends Omit<SubscribeRequest, "client" | "stillValid"> {
  /** The caller's address: anonymous callers count per address in --max-streams-per-client. */
  readonly address?: string;
}

/**
 * The domain service every transport calls: validate, append (group commit), read, delete,
 * list subjects. It owns the storage dialect and the writer and closes them.
 */
export class EventLog {
  readonly limits: Limits;
  /** Most bytes of events in one page (--client-buffer-bytes), on every transport. */
  readonly pageBytes: number;
  /** The signer of new events' chain hashes (--signing-key-file), if any. */
  readonly signer: Signer | undefined;
  readonly #dialect: StorageDialect;
  readonly #repository: EventRepository;
  readonly #writer: Writer;
  readonly #hub: Hub;
  readonly #feed: CommitFeed;
  readonly #listeners = new Set<CommitListener>();
  readonly #readinessTimeoutMs: number;
  /** Store failures: logged once per change of state, each counted (eventsdb_store_errors_total). */
  readonly #failures: FailureLog;
  /** The ping in flight: concurrent probes share it instead of each taking a connection. */
  #ping: Promise<void> | undefined;

  private constructor(
    dialect: StorageDialect,
    config: Config,
    metrics: Metrics,
    log: Logger,
    lastId: number,
    signer: Signer | undefined,
  ) {
    this.signer = signer;
    this.limits = config.limits;
    this.#failures = new FailureLog(log, (operation) => metrics.storeErrors.inc({ operation }));
    this.#readinessTimeoutMs = Math.min(READINESS_TIMEOUT_MS, config.dbTimeoutMs);
    this.pageBytes = config.streams.clientBufferBytes;
    this.#dialect = dialect;
    this.#repository = new EventRepository(
      dialect,
      signer === undefined ? undefined : { signer, everyEvent: config.signingMode === "event" },
    );
    this.#hub = new Hub(
      config.streams,
      metrics,
      (query) => this.page(query),
      (error) => this.#failures.failed("stream", error),
    );
    this.#feed = new CommitFeed({
      lastId,
      page: (query) =>
        this.#call("poll", () => this.#repository.page({ ...query, maxBytes: this.pageBytes })),
      lastCommitted: () => this.#call("poll", () => this.#repository.lastCommitted()),
      publish: (events) => {
        this.#hub.publish(events);
        for (const listener of this.#listeners) listener(events);
      },
      listening: () => this.#hub.size > 0 || this.#listeners.size > 0,
      pollMs: config.streams.storePollMs,
      pollMinMs: config.streams.storePollMinMs,
      onError: (error) => this.#failures.failed("poll", error),
    });
    this.#writer = new Writer(
      this.#repository,
      config.writer,
      metrics,
      (events) => this.#feed.committed(events),
      dialect.commitsOffLoop,
      this.#failures,
    );
  }

  /**
   * Opens the configured store and applies pending migrations. `log` is the process's logger (a
   * child of it): the store says there when the database fails and when it works again.
   */
  static async open(config: Config, metrics: Metrics, log: Logger = SILENT_LOGGER): Promise<EventLog> {
    // The key first: a bad key file fails the start before anything touches the store.
    const signer =
      config.signingKeyFile === undefined
        ? undefined
        : createSigner(config.signingKeyFile, config.dbTimeoutMs);
    const dialect = openDialect(config.store, config.dbTimeoutMs);
    let lastId: number;
    try {
      await migrate(dialect);
      lastId = await new EventRepository(dialect).lastId();
    } catch (error) {
      await dialect.close();
      await signer?.close();
      throw error;
    }
    return new EventLog(dialect, config, metrics, log, lastId, signer);
  }

  get dialect(): StorageDialect {
    return this.#dialect;
  }

  get repository(): EventRepository {
    return this.#repository;
  }

  /**
   * Called with committed events in id order, each once — also those other processes appended to
   * the same database, while anyone listens (the hub receives the same).
   */
  onCommitted(listener: CommitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Appends events atomically; ids in input order. Idempotent on (source, CloudEvents id).
   * Every event's subject must be in the principal's write scopes. With preconditions, stores
   * nothing and throws failed_precondition unless each holds at commit (see Precondition).
   */
  async append(
    events: readonly NewEvent[],
    principal: Principal = ANYONE,
    preconditions: readonly Precondition[] = [],
  ): Promise<AppendResult[]> {
    if (events.length > this.limits.maxBatchEvents) {
      throw invalidArgument(
        `a batch holds at most ${this.limits.maxBatchEvents} events (--max-batch-events)`,
      );
    }
    checkPreconditions(preconditions);
    requireWrite(
      principal,
      events.map((e) => e.subject),
    );
    // A precondition tells whether its subject has events (and its last id): a read.
    for (const { subject } of preconditions) {
      if (!canRead(principal, subject)) {
        throw new EventsDbError(
          "permission_denied",
          `token ${principal.name} may not read subject ${subject} (a precondition reads it)`,
        );
      }
    }
    return this.#writer.append(events, preconditions);
  }

  /**
   * One event by id. An event the principal may not read is answered exactly like a missing one,
   * so a token cannot learn which ids exist outside its scopes.
   */
  async get(id: number, principal: Principal = ANYONE): Promise<StoredEvent> {
    checkId(id, "id", 1);
    const event = await this.#call("get", () => this.#repository.get(id));
    if (event === undefined || !canRead(principal, event.subject)) {
      throw new EventsDbError("not_found", `event ${id} not found`);
    }
    return event;
  }

  /**
   * Events with id > fromId in id order, cut to what the principal may read, at most `limit` and
   * --client-buffer-bytes of events (the first one always; `hasMore` says when there are more).
   */
  async page(query: PageQuery, principal: Principal = ANYONE): Promise<Page> {
    checkFilter(query);
    const maxBytes = Math.min(query.maxBytes ?? this.pageBytes, this.pageBytes);
    query = { ...query, ...readableFilter(principal, query), maxBytes };
    checkId(query.fromId, "from_id", 0);
    checkLimit(query.limit);
    return this.#call("page", () => this.#repository.page(query));
  }

  /**
   * The tamper-evident chain: every link with id > fromId in id order, tombstones of deleted
   * events included, at most `limit` and --client-buffer-bytes of events (the first always), as
   * pages are. It shows every subject, so only a principal that may read all of them may read it.
   */
  async chain(query: { fromId: number; limit: number }, principal: Principal = ANYONE): Promise<Page> {
    requireReadAll(principal, "the chain");
    checkId(query.fromId, "from_id", 0);
    checkLimit(query.limit);
    return this.#call("chain", () => this.#repository.chain(query.fromId, query.limit, this.pageBytes));
  }

  /** Deletes the subjects' events with id > fromId; the subjects must be in the write scopes. */
  async delete(filter: EventFilter, fromId: number, principal: Principal = ANYONE): Promise<number> {
    if (filter.subjects.length === 0) throw invalidArgument("subject is required");
    checkFilter(filter);
    requireWrite(principal, filter.subjects);
    checkId(fromId, "from_id", 0);
    return this.#call("delete", () => this.#repository.delete(filter, fromId));
  }

  /**
   * A live subscription: catch-up from `fromId`, then live, gapless (see hub/subscription.ts).
   * Throws too_many_requests beyond --max-total-clients or --max-streams-per-client; ends with
   * reason "revoked" once the principal's credential no longer holds.
   */
  subscribe(request: StreamRequest, principal: Principal = ANYONE): Subscription {
    const filter = this.#checkStream(request, principal);
    const { address: _, ...rest } = request;
    return this.#hub.subscribe({
      ...rest,
      filter,
      client: clientKey(principal, request.address ?? ""),
      ...(principal.stillValid === undefined ? {} : { stillValid: principal.stillValid }),
    });
  }

  /** Every check `subscribe` makes, limits included, without opening anything (HEAD). */
  checkStream(request: StreamRequest, principal: Principal = ANYONE): void {
    this.#checkStream(request, principal);
    this.#hub.admit(clientKey(principal, request.address ?? ""));
  }

  #checkStream(request: StreamRequest, principal: Principal): EventFilter {
    checkFilter(request.filter);
    checkId(request.fromId, "from_id", 0);
    return readableFilter(principal, request.filter);
  }

  /** Ends open streams whose credential no longer holds, now (the tokens were reloaded). */
  recheckStreams(): Promise<void> {
    return this.#hub.revalidate();
  }

  /** Ends every open stream (first step of shutdown) with reason "shutdown". */
  endStreams(): void {
    this.#hub.close();
  }

  /**
   * One page of the subjects starting with `prefix` that the principal may read, after `after`, at
   * most `limit` (1 to MAX_PAGE_LIMIT; undefined = all, the unpaged list). The read scopes are
   * applied in the query, so a page is full whenever that many readable subjects follow.
   */
  async subjectPage(query: SubjectsRequest, principal: Principal = ANYONE): Promise<SubjectsPage> {
    if (query.limit !== undefined) checkLimit(query.limit);
    if (query.after.length > 1024) throw invalidArgument("after is too long");
    const scopes = principal.read.includes("*") ? undefined : principal.read;
    return this.#call("subjects", () => this.#repository.subjects({ ...query, scopes }));
  }

  /** Every subject starting with `prefix` that the principal may read (the unpaged list). */
  async subjects(prefix: string, principal: Principal = ANYONE): Promise<string[]> {
    return (await this.subjectPage({ prefix, after: "" }, principal)).subjects;
  }

  /**
   * Store reachable, and writer neither saturated nor failing its commits (e.g. a database out of
   * space answers reads but refuses writes), with per-dependency detail.
   */
  async readiness(): Promise<Readiness> {
    let store: DependencyCheck;
    const started = performance.now();
    try {
      this.#ping ??= withTimeout(this.#repository.ping(), this.#readinessTimeoutMs, "readiness").finally(
        () => {
          this.#ping = undefined;
        },
      );
      await this.#ping;
      this.#failures.succeeded();
      store = { status: "ok", dialect: this.#dialect.name, latency_ms: round(performance.now() - started) };
    } catch (error) {
      this.#failures.failed("ping", error);
      store = { status: "unavailable", dialect: this.#dialect.name, error: errorReason(error) };
    }
    const failure = this.#writer.failure;
    const writer: DependencyCheck = {
      status: this.#writer.saturated || failure !== undefined ? "unavailable" : "ok",
      queued_events: this.#writer.queuedEvents,
      ...(failure === undefined ? {} : { error: failure }),
    };
    const status = store.status === "ok" && writer.status === "ok" ? "ok" : "unavailable";
    return { status, checks: { store, writer } };
  }

  /**
   * One read from the store: a failure is logged by the rule (FailureLog) and answered as
   * unavailable (503 + Retry-After), the cause kept for the log only.
   */
  async #call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await fn();
    } catch (error) {
      const unavailable = new EventsDbError("unavailable", "the event store is unavailable", {
        cause: error,
        retryAfterSeconds: 1,
      });
      this.#failures.failed(operation, error, unavailable);
      throw unavailable;
    }
    this.#failures.succeeded();
    return result;
  }

  /** Ends streams, flushes the writer, then closes the database. */
  async close(): Promise<void> {
    this.#hub.close();
    this.#feed.close();
    await this.#writer.close();
    await this.#dialect.close();
    await this.signer?.close();
  }
}

function checkId(value: number, name: string, min: number): void {
  if (!Number.isSafeInteger(value) || value < min)
    throw invalidArgument(`${name} must be an integer >= ${min}`);
}

/** A page size a client may ask for: 1 to MAX_PAGE_LIMIT. */
function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw invalidArgument(`limit must be between 1 and ${MAX_PAGE_LIMIT}`);
  }
}

/** Well-formed preconditions (see Precondition), at most MAX_PRECONDITIONS. */
function checkPreconditions(preconditions: readonly Precondition[]): void {
  if (preconditions.length > MAX_PRECONDITIONS) {
    throw invalidArgument(`at most ${MAX_PRECONDITIONS} preconditions in one append`);
  }
  preconditions.forEach((p, i) => {
    const at = `precondition ${i + 1}`;
    if (!PRECONDITION_KINDS.has(p.kind)) {
      throw invalidArgument(`${at}: kind must be one of ${[...PRECONDITION_KINDS].join(", ")}`);
    }
    validateSubject(p.subject, `${at}: `);
    if (p.kind === "on_event" && (!Number.isSafeInteger(p.id) || p.id < 1)) {
      throw invalidArgument(`${at}: id must be a positive integer`);
    }
  });
}

function checkFilter(filter: EventFilter): void {
  if (filter.subjects.length > MAX_FILTER_SUBJECTS) {
    throw invalidArgument(`at most ${MAX_FILTER_SUBJECTS} subjects in one filter`);
  }
  if (filter.subjects.some((s) => s === "")) throw invalidArgument("subject must not be empty");
  if (filter.subjects.some((s) => s.length > 1024)) throw invalidArgument("subject is too long");
  if (filter.type !== undefined && filter.type.length > 1024) throw invalidArgument("type is too long");
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
