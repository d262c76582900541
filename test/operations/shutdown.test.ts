import { randomBytes } from "node:crypto";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { freshMysqlDatabase, selected } from "../support/dialects.js";
import { metric } from "../support/metrics.js";
import {
  isAlive,
  killServerProcesses,
  PostLoad,
  type PostOutcome,
  readAllEvents,
  removeTempDirs,
  type SimpleEvent,
  startServerProcess,
  tempDir,
  within,
} from "../support/process.js";
import { type FetchStream, openStream, RawStream, waitUntil } from "../support/sse.js";

// Graceful shutdown of the real process on SIGTERM: exit 0 within --shutdown-timeout, streams
// ended cleanly, acknowledged appends kept, no request left hanging, no process left behind.

const STORES = [
  ...(selected("sqlite")
    ? [{ name: "SQLite", url: async () => `sqlite:${path.join(tempDir(), "events.db")}` }]
    : []),
  ...(selected("mysql") ? [{ name: "MariaDB", url: () => freshMysqlDatabase() }] : []),
];

afterEach(killServerProcesses);
afterAll(removeTempDirs);

/** Appends one event and returns its id. */
async function post(url: string, subject: string, data = "aGk="): Promise<number> {
  const res = await fetch(`${url}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ source: "test", type: "test.posted", subject, data }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST /events answered ${res.status}: ${text}`);
  return (JSON.parse(text) as { id: number }).id;
}

function activeStreams(url: string): Promise<number> {
  return metric(url, "app_active_event_streams");
}

/** Strictly increasing ids, each frame's data the stored event. */
function checkStream(stream: FetchStream, stored: ReadonlyMap<number, SimpleEvent>): void {
  const ids = stream.parser.ids();
  for (let i = 1; i < ids.length; i++) {
    if (!((ids[i] as number) > (ids[i - 1] as number))) {
      throw new Error(`stream ids not increasing at ${i}: ${ids[i - 1]}, ${ids[i]}`);
    }
  }
  for (const event of stream.parser.events) {
    const sent = JSON.parse(event.data) as SimpleEvent;
    expect(stored.get(Number(event.id))).toEqual(sent);
  }
}

