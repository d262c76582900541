import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { StoredEvent } from "../../../src/events/event.js";
import {
  simpleJsonParts,
  structuredJsonParts,
  toSimpleJson,
  toStructuredJson,
} from "../../../src/events/formats.js";

const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

/** Stored events with every optional attribute present or not, and any data. */
const storedEvent: fc.Arbitrary<StoredEvent> = fc.record({
  id: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  source: fc.string({ minLength: 1 }),
  type: fc.string({ minLength: 1 }),
  subject: fc.string({ minLength: 1 }),
  ceId: optional(fc.string({ minLength: 1 })),
  time: fc.constantFrom("2026-01-02T03:04:05.123456Z", "0001-01-01T00:00:00.000000Z"),
  datacontenttype: optional(fc.constantFrom("application/json", "text/plain", "application/octet-stream")),
  dataschema: optional(fc.constant("https://example.com/schema")),
  extensions: optional(
    fc.dictionary(
      fc.stringMatching(/^[a-z0-9]{1,20}$/).filter((n) => !["id", "data", "type", "time"].includes(n)),
      fc.oneof(fc.string(), fc.boolean(), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
      { maxKeys: 3 },
    ),
  ),
  data: fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
    fc.json().map((text) => Buffer.from(text)),
  ),
});

describe("event JSON in parts (what SSE writes for large events)", () => {
  it("joins to exactly the JSON of the whole event, in both formats", () => {
    fc.assert(
      fc.property(storedEvent, (event) => {
        const simple = simpleJsonParts(event);
        expect(simple.head + simple.data + simple.tail).toBe(JSON.stringify(toSimpleJson(event)));
        const structured = structuredJsonParts(event);
        expect(structured.head + structured.data + structured.tail).toBe(toStructuredJson(event));
        // The data part is only the data: what precedes and follows it carries no line break of
        // its own, which the SSE writer relies on when it splits data lines.
        for (const { head, tail } of [simple, structured]) expect(head + tail).not.toMatch(/[\r\n]/);
      }),
      { numRuns: 500 },
    );
  });
});
