import type { WriterConfig } from "../config.js";
import { EventsDbError } from "../errors.js";
import type { FailureLog } from "../failure-log.js";
import { errorReason } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { EventRepository } from "../storage/repository.js";
import { contentDigest } from "./chain.js";
import type { AppendResult, NewEvent, Precondition, StoredEvent } from "./event.js";
import { nowTime } from "./time.js";

/** How long appends fail fast after the store was found unreachable. */
export const STORE_DOWN_PAUSE_MS = 1000;
/**
 * How long a failed commit keeps the writer reported unavailable (readiness) when no commit
 * succeeds meanwhile. Bounded: a load balancer that takes the process out of rotation sends it no
 * append that could succeed, so "until a commit succeeds" alone would keep it out for good.
 */
export const FAILED_COMMIT_REPORT_MS = 30_000;
/** Appends (jobs) reaching an idle writer together from which they go in two commits (see #take). */
export const BURST_JOBS = 8;

interface Job {
  readonly events: readonly NewEvent[];
  readonly preconditions: readonly Precondition[];
  /** When it was accepted: the time of its events that carry none. */
  readonly time: string;
  /** Each event's chain content digest, computed on acceptance (see EventRepository.appendJobs). */
  readonly digests: readonly Buffer[];
  readonly bytes: number;
  readonly resolve: (results: AppendResult[]) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Group commit. When idle, an append is written at once; while a transaction is in
 * flight, new appends queue and go together in the next one. A caller is answered only after
 * COMMIT. The queue is bounded in events and bytes: when full, appends fail fast with
 * resource_exhausted (503 + Retry-After) instead of growing memory.
 */
export class Writer {
  readonly #repository: EventRepository;
  readonly #config: WriterConfig;
  readonly #metrics: Metrics;
  readonly #onCommitted: (events: readonly StoredEvent[]) => Promise<void>;
  #queue: Job[] = [];
  #queuedEvents = 0;
  #queuedBytes = 0;
  #running: Promise<void> | undefined;
  #closed = false;
  readonly #splitBursts: boolean;
  /** Until this time (epoch ms) appends fail at once: the last commit found the store unreachable. */
  #downUntil = 0;
  readonly #failures: Pick<FailureLog, "failed" | "succeeded"> | undefined;
  /** The last failed commit (monotonic ms), until a commit succeeds. */
  #lastFailure: { readonly reason: string; readonly at: number } | undefined;

  constructor(
    repository: EventRepository,
    config: WriterConfig,
    metrics: Metrics,
    onCommitted: (events: readonly StoredEvent[]) => Promise<void>,
    /** Whether the loop is free while a commit is in flight (MySQL: yes; SQLite: no, it blocks). */
    commitsOffLoop: boolean,
    /** Where failed and successful commits are reported (the store's log rule). */
    failures?: Pick<FailureLog, "failed" | "succeeded">,
  ) {
    this.#failures = failures;
    this.#splitBursts = commitsOffLoop;
    this.#repository = repository;
    this.#config = config;
    this.#metrics = metrics;
    this.#onCommitted = onCommitted;
  }

  /** Events waiting for a commit (the in-flight transaction excluded). */
  get queuedEvents(): number {
    return this.#queuedEvents;
  }

  /** True when the queue is more than 90 % full (readiness). */
  get saturated(): boolean {
    return (
      this.#queuedEvents > this.#config.queueEvents * 0.9 || this.#queuedBytes > this.#config.queueBytes * 0.9
    );
  }

  /**
   * Why the last commit was refused by a reachable store — out of space, read-only — while no
   * commit has succeeded since, for at most FAILED_COMMIT_REPORT_MS; undefined when commits work.
   */
  get failure(): string | undefined {
    const last = this.#lastFailure;
    if (last === undefined || performance.now() - last.at > FAILED_COMMIT_REPORT_MS) return undefined;
    return last.reason;
  }

