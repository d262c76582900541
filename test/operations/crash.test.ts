import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { freshMysqlDatabase, selected } from "../support/dialects.js";
import {
  killServerProcesses,
  PostLoad,
  readAllEvents,
  removeTempDirs,
  type SimpleEvent,
  startServerProcess,
  tempDir,
} from "../support/process.js";
import { waitUntil } from "../support/sse.js";

// Crash safety of the real process: acknowledged appends (200 + id) survive `kill -9` of the server.

/** Concurrent keep-alive POST loops. */
const LOOPS = 64;
/** The crash comes after this long under load, or earlier once this many appends were acknowledged. */
const LOAD_MS = 1500;
const ENOUGH_ACKS = 2000;
/** Even on a slow machine, crash only once there is something to lose. */
const MIN_ACKS = 100;

const STORES = [
  ...(selected("mysql") ? [{ name: "MariaDB", url: () => freshMysqlDatabase() }] : []),
  ...(selected("sqlite")
    ? [{ name: "SQLite (synchronous=FULL)", url: async () => `sqlite:${path.join(tempDir(), "events.db")}` }]
    : []),
];

afterEach(killServerProcesses);
afterAll(removeTempDirs);

describe("crash safety: kill -9 under load", () => {
  it.each(STORES)(
    "$name keeps every acknowledged append, readable with its data, and ids stay unique and increasing",
    async ({ url }) => {
      const databaseUrl = await url();
      const first = await startServerProcess({ databaseUrl });
      const load = new PostLoad(first.url, { loops: LOOPS, prefix: "crash" }).start();
      const started = performance.now();
      try {
        await waitUntil(
          () =>
            load.acks.length >= ENOUGH_ACKS ||
            (performance.now() - started >= LOAD_MS && load.acks.length >= MIN_ACKS),
          `${MIN_ACKS} acknowledged appends`,
          30_000,
        );
      } catch (error) {
        await load.stop();
        throw error;
      }
      const killedAt = performance.now();
      expect(first.signal("SIGKILL")).toBe(true);
      const exit = await first.exited;
      await load.stop(); // in-flight requests fail; the loops end
      expect(exit.signal).toBe("SIGKILL");

      const acks = load.acks;
      const inFlightAtKill = load.outcomes.filter((o) => o.startedAt < killedAt && o.endedAt >= killedAt);
      // Before the crash every request was acknowledged; nothing ever got another status.
      expect(load.outcomes.filter((o) => o.status !== undefined && o.id === undefined).slice(0, 5)).toEqual(
        [],
      );
      expect(load.outcomes.filter((o) => o.endedAt < killedAt && o.id === undefined).slice(0, 5)).toEqual([]);
      expect(load.outcomes.filter((o) => o.hung).slice(0, 5)).toEqual([]);
      // One id per acknowledged append.
      expect(new Set(acks.map((a) => a.id)).size).toBe(acks.length);

      const second = await startServerProcess({ databaseUrl });
      const stored = await readAllEvents(second.url);
      const storedIds = stored.map((e) => e.id);
      for (let i = 1; i < storedIds.length; i++) {
        if (!((storedIds[i] as number) > (storedIds[i - 1] as number))) {
          throw new Error(`ids not strictly increasing at ${i}: ${storedIds[i - 1]}, ${storedIds[i]}`);
        }
      }
      const byId = new Map<number, SimpleEvent>(stored.map((e) => [e.id, e]));
      const lost = acks.filter((a) => !byId.has(a.id));
      const changed = acks.filter((a) => {
        const event = byId.get(a.id);
        return (
          event !== undefined &&
          (event.subject !== a.subject ||
            event.data !== a.data ||
            event.source !== "load" ||
            event.type !== "load.posted")
        );
      });
      expect(lost.slice(0, 10), `${lost.length} of ${acks.length} acknowledged appends lost`).toEqual([]);
      expect(changed.slice(0, 10), `${changed.length} acknowledged appends changed`).toEqual([]);
      // Whatever else is stored was sent by a request in flight at the crash, each once, intact.
      const acked = new Set(acks.map((a) => a.id));
      const extra = stored.filter((e) => !acked.has(e.id));
      expect(new Set(stored.map((e) => e.subject)).size).toBe(stored.length);
      expect(extra.filter((e) => load.sent.get(e.subject) !== e.data).slice(0, 5)).toEqual([]);
      expect(extra.length).toBeLessThanOrEqual(inFlightAtKill.length);

      // A few read one by one.
      const samples = [
        acks[0],
        acks[acks.length - 1],
        ...[1, 2, 3].map(() => acks[randomIndex(acks.length)]),
      ];
      for (const sample of samples) {
        if (sample === undefined) continue;
        const res = await fetch(`${second.url}/events/get?id=${sample.id}`);
        expect(res.status).toBe(200);
        expect(await res.json()).toMatchObject({
          id: sample.id,
          source: "load",
          type: "load.posted",
          subject: sample.subject,
          data: sample.data,
        });
      }

      // New appends after the restart get fresh ids above everything acknowledged (and stored).
      const maxAcked = Math.max(...acks.map((a) => a.id));
      const maxStored = Math.max(0, ...storedIds);
      const after = new PostLoad(second.url, { loops: 8, prefix: "after" }).start();
      await waitUntil(() => after.acks.length >= 40, "appends after the restart");
      await after.stop();
      expect(after.outcomes.filter((o) => o.id === undefined)).toEqual([]);
      const newIds = after.acks.map((a) => a.id);
      expect(new Set(newIds).size).toBe(newIds.length);
      expect(Math.min(...newIds)).toBeGreaterThan(Math.max(maxAcked, maxStored));
      const reread = await readAllEvents(second.url);
      expect(reread).toHaveLength(stored.length + newIds.length);
      const rereadById = new Map(reread.map((e) => [e.id, e]));
      for (const a of after.acks)
        expect(rereadById.get(a.id)).toMatchObject({ subject: a.subject, data: a.data });

      console.info(
        `crash test: ${acks.length} acked in ${Math.round(killedAt - started)} ms, ` +
          `${inFlightAtKill.length} in flight at kill -9, ${extra.length} of those stored; ` +
          `max acked id ${maxAcked}, first id after restart ${Math.min(...newIds)}`,
      );
      expect(second.signal("SIGTERM")).toBe(true);
      expect((await second.exited).code).toBe(0);
    },
    90_000,
  );
});

function randomIndex(length: number): number {
  return Math.floor(Math.random() * length);
}
