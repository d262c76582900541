import { describe, expect, it } from "vitest";
import { MAX_JSON_DEPTH } from "../../src/events/formats.js";
import { jsonMessageText, parseJsonBody } from "../../src/events/json-body.js";

const bytes = (text: string) => Buffer.from(text, "utf8");
const nested = (depth: number) => bytes(`${"[".repeat(depth)}${"]".repeat(depth)}`);

describe("the one JSON body check (REST bodies and Connect/gRPC-Web JSON messages)", () => {
  it("parses a REST body, with REST's messages for what it refuses", () => {
    expect(parseJsonBody(bytes('{"a":[1]}'))).toEqual({ a: [1] });
    expect(() => parseJsonBody(Buffer.alloc(0))).toThrow("the request body is empty");
    expect(() => parseJsonBody(Buffer.from([0x22, 0xff, 0x22]))).toThrow(
      "the request body is not valid UTF-8",
    );
    expect(() => parseJsonBody(nested(MAX_JSON_DEPTH + 1))).toThrow(
      `the request body nests JSON deeper than ${MAX_JSON_DEPTH} levels`,
    );
    expect(parseJsonBody(nested(MAX_JSON_DEPTH))).toBeInstanceOf(Array);
    expect(() => parseJsonBody(bytes("{"))).toThrow("the request body is not valid JSON");
  });

  it("gives a protobuf JSON message the same checks, and reads empty as the empty message", () => {
    expect(jsonMessageText(bytes('{"source":"s"}'))).toBe('{"source":"s"}');
    expect(jsonMessageText(new Uint8Array(0))).toBe("{}");
    expect(() => jsonMessageText(Buffer.from([0x22, 0xc3, 0x22]))).toThrow("not valid UTF-8");
    expect(() => jsonMessageText(nested(MAX_JSON_DEPTH + 1))).toThrow("deeper than");
    // Not JSON at all: left to protobuf-es, which says so itself.
    expect(jsonMessageText(bytes("{"))).toBe("{");
  });

  it("refuses a __proto__ key however it is spelled, and nothing else", () => {
    for (const text of [
      '{"extensions":{"__proto__":"x"}}',
      '{"extensions":{"\\u005f_proto__":"x"}}',
      '[{"a":{"__proto\\u005f_":1}}]',
    ]) {
      expect(() => jsonMessageText(bytes(text)), text).toThrow(
        '"__proto__" is not a valid field or attribute name',
      );
    }
    for (const text of ['{"subject":"__proto__"}', '{"a":"\\u00fc","b":{"proto":1}}']) {
      expect(jsonMessageText(bytes(text)), text).toBe(text);
    }
  });
});