/** `{"200":n,"ECONNREFUSED":m,…}` of some outcomes. */
function tally(outcomes: readonly PostOutcome[]): string {
  const counts: Record<string, number> = {};
  for (const o of outcomes) {
    const key = o.status === undefined ? (o.error ?? "?") : String(o.status);
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return JSON.stringify(counts);
}

describe("graceful shutdown on SIGTERM", () => {
  it.each(STORES)(
    "$name under load: exits 0 within --shutdown-timeout, ends streams cleanly, keeps every acknowledged append",
    async ({ url }) => {
      const databaseUrl = await url();
      const server = await startServerProcess({ databaseUrl, args: ["--shutdown-timeout", "10"] });
      for (let i = 0; i < 5; i++) await post(server.url, `before/${i}`);
      const streams = await Promise.all([0, 1, 2].map(() => openStream(`${server.url}/events/stream`)));
      try {
        expect(streams.map((s) => s.response.status)).toEqual([200, 200, 200]);
        const load = new PostLoad(server.url, {
          loops: 8,
          prefix: "shutdown",
          requestTimeoutMs: 20_000,
        }).start();
        let sigtermAt: number;
        let exit: Awaited<typeof server.exited>;
        try {
          await waitUntil(
            () => load.acks.length >= 200 && streams.every((s) => s.parser.events.length >= 100),
            "appends under load, seen live by every stream",
            30_000,
          );
          sigtermAt = performance.now();
          expect(server.signal("SIGTERM")).toBe(true);
          // The server's own timer ends it at 10 s in any case; wait a little longer to see that.
          exit = await within(server.exited, 20_000, "exit after SIGTERM");
        } finally {
          await load.stop();
        }
        const elapsed = exit.at - sigtermAt;
        expect(exit, server.log()).toMatchObject({ code: 0, signal: null });
        expect(elapsed).toBeLessThan(10_000);
        expect(isAlive(server.pid)).toBe(false);

        // Every stream ended cleanly (the body completed; a reset would reject `ended`).
        const endings = await Promise.allSettled(streams.map((s) => within(s.ended, 10_000, "stream end")));
        expect(endings.map((e) => (e.status === "rejected" ? String(e.reason) : e.status))).toEqual([
          "fulfilled",
          "fulfilled",
          "fulfilled",
        ]);

        // No request hung; each got a response (200 stored, or 503 while stopping) or a
        // connection error. A POST once the process is gone is refused.
        const late = load.outcomes.filter((o) => o.endedAt >= sigtermAt);
        const startedLate = late.filter((o) => o.startedAt >= sigtermAt);
        const unexpected = load.outcomes.filter(
          (o) =>
            o.hung === true ||
            (o.status !== undefined && o.status !== 200 && o.status !== 503) ||
            (o.status === 200 && o.id === undefined) ||
            (o.endedAt < sigtermAt && o.id === undefined),
        );
        expect(unexpected.slice(0, 5), `${unexpected.length} unexpected outcomes`).toEqual([]);
        await expect(post(server.url, "after/exit")).rejects.toThrow();

        // Restarted on the same store: everything acknowledged (and everything streamed) is there.
        const again = await startServerProcess({ databaseUrl });
        const stored = new Map((await readAllEvents(again.url)).map((e) => [e.id, e]));
        const lost = load.acks.filter((a) => {
          const event = stored.get(a.id);
          return event === undefined || event.subject !== a.subject || event.data !== a.data;
        });
        expect(lost.slice(0, 10), `${lost.length} of ${load.acks.length} acknowledged appends lost`).toEqual(
          [],
        );
        for (const stream of streams) checkStream(stream, stored);
        // In-flight requests finish: none was cut off after its event had been stored.
        const storedSubjects = new Set([...stored.values()].map((e) => e.subject));
        const cutOff = load.outcomes.filter((o) => o.id === undefined && storedSubjects.has(o.subject));
        expect(cutOff, "stored, but the client got no acknowledgement").toEqual([]);

        console.info(
          `shutdown under load: exit ${exit.code} after ${Math.round(elapsed)} ms; ${load.acks.length} acked; ` +
            `in flight at SIGTERM: ${tally(late.filter((o) => o.startedAt < sigtermAt))}; ` +
            `started after: ${tally(startedLate)}; streamed ${streams.map((s) => s.parser.events.length)}`,
        );
        expect(again.signal("SIGTERM")).toBe(true);
        expect((await again.exited).code).toBe(0);
      } finally {
        for (const stream of streams) stream.close();
      }
    },
    90_000,
  );

  it("exits 0 promptly on SIGTERM without load", async () => {
    // The default --shutdown-timeout is 30 s: an idle server must not sit in the drain.
    const server = await startServerProcess({ databaseUrl: `sqlite:${path.join(tempDir(), "events.db")}` });
    const id = await post(server.url, "idle/1"); // leaves an idle keep-alive connection behind
    expect((await fetch(`${server.url}/events/get?id=${id}`)).status).toBe(200);
    const sigtermAt = performance.now();
    expect(server.signal("SIGTERM")).toBe(true);
    const exit = await within(server.exited, 40_000, "exit after SIGTERM");
    expect(exit, server.log()).toMatchObject({ code: 0, signal: null });
    expect(exit.at - sigtermAt).toBeLessThan(10_000);
    expect(isAlive(server.pid)).toBe(false);
  });

  it("honours --shutdown-timeout 1 with streams open, one of them stalled", async () => {
    const databaseUrl = `sqlite:${path.join(tempDir(), "events.db")}`;
    const server = await startServerProcess({ databaseUrl, args: ["--shutdown-timeout", "1"] });
    // ~10 MB of events: more than the socket buffers hold, so the stalled stream cannot be written.
    const big = randomBytes(192 * 1024).toString("base64");
    for (let i = 0; i < 40; i++) await post(server.url, `big/${i}`, big);
    const stream = await openStream(`${server.url}/events/stream?subject=none`);
    const stalled = new RawStream(server.restPort, "/events/stream");
    stalled.pause();
    try {
      await waitUntil(async () => (await activeStreams(server.url)) === 2, "two open streams");
      const sigtermAt = performance.now();
      expect(server.signal("SIGTERM")).toBe(true);
      const exit = await within(server.exited, 10_000, "exit after SIGTERM");
      expect(exit, server.log()).toMatchObject({ code: 0, signal: null });
      // 1 s, plus generous room for signal delivery and process teardown on a busy machine.
      expect(exit.at - sigtermAt).toBeLessThan(3_000);
      expect(isAlive(server.pid)).toBe(false);
      await expect(within(stream.ended, 5_000, "stream end")).resolves.toBeUndefined();
      console.info(
        `shutdown with a stalled stream: exit ${exit.code} after ${Math.round(exit.at - sigtermAt)} ms; ` +
          `the stalled client read ${stalled.parser.events.length} events`,
      );
    } finally {
      stalled.close();
      stream.close();
    }
  });
});
