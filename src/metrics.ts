import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Operation label values shared by every transport (compat names of Events DB). */
export type Operation =
  | "create_event"
  | "create_events"
  | "get_event"
  | "stream_events"
  | "historic_events"
  | "delete_events"
  | "list_subjects"
  | "read_chain";

/** One push subscription's gauges (eventsdb_subscription_lag_events, _lag_seconds, _parked). */
export interface SubscriptionGauges {
  readonly id: string;
  readonly lagEvents: number;
  readonly lagSeconds: number;
  readonly parked: boolean;
}

/**
 * The process's metrics, on a registry of its own so that several apps (tests) never collide.
 * Compat names: app_event_operations_total, app_event_operation_duration_seconds,
 * app_active_event_streams.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly operations = new Counter({
    name: "app_event_operations_total",
    help: "Event operations by operation and status (success or error).",
    labelNames: ["operation", "status"] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: "app_event_operation_duration_seconds",
    help: "Duration of event operations in seconds.",
    labelNames: ["operation"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly activeStreams = new Gauge({
    name: "app_active_event_streams",
    help: "Open event streams (SSE and gRPC).",
    registers: [this.registry],
  });
  readonly writerBatchEvents = new Histogram({
    name: "eventsdb_writer_batch_events",
    help: "Events per group-commit transaction.",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
    registers: [this.registry],
  });
  readonly writerCommitSeconds = new Histogram({
    name: "eventsdb_writer_commit_duration_seconds",
    help: "Duration of one group-commit transaction in seconds.",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly writerQueueEvents = new Gauge({
    name: "eventsdb_writer_queue_events",
    help: "Events waiting for a group commit.",
    registers: [this.registry],
  });
  readonly writerQueueBytes = new Gauge({
    name: "eventsdb_writer_queue_bytes",
    help: "Bytes of event data waiting for a group commit.",
    registers: [this.registry],
  });
  readonly streamOverflows = new Counter({
    name: "eventsdb_stream_buffer_overflows_total",
    help: "Times a stream's live buffer (--client-buffer-size) overflowed and was dropped.",
    registers: [this.registry],
  });
  readonly streamCatchUps = new Counter({
    name: "eventsdb_stream_catch_up_fallbacks_total",
    help: "Times a live stream fell back to paging from the store after an overflow.",
    registers: [this.registry],
  });
  readonly storeErrors = new Counter({
    name: "eventsdb_store_errors_total",
    help: "Failed database calls by operation (the log says only when failures start, go on and end).",
    labelNames: ["operation"] as const,
    registers: [this.registry],
  });
  readonly subscriptionRefusals = new Counter({
    name: "eventsdb_subscription_refusals_total",
    help: "Subscriptions refused because the server holds --max-subscriptions already.",
    registers: [this.registry],
  });
  readonly streamRefusals = new Counter({
    name: "eventsdb_stream_refusals_total",
    help: "Streams refused before anything was sent, by the limit that refused them.",
    labelNames: ["limit"] as const,
    registers: [this.registry],
  });
  readonly writerRejected = new Counter({
    name: "eventsdb_writer_rejected_total",
    help: "Appends refused because the write queue was full.",
    registers: [this.registry],
  });
  readonly refused = new Counter({
    name: "eventsdb_requests_refused_total",
    help:
      "Requests refused 429 / RESOURCE_EXHAUSTED before any work: the address is throttled " +
      "(failed_authentications) or the caller is over --rate-limit (rate_limit).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  readonly deliveryLag = new Histogram({
    name: "eventsdb_delivery_lag_seconds",
    help: "Time from a live event's commit to its hand-over to a stream's socket.",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly subscriptionDeliveries = new Counter({
    name: "eventsdb_subscription_deliveries_total",
    help: "Events a push subscription's sink acknowledged (2xx), by subscription.",
    labelNames: ["subscription"] as const,
    registers: [this.registry],
  });
  readonly subscriptionFailures = new Counter({
    name: "eventsdb_subscription_failures_total",
    help:
      "Failed delivery attempts (and handshakes) by subscription and reason: http_<status>, redirect, " +
      "timeout, connection, refused (a private address), handshake (the sink did not consent).",
    labelNames: ["subscription", "reason"] as const,
    registers: [this.registry],
  });
  readonly subscriptionHandshakes = new Counter({
    name: "eventsdb_subscription_handshakes_total",
    help: "Web hook validation handshakes by result: accepted, refused (no consent), failed (no answer).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly #pool: { stats: () => { used: number; idle: number } } = { stats: () => ({ used: 0, idle: 0 }) };
  readonly #subscriptions: { gauges: () => readonly SubscriptionGauges[] } = { gauges: () => [] };

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const pool = this.#pool;
    new Gauge({
      name: "eventsdb_db_pool_connections_in_use",
      help: "Database connections running a query.",
      registers: [this.registry],
      collect() {
        this.set(pool.stats().used);
      },
    });
    new Gauge({
      name: "eventsdb_db_pool_connections_idle",
      help: "Open database connections waiting in the pool.",
      registers: [this.registry],
      collect() {
        this.set(pool.stats().idle);
      },
    });
    const subscriptions = this.#subscriptions;
    new Gauge({
      name: "eventsdb_subscription_lag_events",
      help: "Events after a push subscription's checkpoint, by id up to the newest (0 when caught up).",
      labelNames: ["subscription"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of subscriptions.gauges()) if (!s.parked) this.set({ subscription: s.id }, s.lagEvents);
      },
    });
    new Gauge({
      name: "eventsdb_subscription_lag_seconds",
      help: "Age (by its time) of a push subscription's oldest matching event not yet acknowledged; 0 when caught up.",
      labelNames: ["subscription"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of subscriptions.gauges()) if (!s.parked) this.set({ subscription: s.id }, s.lagSeconds);
      },
    });
    new Gauge({
      name: "eventsdb_subscription_parked",
      help: "1 for a parked push subscription (redrive resumes it), 0 for one this process delivers.",
      labelNames: ["subscription"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of subscriptions.gauges()) this.set({ subscription: s.id }, s.parked ? 1 : 0);
      },
    });
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry });
      // Gauges named like counters: `promtool check metrics` refuses them, and nodejs_active_handles
      // (by type) carries the same numbers.
      for (const name of [
        "nodejs_active_handles_total",
        "nodejs_active_requests_total",
        "nodejs_active_resources_total",
      ]) {
        this.registry.removeSingleMetric(name);
      }
    }
  }

  /** Where the pool gauges read their numbers (the store's dialect). */
  trackPool(stats: () => { used: number; idle: number }): void {
    this.#pool.stats = stats;
  }

  /** Where the subscription gauges read their numbers (the delivery manager). */
  trackSubscriptions(gauges: () => readonly SubscriptionGauges[]): void {
    this.#subscriptions.gauges = gauges;
  }

  /** Failure reasons counted per subscription, so that forgetSubscription finds every series. */
  readonly #failureReasons = new Map<string, Set<string>>();

  subscriptionDelivered(subscription: string): void {
    this.subscriptionDeliveries.inc({ subscription });
  }

  subscriptionFailed(subscription: string, reason: string): void {
    this.subscriptionFailures.inc({ subscription, reason });
    const reasons = this.#failureReasons.get(subscription) ?? new Set<string>();
    reasons.add(reason);
    this.#failureReasons.set(subscription, reasons);
  }

  /**
   * Drops a subscription's counter series once this process no longer delivers it (deleted, taken
   * over, parked): the series stay as many as the subscriptions delivered here, however many come
   * and go. Prometheus reads a series that comes back later as a counter reset.
   */
  forgetSubscription(subscription: string): void {
    this.subscriptionDeliveries.remove({ subscription });
    for (const reason of this.#failureReasons.get(subscription) ?? []) {
      this.subscriptionFailures.remove({ subscription, reason });
    }
    this.#failureReasons.delete(subscription);
  }

  /** Times one operation and counts its outcome. */
  async observe<T>(operation: Operation, fn: () => Promise<T>): Promise<T> {
    const end = this.duration.startTimer({ operation });
    try {
      const result = await fn();
      this.operations.inc({ operation, status: "success" });
      return result;
    } catch (error) {
      this.operations.inc({ operation, status: "error" });
      throw error;
    } finally {
      end();
    }
  }
}
