import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import type { StoredEvent } from "../../../src/events/event.js";
import { simpleJsonParts } from "../../../src/events/formats.js";
import { Hub } from "../../../src/hub/hub.js";
import { Metrics } from "../../../src/metrics.js";
import { FrameFormat } from "../../../src/transports/http/sse.js";
import { newEvent } from "../../support/events.js";

function stored(id: number, subject = "fan/1"): StoredEvent {
  return {
    ...newEvent(subject, { data: Buffer.from(`{"n":${id}}`) }),
    id,
    time: "2026-01-01T00:00:00.000000Z",
  };
}

/** Events as the hub publishes them live (one subscriber on fan/1, so the hub takes them). */
function live(ids: readonly number[]): StoredEvent[] {
  const hub = new Hub(loadConfig({}, {}).streams, new Metrics({ defaultMetrics: false }), async () => ({
    events: [],
    hasMore: false,
    nextFromId: 0,
  }));
  hub.subscribe({ filter: { subjects: ["fan/1"], recursive: false, type: undefined }, fromId: 0 });
  const events = ids.map((id) => stored(id));
  hub.publish(events);
  hub.close();
  return events;
}

function text(chunks: readonly (string | Buffer)[]): string {
  return chunks.map((chunk) => (typeof chunk === "string" ? chunk : chunk.toString("utf8"))).join("");
}

describe("SSE frames of a batch", () => {
  it("encodes a live batch once: every stream woken with the same events writes the same Buffer", () => {
    const format = new FrameFormat(simpleJsonParts);
    const [a, b, c] = live([1, 2, 3]) as [StoredEvent, StoredEvent, StoredEvent];
    const expected = [a, b, c].map((event) => format.frame(event) as string).join("");
    const first = format.chunks([a, b, c]);
    // Another stream's batch: another array of the same event objects.
    const second = format.chunks([a, b, c]);
    expect(first).toHaveLength(1);
    expect(Buffer.isBuffer(first[0])).toBe(true);
    expect(second[0]).toBe(first[0]);
    expect(text(first)).toBe(expected);
  });

  it("never hands a stream another stream's batch: same ends and length, other events", () => {
    const format = new FrameFormat(simpleJsonParts);
    const [a, b, c, d] = live([1, 2, 3, 4]) as [StoredEvent, StoredEvent, StoredEvent, StoredEvent];
    const frame = (event: StoredEvent) => format.frame(event) as string;
    const all = format.chunks([a, b, d]);
    const other = format.chunks([a, c, d]); // e.g. a stream filtered by type
    expect(text(all)).toBe(frame(a) + frame(b) + frame(d));
    expect(text(other)).toBe(frame(a) + frame(c) + frame(d));
    expect(text(format.chunks([a, b, d]))).toBe(frame(a) + frame(b) + frame(d));
    expect(text(format.chunks([d]))).toBe(frame(d));
  });

  it("does not remember batches read from the store (they belong to one stream)", () => {
    const format = new FrameFormat(simpleJsonParts);
    const events = [stored(1), stored(2)];
    const chunks = format.chunks(events);
    expect(chunks.every((chunk) => typeof chunk === "string")).toBe(true);
    expect(text(chunks)).toBe(events.map((event) => format.frame(event) as string).join(""));
  });
});
