import { randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import type { Connection, RowDataPacket } from "mysql2/promise";
import type { ServerProcess } from "../../test/support/process.js";
import { SseClients } from "../sse-clients.js";
import { type Cleanup, CpuMeter, formatRate, RssSampler, rssKb, sleep } from "../support.js";
import { assertAlive, waitForStreams } from "./server.js";
import { CATCH_SUBJECT, CATCHUP_DATA_BYTES, CATCHUP_STATEMENT_ROWS, CONNECT_TIMEOUT_MS } from "./settings.js";

// 3. Catch-up: events inserted straight into MariaDB, read from the start by one SSE client.

interface InsertResult {
  events: number;
  firstId: number;
  seconds: number;
  rowsPerSecond: number;
  sequence: { lastId: number; maxId: number };
}

interface CatchUpRead {
  /** Where the rows came from, relative to this server process. */
  setting: string;
  events: number;
  frames: number;
  seconds: number;
  eventsPerSecond: number;
  firstFrameMs: number;
  orderErrors: number;
  badFrames: number;
  completed: boolean;
  endedEarly: string | undefined;
  rssBeforeKb: number;
  rssPeakKb: number;
  serverCpu: number;
  mariadbCpu: number;
}

export interface CatchUpResult {
  insert: InsertResult;
  /** On the server that ran while the rows were inserted (its commit feed sees them as foreign commits). */
  live: CatchUpRead;
  /** On a server started after the insert (the rows are history before its start). */
  fresh: CatchUpRead | undefined;
}

const CATCHUP_INSERT = "INSERT INTO events (id, source, type, subject, time, data) VALUES ?";

/**
 * `count` events on CATCH_SUBJECT straight into the server's database, ids continuing after the
 * current maximum. The ids are reserved in event_sequence first (row locked while read and
 * bumped), so the server's writer can never hand out one of them, then inserted explicitly.
 */
export async function insertCatchUp(admin: Connection, count: number): Promise<InsertResult> {
  await admin.query("START TRANSACTION");
  let base: number;
  try {
    const [sequence] = await admin.query<RowDataPacket[]>(
      "SELECT last_id FROM event_sequence WHERE name = 'events' FOR UPDATE",
    );
    const [max] = await admin.query<RowDataPacket[]>("SELECT COALESCE(MAX(id), 0) AS id FROM events");
    base = Math.max(Number(sequence[0]?.last_id ?? 0), Number(max[0]?.id ?? 0));
    await admin.query("UPDATE event_sequence SET last_id = ? WHERE name = 'events'", [base + count]);
    await admin.query("COMMIT");
  } catch (error) {
    await admin.query("ROLLBACK");
    throw error;
  }

  process.stderr.write(
    `bench: inserting ${formatRate(count)} events into ${CATCH_SUBJECT} (${CATCHUP_STATEMENT_ROWS}-row INSERTs)\n`,
  );
  const time = new Date().toISOString().replace("T", " ").replace("Z", "");
  const started = performance.now();
  let nextReport = 100_000;
  for (let done = 0; done < count; done += CATCHUP_STATEMENT_ROWS) {
    const n = Math.min(CATCHUP_STATEMENT_ROWS, count - done);
    const bytes = randomBytes(n * CATCHUP_DATA_BYTES);
    const rows = Array.from({ length: n }, (_, i) => [
      base + done + i + 1,
      "bench",
      "bench.catchup",
      CATCH_SUBJECT,
      time,
      bytes.subarray(i * CATCHUP_DATA_BYTES, (i + 1) * CATCHUP_DATA_BYTES),
    ]);
    await admin.query(CATCHUP_INSERT, [rows]);
    if (done + n >= nextReport) {
      process.stderr.write(`bench:   ${formatRate(done + n)} inserted\n`);
      nextReport += 100_000;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  // The sequence was bumped up front; make sure it is (still) at least the new max id.
  await admin.query(
    "UPDATE event_sequence SET last_id = GREATEST(last_id, (SELECT MAX(id) FROM events)) WHERE name = 'events'",
  );
  const [after] = await admin.query<RowDataPacket[]>(
    "SELECT (SELECT last_id FROM event_sequence WHERE name = 'events') AS last_id, " +
      "(SELECT MAX(id) FROM events) AS max_id, (SELECT COUNT(*) FROM events WHERE subject = ?) AS n",
    [CATCH_SUBJECT],
  );
  const sequence = { lastId: Number(after[0]?.last_id), maxId: Number(after[0]?.max_id) };
  if (Number(after[0]?.n) !== count) {
    throw new Error(`${CATCH_SUBJECT} holds ${after[0]?.n} rows, expected ${count}`);
  }
  if (sequence.lastId < sequence.maxId) throw new Error(`event_sequence.last_id ${sequence.lastId} < max id`);
  return { events: count, firstId: base + 1, seconds, rowsPerSecond: count / seconds, sequence };
}

/** One SSE client reads CATCH_SUBJECT from the start and counts frames until it has `count`. */
export async function readCatchUp(
  server: ServerProcess,
  count: number,
  setting: string,
  pids: { mariadb: number; ticks: number },
  cleanup: Cleanup,
): Promise<CatchUpRead> {
  await sleep(1000);
  assertAlive(server);
  const rssBeforeKb = await rssKb(server.pid);
  const clients = new SseClients(server.url);
  cleanup.add(`close catch-up stream (${setting})`, async () => clients.closeAll());
  let frames = 0;
  let lastId = 0;
  let orderErrors = 0;
  let badFrames = 0;
  let firstAt = Number.NaN;
  let doneAt = Number.NaN;
  const check = (data: string, id: number) => {
    try {
      const event = JSON.parse(data) as { id?: unknown; subject?: unknown };
      if (event.id !== id || event.subject !== CATCH_SUBJECT) badFrames++;
    } catch {
      badFrames++;
    }
  };
  // Minimal per frame: the id (order check) and a count; the first and last data are parsed.
  const onEvent = (id: number, data: string) => {
    frames++;
    if (!(id > lastId)) orderErrors++;
    lastId = id;
    if (frames === 1) {
      firstAt = performance.now();
      check(data, id);
    }
    if (frames === count) {
      doneAt = performance.now();
      check(data, id);
    }
  };
  process.stderr.write(`bench: reading ${formatRate(count)} events from ${CATCH_SUBJECT} (${setting})\n`);
  const sampler = new RssSampler(server.pid);
  const cpu = new CpuMeter({ server: server.pid, mariadb: pids.mariadb }, pids.ticks);
  await cpu.start();
  sampler.start();
  const started = performance.now();
  const stream = await clients.open(`/events/stream?subject=${encodeURIComponent(CATCH_SUBJECT)}`, {
    timeoutMs: CONNECT_TIMEOUT_MS,
    onEvent,
  });
  // Generous: at 5,000 events/s (twenty times below the target) the run still ends.
  const deadline = started + Math.max(60_000, count / 5);
  let nextReport = started + 10_000;
  while (frames < count && stream.ended === undefined && performance.now() < deadline) {
    await sleep(20);
    if (performance.now() >= nextReport) {
      process.stderr.write(`bench:   ${formatRate(frames)} frames\n`);
      nextReport += 10_000;
    }
  }
  const end = Number.isNaN(doneAt) ? performance.now() : doneAt;
  const rss = await sampler.stop();
  const cpuUse = await cpu.stop();
  const endedEarly = frames < count ? (stream.ended ?? "timed out") : undefined;
  clients.closeAll();
  if (endedEarly !== undefined) {
    process.stderr.write(`bench: the catch-up stream stopped early (${endedEarly}) after ${frames} frames\n`);
  }
  await waitForStreams(server, 0);
  const seconds = (end - started) / 1000;
  return {
    setting,
    events: count,
    frames,
    seconds,
    eventsPerSecond: frames / seconds,
    firstFrameMs: firstAt - started,
    orderErrors,
    badFrames,
    completed: frames >= count,
    endedEarly,
    rssBeforeKb,
    rssPeakKb: rss.peakKb,
    serverCpu: cpuUse.server ?? 0,
    mariadbCpu: cpuUse.mariadb ?? 0,
  };
}
