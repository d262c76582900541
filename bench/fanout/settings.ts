/** The fan-out bench's sizes, timeouts and targets. */

export const DEFAULT_CLIENTS = 1000;
export const DEFAULT_IDLE = 10_000;
export const DEFAULT_CATCHUP = 1_000_000;
/** Client processes: one per core, at most this many (each is a Node process of its own). */
export const MAX_CLIENT_PROCESSES = 8;
export const OPTION_FLAGS = [
  "--clients",
  "--idle",
  "--catchup",
  "--client-processes",
  "--server-cli",
] as const;
export const SWITCHES = ["--pin"] as const;

/** The publish run: this many events at this total rate from this many concurrent publishers. */
export const PUBLISH_EVENTS = 1000;
export const PUBLISH_RATE = 200;
export const PUBLISHERS = 4;
export const FAN_SUBJECT = "fan/1";
/** Idle streams get a subject of their own without history, so that they really stay idle. */
export const IDLE_SUBJECT = "idle/1";
export const CATCH_SUBJECT = "catch/1";
export const MAX_TOTAL_CLIENTS = 20_000;

export const WAVE = 500;
export const CONNECT_TIMEOUT_MS = 30_000;
/** monitorEventLoopDelay samples every this many ms; the delay reported is beyond it. */
export const LOOP_RESOLUTION_MS = 10;
/** Pause before an RSS reading, so that connection set-up garbage and timers settle. */
export const SETTLE_MS = 3_000;
/** How long clients may still receive after the last publish before the rest counts as lost. */
export const DELIVERY_GRACE_MS = 30_000;
export const STREAMS_GONE_TIMEOUT_MS = 15_000;
export const CATCHUP_STATEMENT_ROWS = 500;
export const CATCHUP_DATA_BYTES = 100;
/** File descriptors beyond the streams: MariaDB pool, log pipes, node internals. */
export const FD_HEADROOM = 1024;
export const RAISED_ENV = "EVENTSDB_BENCH_NOFILE_RAISED";

/**
 * A client process is "busy" (its own delays are in the latency figures) from this CPU use (of one
 * core) or this event-loop delay p99 (beyond the sampling interval) on.
 */
export const CLIENT_BUSY_CPU = 0.8;
export const CLIENT_BUSY_LOOP_P99_MS = 20;

export const TARGET_LOST = 0;
export const TARGET_P99_MS = 100;
export const TARGET_KB_PER_IDLE_CLIENT = 24;
export const TARGET_RSS_10K_MIB = 400;
export const TARGET_CATCHUP_EPS = 100_000;
export const REFERENCE =
  "Go Events DB at 1000 SSE clients: p99 158–172 ms and about a third of the events lost";

export interface Options {
  clients: number;
  idle: number;
  catchup: number;
  /** Processes the fan-out clients are spread over; 0 = in the bench process beside the publishers. */
  clientProcesses: number;
  /** Another build's dist/cli.js to measure (a baseline beside this one); undefined = this checkout's. */
  serverCli: string | undefined;
  /** Server on CPU 0 alone; bench process and MariaDB on the other CPUs (taskset). */
  pin: boolean;
}
