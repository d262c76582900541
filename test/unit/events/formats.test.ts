import { create } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import type { StoredEvent } from "../../../src/events/event.js";
import {
  fromBinary,
  fromJsonEvent,
  fromStructured,
  simpleJsonParts,
  structuredJsonParts,
  toSimpleJson,
  toStructuredJson,
} from "../../../src/events/formats.js";
import { toNewEvent, toProto } from "../../../src/events/proto.js";
import { CreateEventRequestSchema } from "../../../src/gen/grpc/eventsdb_pb.js";

const limits = loadConfig({}).limits;
const stored = (fields: Partial<StoredEvent>): StoredEvent => ({
  id: 7,
  source: "s",
  type: "t",
  subject: undefined,
  ceId: undefined,
  time: "2026-01-02T03:04:05.000000Z",
  datacontenttype: undefined,
  dataschema: undefined,
  extensions: undefined,
  data: Buffer.alloc(0),
  ...fields,
});
/** A structured event from its JSON text, as the REST transport reads one. */
const structured = (text: string) => fromStructured(JSON.parse(text), Buffer.from(text), limits);

const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });

/** Stored events with every optional attribute present or not, and any data. */
const storedEvent: fc.Arbitrary<StoredEvent> = fc.record({
  id: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  source: fc.string({ minLength: 1 }),
  type: fc.string({ minLength: 1 }),
  subject: optional(fc.string({ minLength: 1 })),
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

describe("events without a subject", () => {
  it("are read from every JSON shape and binary mode when the subject is absent or null", () => {
    const simple = '{"source":"s","type":"t","data":""}';
    expect(fromJsonEvent(JSON.parse(simple), Buffer.from(simple), limits).subject).toBeUndefined();
    const nullSubject = '{"source":"s","type":"t","subject":null}';
    expect(fromJsonEvent(JSON.parse(nullSubject), Buffer.from(nullSubject), limits).subject).toBeUndefined();
    expect(structured('{"specversion":"1.0","id":"1","source":"s","type":"t"}').subject).toBeUndefined();
    const headers = { "ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t" };
    expect(fromBinary(headers, Buffer.alloc(0), limits).subject).toBeUndefined();
  });

  it("refuse an empty subject: absent is how an event has none", () => {
    expect(() => structured('{"specversion":"1.0","id":"1","source":"s","type":"t","subject":""}')).toThrow(
      "subject must not be empty; leave it out for an event without a subject",
    );
    const headers = {
      "ce-specversion": "1.0",
      "ce-id": "1",
      "ce-source": "s",
      "ce-type": "t",
      "ce-subject": "",
    };
    expect(() => fromBinary(headers, Buffer.alloc(0), limits)).toThrow("subject must not be empty");
  });

  it('are written without the member in the simple and structured formats, and as "" in gRPC', () => {
    const event = stored({});
    expect(toSimpleJson(event)).not.toHaveProperty("subject");
    expect(JSON.parse(toStructuredJson(event))).not.toHaveProperty("subject");
    expect(toProto(event).subject).toBe("");
    expect(toProto(stored({ subject: "a" })).subject).toBe("a");
  });

  it('come from gRPC as a subject of "" (proto3 has no absent string)', () => {
    const request = create(CreateEventRequestSchema, { source: "s", type: "t" });
    expect(toNewEvent(request, limits).subject).toBeUndefined();
    expect(toNewEvent({ ...request, subject: "a" }, limits).subject).toBe("a");
  });
});

describe("CloudEvents 0.3, stored as 1.0", () => {
  it("maps schemaurl to dataschema and base64 data to its bytes (structured)", () => {
    const event = structured(
      '{"specversion":"0.3","id":"1","source":"s","type":"t","schemaurl":"https://example.com/s",' +
        '"datacontenttype":"application/octet-stream","datacontentencoding":"Base64","data":"AAEC","ext":"x"}',
    );
    expect(event).toMatchObject({
      dataschema: "https://example.com/s",
      datacontenttype: "application/octet-stream",
      data: Buffer.from([0, 1, 2]),
      extensions: { ext: "x" },
    });
    expect(
      JSON.parse(toStructuredJson(stored({ ...event, time: "2026-01-02T03:04:05.000000Z" }))),
    ).toMatchObject({
      specversion: "1.0",
      dataschema: "https://example.com/s",
      data_base64: "AAEC",
    });
  });

  it("keeps JSON data as sent and reads 1.0's attribute names as extensions only in 1.0", () => {
    const event = structured('{"specversion":"0.3","id":"1","source":"s","type":"t","data":{"a": 1}}');
    expect(event.data.toString()).toBe('{"a": 1}');
    expect(
      structured('{"specversion":"1.0","id":"1","source":"s","type":"t","schemaurl":"x"}').extensions,
    ).toEqual({
      schemaurl: "x",
    });
  });

  it.each([
    ['"dataschema":"https://x"', "dataschema is not a CloudEvents 0.3 attribute; 0.3 sends schemaurl"],
    ['"data_base64":"AA=="', "data_base64 is not a CloudEvents 0.3 attribute"],
    ['"datacontentencoding":"quoted-printable","data":"x"', 'datacontentencoding must be "base64"'],
    ['"datacontentencoding":"base64","data":"not base64"', "data is not valid base64"],
  ])("refuses a 0.3 event with %s", (member, message) => {
    expect(() => structured(`{"specversion":"0.3","id":"1","source":"s","type":"t",${member}}`)).toThrow(
      message,
    );
  });

  it("reads binary mode with ce-schemaurl and ce-datacontentencoding", () => {
    const headers = {
      "ce-specversion": "0.3",
      "ce-id": "1",
      "ce-source": "s",
      "ce-type": "t",
      "ce-schemaurl": "https%3A%2F%2Fexample.com%2Fs",
      "ce-datacontentencoding": "base64",
      "content-type": "application/octet-stream",
    };
    expect(fromBinary(headers, Buffer.from("AAEC"), limits)).toMatchObject({
      dataschema: "https://example.com/s",
      data: Buffer.from([0, 1, 2]),
      extensions: undefined,
    });
    expect(() => fromBinary({ ...headers, "ce-dataschema": "urn:x" }, Buffer.from("AAEC"), limits)).toThrow(
      "ce-dataschema is not a CloudEvents 0.3 attribute; 0.3 sends ce-schemaurl",
    );
    expect(() => fromBinary({ ...headers, "ce-specversion": "0.2" }, Buffer.alloc(0), limits)).toThrow(
      'ce-specversion must be "1.0" or "0.3", got "0.2"',
    );
  });
});
