import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  arrayElements,
  memberValue,
  objectMembers,
  type Span,
  valueSpan,
} from "../../../src/events/json-text.js";
import { jsonText, paddedJsonText } from "../../support/json-text.js";

const SEED = Number(process.env.FC_SEED ?? 20261124);
const params = { seed: SEED, numRuns: Number(process.env.FC_RUNS ?? 500) };

const buf = (text: string) => Buffer.from(text, "utf8");
const slice = (text: Buffer, span: Span) => text.subarray(span.start, span.end).toString("utf8");

describe("json-text: spans of JSON texts without parsing", () => {
  it("finds each element of an array, as JSON.parse reads it, with the text as written", () => {
    fc.assert(
      fc.property(fc.array(paddedJsonText, { maxLength: 6 }), paddedJsonText, (items, spacing) => {
        const text = buf(`${spacing.match(/^\s*/)?.[0]}[${items.join(",")}]`);
        const spans = arrayElements(text);
        expect(spans).toHaveLength(items.length);
        spans.forEach((span, i) => {
          // Each element's text is the sent text without the whitespace around it.
          expect(slice(text, span)).toBe((items[i] as string).replace(/^[\r\n\t ]+|[\r\n\t ]+$/g, ""));
          expect(JSON.parse(slice(text, span))).toEqual((JSON.parse(text.toString()) as unknown[])[i]);
        });
      }),
      params,
    );
  });

  it("finds a member's value as written; with repeated names the last, like JSON.parse", () => {
    fc.assert(
      fc.property(jsonText, (value) => {
        const text = buf(value);
        const parsed: unknown = JSON.parse(value);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return;
        const members = objectMembers(text);
        expect(new Set(members.map((m) => m.name))).toEqual(new Set(Object.keys(parsed)));
        for (const name of Object.keys(parsed)) {
          const span = memberValue(text, name) as Span;
          expect(JSON.parse(slice(text, span))).toEqual((parsed as Record<string, unknown>)[name]);
        }
      }),
      params,
    );
  });

  it("keeps numbers, escapes and spacing byte for byte", () => {
    const text = buf(
      '{ "d\\u0061ta" : 1 ,"data":\t{"a": 1, "b": [12345678901234567890, 1E400, -0, 1.0]}\r\n, "x\\"": "\\u00e9\\\\" }',
    );
    expect(slice(text, memberValue(text, "data") as Span)).toBe(
      '{"a": 1, "b": [12345678901234567890, 1E400, -0, 1.0]}',
    );
    expect(slice(text, memberValue(text, 'x"') as Span)).toBe('"\\u00e9\\\\"');
    expect(memberValue(text, "missing")).toBeUndefined();
    expect(objectMembers(buf("{ }"))).toEqual([]);
    expect(arrayElements(buf(" [\n] "))).toEqual([]);
    expect(valueSpan(buf(" \r\n 42 \t"))).toEqual({ start: 4, end: 6 });
  });

  it("needs no stack for deep nesting", () => {
    const depth = 100_000;
    const text = buf(`[${"[".repeat(depth)}${"]".repeat(depth)}, 7]`);
    expect(arrayElements(text).map((span) => slice(text, span).length)).toEqual([2 * depth, 1]);
  });
});
