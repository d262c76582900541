import type { ServerProcess } from "../../test/support/process.js";
import { SseClients } from "../sse-clients.js";
import { type Cleanup, formatRate, RssSampler, rssKb, sleep } from "../support.js";
import { assertAlive, type HeapMetrics, heapMetrics, streamMetrics, waitForStreams } from "./server.js";
import { IDLE_SUBJECT, SETTLE_MS, WAVE } from "./settings.js";
import { openStreams } from "./streams.js";

// 2. Idle streams: server RSS per open stream that receives nothing.

export interface IdleResult {
  streams: number;
  opened: number;
  failures: number;
  failureReasons: Record<string, number>;
  connectSeconds: number;
  rssIdleKb: number;
  rssStreamsKb: number;
  rssPeakWhileConnectingKb: number;
  kbPerStream: number;
  activeStreamsMetric: number;
  /** Events the idle streams received (there are none to receive). */
  eventsReceived: number;
  heapIdle: HeapMetrics;
  heapStreams: HeapMetrics;
  /** Streams the bench still held open when /metrics was read. */
  openWhenCounted: number;
  endedEarly: number;
  activeStreamsAfterClose: number;
}

export async function idleStreams(
  server: ServerProcess,
  count: number,
  cleanup: Cleanup,
): Promise<IdleResult> {
  await sleep(1000);
  const heapIdle = await heapMetrics(server);
  const rssIdleKb = await rssKb(server.pid);
  const clients = new SseClients(server.url);
  cleanup.add("close idle streams", async () => clients.closeAll());
  process.stderr.write(`bench: opening ${formatRate(count)} idle streams in waves of ${WAVE}\n`);
  const sampler = new RssSampler(server.pid);
  sampler.start();
  const streamPath = `/events/stream?subject=${encodeURIComponent(IDLE_SUBJECT)}`;
  let eventsReceived = 0;
  const countEvents = () => {
    eventsReceived++;
  };
  const connect = await openStreams(
    clients,
    count,
    () => streamPath,
    () => countEvents,
  );
  if (connect.failures > 0) {
    process.stderr.write(
      `bench: ${connect.failures} streams failed: ${JSON.stringify(connect.failureReasons)}\n`,
    );
  }
  const connecting = await sampler.stop();
  await sleep(SETTLE_MS);
  assertAlive(server);
  const rssStreamsKb = await rssKb(server.pid);
  const openWhenCounted = clients.size;
  const { activeStreams } = await streamMetrics(server);
  const heapStreams = await heapMetrics(server);
  const endedEarly = connect.opened.filter((stream) => stream.ended !== undefined).length;
  process.stderr.write("bench: closing the idle streams\n");
  clients.closeAll();
  const activeStreamsAfterClose = await waitForStreams(server, 0);
  return {
    streams: count,
    opened: connect.opened.length,
    failures: connect.failures,
    failureReasons: connect.failureReasons,
    connectSeconds: connect.seconds,
    rssIdleKb,
    rssStreamsKb,
    rssPeakWhileConnectingKb: connecting.peakKb,
    kbPerStream: (rssStreamsKb - rssIdleKb) / count,
    activeStreamsMetric: activeStreams,
    eventsReceived,
    heapIdle,
    heapStreams,
    openWhenCounted,
    endedEarly,
    activeStreamsAfterClose,
  };
}
