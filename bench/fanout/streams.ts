import { performance } from "node:perf_hooks";
import type { SseClients, SseStream } from "../sse-clients.js";
import { CONNECT_TIMEOUT_MS, WAVE } from "./settings.js";

// Opening SSE streams in waves.

interface ConnectResult {
  opened: SseStream[];
  /** By index: the stream, or undefined when it failed. */
  byIndex: (SseStream | undefined)[];
  failures: number;
  failureReasons: Record<string, number>;
  seconds: number;
}

/** Opens `count` streams in waves of WAVE; each must answer 200 and its `retry:` line. */
export async function openStreams(
  clients: SseClients,
  count: number,
  path: (index: number) => string,
  onEvent: ((index: number) => (id: number, data: string, receivedAtMs: number) => void) | undefined,
): Promise<ConnectResult> {
  const opened: SseStream[] = [];
  const byIndex: (SseStream | undefined)[] = [];
  const failureReasons: Record<string, number> = {};
  let failures = 0;
  const started = performance.now();
  for (let first = 0; first < count; first += WAVE) {
    const wave = Array.from({ length: Math.min(WAVE, count - first) }, (_, i) =>
      clients.open(path(first + i), {
        timeoutMs: CONNECT_TIMEOUT_MS,
        ...(onEvent === undefined ? {} : { onEvent: onEvent(first + i) }),
      }),
    );
    for (const result of await Promise.allSettled(wave)) {
      if (result.status === "fulfilled") {
        opened.push(result.value);
        byIndex.push(result.value);
      } else {
        byIndex.push(undefined);
        failures++;
        const reason = result.reason instanceof Error ? result.reason.message : String(result.reason);
        failureReasons[reason] = (failureReasons[reason] ?? 0) + 1;
      }
    }
    if (count > WAVE) process.stderr.write(`bench:   ${opened.length} streams open, ${failures} failed\n`);
  }
  return { opened, byIndex, failures, failureReasons, seconds: (performance.now() - started) / 1000 };
}
