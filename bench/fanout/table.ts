import { formatRate } from "../support.js";
import type { CatchUpResult } from "./catch-up.js";
import type { FanResult } from "./fan-out.js";
import type { IdleResult } from "./idle.js";
import type { HeapMetrics } from "./server.js";
import {
  type Options,
  PUBLISH_EVENTS,
  PUBLISH_RATE,
  TARGET_CATCHUP_EPS,
  TARGET_KB_PER_IDLE_CLIENT,
  TARGET_LOST,
  TARGET_P99_MS,
  TARGET_RSS_10K_MIB,
} from "./settings.js";

// The report table.

export function mib(kb: number): string {
  return `${(kb / 1024).toFixed(1)} MiB`;
}

export function heapLine(heap: HeapMetrics): string {
  const m = (kb: number) => (kb / 1024).toFixed(1);
  return `${m(heap.heapUsedKb)} / ${m(heap.heapTotalKb)} / ${m(heap.externalKb)} MiB`;
}

export function percent(fraction: number | undefined): string {
  return fraction === undefined ? "-" : `${(fraction * 100).toFixed(0)} %`;
}

function verdict(ok: boolean): string {
  return ok ? "ok" : "below";
}

export function tableRows(
  options: Options,
  fan: FanResult,
  idle: IdleResult | undefined,
  catchup: CatchUpResult | undefined,
): string[][] {
  const n = formatRate(fan.clients);
  const c = fan.completeness;
  const rows: string[][] = [
    ["server RSS idle (fan-out server)", mib(fan.rssIdleKb), "-", "-"],
    [`server RSS, ${n} idle streams`, mib(fan.rssClientsKb), "-", "-"],
    [`server RSS peak while publishing (${fan.rssSamples} samples)`, mib(fan.rssPeakKb), "-", "-"],
    [
      `streams opened / failed (${n} asked)`,
      `${formatRate(fan.connect.opened)} / ${fan.connect.failures}`,
      `${n} / 0`,
      verdict(fan.connect.opened === fan.clients && fan.connect.failures === 0),
    ],
    [
      "events published (2xx) / failed, offered rate",
      `${formatRate(fan.publish.ok)} / ${fan.publish.failed}, ${fan.publish.offeredRate.toFixed(1)}/s`,
      `${formatRate(PUBLISH_EVENTS)} / 0, ${PUBLISH_RATE}/s`,
      verdict(
        fan.publish.ok === PUBLISH_EVENTS &&
          fan.publish.failed === 0 &&
          fan.publish.offeredRate >= PUBLISH_RATE * 0.98,
      ),
    ],
    [
      `events lost (of ${formatRate(fan.publish.ok * fan.connect.opened)} deliveries)`,
      `${formatRate(c.lost)} (${c.clientsMissingEvents} clients)`,
      `${TARGET_LOST}`,
      verdict(c.lost <= TARGET_LOST),
    ],
    ["duplicate frames", formatRate(c.duplicates), "0", verdict(c.duplicates === 0)],
    ["out-of-order frames", formatRate(c.outOfOrder), "0", verdict(c.outOfOrder === 0)],
    [
      "unexpected ids / bad frames",
      `${c.unexpected} / ${c.badFrames}`,
      "0 / 0",
      verdict(c.unexpected === 0 && c.badFrames === 0),
    ],
    [`latency p50 (${n} clients)`, `${fan.latencyMs.p50.toFixed(1)} ms`, "-", "-"],
    [
      `latency p99 (${n} clients)`,
      `${fan.latencyMs.p99.toFixed(1)} ms`,
      `<= ${TARGET_P99_MS} ms`,
      verdict(fan.latencyMs.p99 <= TARGET_P99_MS),
    ],
    [`latency max (${n} clients)`, `${fan.latencyMs.max.toFixed(1)} ms`, "-", "-"],
  ];
  if (idle !== undefined) {
    const m = formatRate(idle.streams);
    rows.push(
      ["server RSS idle (idle server)", mib(idle.rssIdleKb), "-", "-"],
      [
        `idle streams opened / failed (${m} asked)`,
        `${formatRate(idle.opened)} / ${idle.failures} in ${idle.connectSeconds.toFixed(1)} s`,
        `${m} / 0`,
        verdict(idle.opened === idle.streams && idle.failures === 0 && idle.endedEarly === 0),
      ],
      [
        `server RSS, ${m} idle streams`,
        mib(idle.rssStreamsKb),
        options.idle >= 10_000 ? `<= ${TARGET_RSS_10K_MIB} MiB` : "-",
        options.idle >= 10_000 ? verdict(idle.rssStreamsKb / 1024 <= TARGET_RSS_10K_MIB) : "-",
      ],
      [
        "server RSS per idle stream",
        `${idle.kbPerStream.toFixed(1)} KiB`,
        `<= ${TARGET_KB_PER_IDLE_CLIENT} KiB`,
        verdict(idle.kbPerStream <= TARGET_KB_PER_IDLE_CLIENT),
      ],
      [
        "app_active_event_streams",
        formatRate(idle.activeStreamsMetric),
        formatRate(idle.openWhenCounted),
        verdict(idle.activeStreamsMetric === idle.openWhenCounted),
      ],
    );
  }
  if (catchup !== undefined) {
    for (const read of [catchup.fresh, catchup.live]) {
      if (read === undefined) continue;
      rows.push(
        [
          `catch-up read of ${formatRate(read.events)} events (${read.setting})`,
          `${formatRate(read.eventsPerSecond)} events/s`,
          `>= ${formatRate(TARGET_CATCHUP_EPS)}/s`,
          verdict(read.completed && read.orderErrors === 0 && read.eventsPerSecond >= TARGET_CATCHUP_EPS),
        ],
        [`server RSS peak during that catch-up`, mib(read.rssPeakKb), "-", "-"],
      );
    }
  }
  return rows;
}
