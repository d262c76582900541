import type { Principal } from "../auth/tokens.js";
import type { NewEvent, Precondition } from "../events/event.js";
import type { EventLog } from "../events/event-log.js";
import type { Metrics } from "../metrics.js";

export interface AppendDeps {
  readonly eventLog: EventLog;
  readonly metrics: Metrics;
}

/** What a transport reads from an append request. */
export interface AppendInput {
  readonly events: readonly NewEvent[];
  /** Conditions on subjects, shape only: EventLog.append validates them and checks them atomically. */
  readonly preconditions: readonly Precondition[];
}

/** One append call as a transport hands it over. */
export interface AppendCall<T> {
  /** CreateEvents / a batch POST (counted as create_events), else one event (create_event). */
  readonly batch: boolean;
  readonly principal: Principal;
  /** The transport's reader: the request's events, validated (throws invalid_argument, …). */
  readonly decode: () => AppendInput;
  /** The answer in the transport's shape, from the ids in input order. */
  readonly encode: (ids: readonly number[]) => T;
}

/**
 * The one append of every transport (REST, Connect, gRPC-Web, gRPC and its fast path): decode →
 * EventLog.append (batch size, write scopes, preconditions, group commit) → encode, timed and
 * counted as one operation — bad input included, so a client's errors show in app_event_operations_total.
 */
export function append<T>(deps: AppendDeps, call: AppendCall<T>): Promise<T> {
  return deps.metrics.observe(call.batch ? "create_events" : "create_event", async () => {
    const { events, preconditions } = call.decode();
    const results = await deps.eventLog.append(events, call.principal, preconditions);
    return call.encode(results.map((result) => result.id));
  });
}
