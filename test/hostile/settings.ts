/**
 * The knobs of the hostile-input suite. Fixed seed; FC_SEED and FC_RUNS override it (fast-check
 * prints seed and path on failure).
 */
export const SEED = Number(process.env.FC_SEED ?? 20261123);
export const RUNS = Number(process.env.FC_RUNS ?? 250);
export const params = (numRuns = RUNS) => ({ seed: SEED, numRuns });

/** Small limits, so that the arbitraries reach past them often. */
export const MAX_EVENT_BYTES = 4096;
export const MAX_BODY_BYTES = 65536;
export const MAX_BATCH_EVENTS = 20;

/** The server flags for those limits. */
export const LIMIT_FLAGS: Readonly<Record<string, string>> = {
  "max-event-bytes": String(MAX_EVENT_BYTES),
  "max-body-bytes": String(MAX_BODY_BYTES),
  "max-batch-events": String(MAX_BATCH_EVENTS),
};