  /**
   * Appends the events atomically (one transaction); resolves after COMMIT with their ids. With
   * preconditions, checked in that transaction, rejects with failed_precondition when one does not
   * hold (see EventRepository.appendJobs); an empty batch is then a check alone.
   */
  append(events: readonly NewEvent[], preconditions: readonly Precondition[] = []): Promise<AppendResult[]> {
    if (this.#closed) return Promise.reject(new EventsDbError("unavailable", "the server is shutting down"));
    if (events.length === 0 && preconditions.length === 0) return Promise.resolve([]);
    if (Date.now() < this.#downUntil) {
      return Promise.reject(
        new EventsDbError("unavailable", "the event store is unreachable; retry shortly", {
          retryAfterSeconds: 1,
        }),
      );
    }
    let bytes = 0;
    for (const event of events) bytes += event.data.length;
    if (events.length > this.#config.queueEvents || bytes > this.#config.queueBytes) {
      // Not a full queue but a batch that never fits, even an empty one: retrying cannot help.
      return Promise.reject(
        new EventsDbError(
          "payload_too_large",
          `the batch (${events.length} events, ${bytes} bytes of data) is larger than the write queue ` +
            `(--write-queue-events ${this.#config.queueEvents}, --write-queue-bytes ${this.#config.queueBytes}); ` +
            "send it in smaller batches",
        ),
      );
    }
    if (
      this.#queuedEvents + events.length > this.#config.queueEvents ||
      this.#queuedBytes + bytes > this.#config.queueBytes
    ) {
      this.#metrics.writerRejected.inc();
      return Promise.reject(
        new EventsDbError("resource_exhausted", "the write queue is full; retry shortly", {
          retryAfterSeconds: 1,
        }),
      );
    }
    // Stamped and digested now, while the loop may wait on a commit in flight, not in the commit.
    const time = nowTime();
    const digests = events.map((event) => contentDigest(event, time));
    return new Promise((resolve, reject) => {
      this.#queue.push({ events, preconditions, time, digests, bytes, resolve, reject });
      this.#queuedEvents += events.length;
      this.#queuedBytes += bytes;
      this.#updateGauges();
      // setImmediate, not a microtask: it runs once the event loop has read every socket that
      // became readable, so their appends share the transaction. That matters for SQLite, whose
      // commit blocks the loop: requests arrive in bursts between commits.
      if (this.#running === undefined) {
        this.#running = new Promise<void>((done) => setImmediate(() => this.#drain().finally(done)));
      }
    });
  }

  /** Stops taking appends and waits until everything queued is committed or failed. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#running;
  }

  async #drain(): Promise<void> {
    try {
      let idle = true;
      while (this.#queue.length > 0) {
        const jobs = this.#take(idle);
        idle = false;
        await this.#commit(jobs);
      }
    } finally {
      this.#running = undefined;
    }
  }

  /**
   * The next group: whole jobs up to the commit limits, always at least one.
   *
   * Callers answered by one commit come back together, and an idle writer would put them all in
   * one transaction again: they would move in lockstep, the loop idle while the store commits and
   * the store idle while the loop reads the next requests. So a burst of BURST_JOBS or more that
   * finds the writer idle goes in two commits, when commits leave the loop free: the first half is
   * answered (and its callers send their next appends) while the second half commits, and from
   * then on the two halves alternate.
   */
  #take(afterIdle: boolean): Job[] {
    const maxJobs =
      afterIdle && this.#splitBursts && this.#queue.length >= BURST_JOBS
        ? Math.ceil(this.#queue.length / 2)
        : this.#queue.length;
    let count = 0;
    let events = 0;
    let bytes = 0;
    for (const job of this.#queue) {
      if (count === maxJobs) break;
      if (
        count > 0 &&
        (events + job.events.length > this.#config.commitEvents ||
          bytes + job.bytes > this.#config.commitBytes)
      ) {
        break;
      }
      count++;
      events += job.events.length;
      bytes += job.bytes;
    }
    const jobs = this.#queue.splice(0, count);
    this.#queuedEvents -= events;
    this.#queuedBytes -= bytes;
    this.#updateGauges();
    return jobs;
  }

  async #commit(jobs: Job[]): Promise<void> {
    const end = this.#metrics.writerCommitSeconds.startTimer();
    let outcome: Awaited<ReturnType<EventRepository["appendJobs"]>>;
    try {
      outcome = await this.#repository.appendJobs(jobs, nowTime());
    } catch (error) {
      end();
      const lost = isConnectionError(error);
      if (jobs.length > 1 && !lost) {
        // One job must not fail the others: retry each alone, so only a bad one fails.
        for (const job of jobs) await this.#commit([job]);
        return;
      }
      // Every caller of the group gets the answer: none of its events is committed.
      const failure = new EventsDbError("unavailable", "the event store is unavailable", {
        cause: error,
        retryAfterSeconds: 1,
      });
      this.#failures?.failed("append", error, failure);
      // A store that is unreachable is the readiness store check's to report (and it reports the
      // return at once); this one is for a store that answers but refuses commits (out of space).
      if (!lost) this.#lastFailure = { reason: errorReason(error), at: performance.now() };
      for (const job of jobs) job.reject(failure);
      if (lost) {
        // While the store is unreachable, fail fast instead of queueing callers behind connect
        // timeouts; the first append after the pause probes it again. What queued meanwhile would
        // be refused now, so it is refused too rather than tried group by group.
        this.#downUntil = Date.now() + STORE_DOWN_PAUSE_MS;
        const queued = this.#queue.splice(0);
        this.#queuedEvents = 0;
        this.#queuedBytes = 0;
        this.#updateGauges();
        for (const job of queued) job.reject(failure);
      }
      return;
    }
    end();
    this.#failures?.succeeded();
    this.#lastFailure = undefined;
    let events = 0;
    for (const job of jobs) events += job.events.length;
    this.#metrics.writerBatchEvents.observe(events);
    jobs.forEach((job, i) => {
      const result = outcome.jobs[i];
      if (result === undefined || result instanceof EventsDbError) job.reject(result);
      else job.resolve(result);
    });
    // Awaited: the next transaction's events must not reach the hub before these.
    if (outcome.created.length > 0) await this.#onCommitted(outcome.created);
  }

  #updateGauges(): void {
    this.#metrics.writerQueueEvents.set(this.#queuedEvents);
    this.#metrics.writerQueueBytes.set(this.#queuedBytes);
  }
}

/** Errors that say the store is unreachable (retrying job by job would only wait longer). */
function isConnectionError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, fatal } = error as { code?: unknown; fatal?: unknown };
  return (
    fatal === true ||
    ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "PROTOCOL_CONNECTION_LOST"].includes(
      String(code),
    )
  );
}
