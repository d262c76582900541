import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { EventsDbError } from "../../../src/errors.js";
import type { NewEvent } from "../../../src/events/event.js";
import { fromStructured } from "../../../src/events/formats.js";
import { displayTime } from "../../../src/events/time.js";
import { structuredCase, structuredExpectation } from "../../hostile/oracle.js";
import { LIMIT_FLAGS, params } from "../../hostile/settings.js";

// Validation and event time without a server: the oracle of the hostile-input suite (which checks
// the same through every transport) applied straight to the CloudEvents JSON format.

const { limits } = loadConfig({}, { ...LIMIT_FLAGS });

describe("validation of a structured CloudEvent (the hostile-input oracle, in-process)", () => {
  it("accepts exactly the valid ones, as sent, and refuses the others with a 4xx code", () => {
    let accepted = 0;
    let n = 0;
    fc.assert(
      fc.property(structuredCase, (c) => {
        const { text, verdict, expected } = structuredExpectation(c, n++);
        let event: NewEvent | undefined;
        let refusal: unknown;
        try {
          event = fromStructured(JSON.parse(text), Buffer.from(text), limits);
        } catch (error) {
          refusal = error;
        }
        const what = `${text.slice(0, 600)} → ${refusal instanceof Error ? refusal.message : "accepted"}`;
        if (refusal !== undefined) {
          expect(refusal, what).toBeInstanceOf(EventsDbError);
          expect(["invalid_argument", "payload_too_large"], what).toContain((refusal as EventsDbError).code);
        }
        if (verdict === "invalid") expect(event, what).toBeUndefined();
        if (verdict === "valid") expect(refusal, what).toBeUndefined();
        if (event === undefined) return;
        accepted++;
        expect(event.source, what).toBe(expected.source);
        expect(event.type, what).toBe(expected.type);
        expect(event.subject, what).toBe(expected.subject);
        expect(event.ceId, what).toBe(expected.id);
        expect(event.datacontenttype, what).toBe(expected.datacontenttype);
        expect(event.dataschema, what).toBe(expected.dataschema);
        expect(event.data, what).toEqual(expected.data);
        if (expected.time !== undefined) expect(displayTime(event.time ?? ""), what).toBe(expected.time);
        expect(event.extensions ?? {}, what).toEqual(expected.extensions);
      }),
      params(2000),
    );
    // The oracle saw both sides.
    expect(accepted).toBeGreaterThan(200);
  });
});
