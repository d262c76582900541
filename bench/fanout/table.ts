import { formatRate } from "../support.js";
import type { CatchUpResult } from "./catch-up.js";
import type { FanResult } from "./fan-out.js";
import type { IdleResult } from "./idle.js";
import type { HeapMetrics } from "./server.js";
import {
  CLIENT_BUSY_CPU,
  CLIENT_BUSY_LOOP_P99_MS,
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
    [
      `client CPU, busiest of ${fan.clientProcesses === 0 ? "the bench process" : `${fan.clientFigures.length} client processes`}`,
      percent(Math.max(...fan.clientFigures.map((c) => c.cpu))),
      `< ${percent(CLIENT_BUSY_CPU)}`,
      fan.clientFigures.every((c) => c.cpu < CLIENT_BUSY_CPU) ? "ok" : "busy",
    ],
    [
      "client event-loop delay p99 / max, busiest",
      `${Math.max(...fan.clientFigures.map((c) => c.loop.p99Ms)).toFixed(1)} / ${Math.max(...fan.clientFigures.map((c) => c.loop.maxMs)).toFixed(1)} ms`,
      `p99 < ${CLIENT_BUSY_LOOP_P99_MS} ms`,
      fan.clientFigures.every((c) => c.loop.p99Ms < CLIENT_BUSY_LOOP_P99_MS) ? "ok" : "busy",
    ],
    [
      "server event-loop delay p99 / max",
      `${fan.server.loop.p99Ms.toFixed(1)} / ${fan.server.loop.maxMs.toFixed(1)} ms`,
      "-",
      "-",
    ],
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

function ms(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(1)} ms` : "-";
}

/** A histogram's p50 / p99 as the upper bounds of their buckets. */
function leLine(figures: { p50: number; p99: number; count: number }): string {
  const le = (value: number) =>
    Number.isFinite(value) ? `≤ ${value} ms` : value > 0 ? "> last bucket" : "-";
  return `p50 ${le(figures.p50)}, p99 ${le(figures.p99)} (${formatRate(figures.count)})`;
}

/** The POST's time in the server (its create_event histogram), beside what the publishers saw. */
export function serverPost(fan: FanResult): string {
  return leLine(fan.server.postLeMs);
}

/** Who was busy during the publish run: the client processes, the publishers, the server. */
export function clientLines(fan: FanResult): string[] {
  const where =
    fan.clientProcesses === 0
      ? `${formatRate(fan.clients)} streams in the bench process beside the publishers (--client-processes 0)`
      : `${formatRate(fan.clients)} streams in ${fan.clientFigures.length} client processes ` +
        `(${fan.clientFigures.map((c) => c.streams).join(" + ")}); the publishers alone in the bench process`;
  const perProcess = fan.clientFigures
    .map((c) => `${percent(c.cpu)} CPU, ${ms(c.loop.p50Ms)} / ${ms(c.loop.p99Ms)} / ${ms(c.loop.maxMs)}`)
    .join("; ");
  const loop = (l: { p50Ms: number; p99Ms: number; maxMs: number }) =>
    `${ms(l.p50Ms)} / ${ms(l.p99Ms)} / ${ms(l.maxMs)}`;
  return [
    `clients: ${where}`,
    `event-loop delay beyond the 10 ms sampling interval, p50 / p99 / max, and CPU (of one core) over the publish run:`,
    `  client process${fan.clientFigures.length === 1 ? "" : "es"}: ${perProcess}`,
    `  publishers (bench process): ${percent(fan.cpu.bench)} CPU, ${loop(fan.benchLoopDelay)}`,
    `  server: ${percent(fan.cpu.server)} CPU, ${loop(fan.server.loop)} (its nodejs_eventloop_lag_*); ` +
      `MariaDB ${percent(fan.cpu.mariadb)} CPU; the whole machine ${(fan.cpu.system ?? 0).toFixed(2)} cores busy`,
    fan.clientBusy
      ? `  verdict: the CLIENTS were busy (a client process at >= ${percent(CLIENT_BUSY_CPU)} of a core or with a ` +
        `p99 delay >= ${CLIENT_BUSY_LOOP_P99_MS} ms): their own waits are in the latency figures; ` +
        "more --client-processes (or a quieter machine) would tell the server's part"
      : `  verdict: the clients kept up (each client process < ${percent(CLIENT_BUSY_CPU)} of a core, p99 delay < ` +
        `${CLIENT_BUSY_LOOP_P99_MS} ms): the latency is the server's, MariaDB's and the machine's`,
    `POST connections: ${formatRate(fan.publish.newConnections.count)} POSTs on a new connection (TCP connect p99 ` +
      `${ms(fan.publish.newConnections.connectP99Ms)}; POST p50 ${ms(fan.publish.newConnections.postP50Ms)}, p99 ` +
      `${ms(fan.publish.newConnections.postP99Ms)}), ${formatRate(fan.publish.reusedConnections.count)} on a kept-alive one ` +
      `(p50 ${ms(fan.publish.reusedConnections.postP50Ms)}, p99 ${ms(fan.publish.reusedConnections.postP99Ms)})`,
    `latency split: sent -> POST answered (commit) ${ms(fan.publish.postP50Ms)} p50 / ${ms(fan.publish.postP99Ms)} p99; ` +
      `answered -> received ${ms(fan.afterAnswerMs.p50)} p50 / ${ms(fan.afterAnswerMs.p99)} p99 / ` +
      `${ms(fan.afterAnswerMs.max)} max; in the server: commit ${leLine(fan.server.commitLeMs)}, ` +
      `commit -> socket hand-over ${leLine(fan.server.handOverLeMs)}`,
  ];
}
