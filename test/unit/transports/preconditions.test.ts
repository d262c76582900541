import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { toAppendInput, toPreconditions } from "../../../src/events/proto.js";
import {
  CreateEventRequestSchema,
  CreateEventsRequestSchema,
  PreconditionSchema,
} from "../../../src/gen/grpc/eventsdb_pb.js";
import {
  MAX_PRECONDITIONS_HEADER_BYTES,
  parsePreconditionsHeader,
} from "../../../src/transports/http/preconditions.js";
import { testConfig } from "../../support/server.js";

const limits = testConfig("sqlite::memory:").limits;

describe("the EventsDB-Preconditions header", () => {
  it("reads EventSourcingDB's shape, eventId as a string or a number; absent = none", () => {
    const header = JSON.stringify([
      { type: "isSubjectPristine", payload: { subject: "/a" } },
      { type: "isSubjectPopulated", payload: { subject: "/b" } },
      { type: "isSubjectOnEventId", payload: { subject: "/c", eventId: "7" } },
      { type: "isSubjectOnEventId", payload: { subject: "/d", eventId: 8 } },
    ]);
    expect(parsePreconditionsHeader(header)).toEqual([
      { kind: "pristine", subject: "/a" },
      { kind: "populated", subject: "/b" },
      { kind: "on_event", subject: "/c", id: 7 },
      { kind: "on_event", subject: "/d", id: 8 },
    ]);
    expect(parsePreconditionsHeader(undefined)).toEqual([]);
    expect(parsePreconditionsHeader("[]")).toEqual([]);
    expect(
      parsePreconditionsHeader('[{"type":"isSubjectPristine","payload":{"subject":"\\u00e9"}}]'),
    ).toEqual([{ kind: "pristine", subject: "é" }]);
  });

  it.each([
    ["not JSON", "[{", "EventsDB-Preconditions is not JSON"],
    ["not an array", '{"type":"isSubjectPristine"}', "must be a JSON array"],
    ["an item not an object", "[1]", "EventsDB-Preconditions [0] must be an object"],
    ["no payload", '[{"type":"isSubjectPristine"}]', "[0]: payload must be an object"],
    ["no subject", '[{"type":"isSubjectPristine","payload":{}}]', "[0]: payload.subject must be a string"],
    ["an unknown type", '[{"type":"isSubjectX","payload":{"subject":"a"}}]', 'not "isSubjectX"'],
    [
      "a bad eventId",
      '[{"type":"isSubjectOnEventId","payload":{"subject":"a","eventId":"x"}}]',
      "[0]: payload.eventId must be an event id",
    ],
    [
      "no eventId",
      '[{"type":"isSubjectOnEventId","payload":{"subject":"a"}}]',
      "[0]: payload.eventId must be an event id",
    ],
    ["too long", `[${" ".repeat(MAX_PRECONDITIONS_HEADER_BYTES)}]`, "longer than 8192 bytes"],
  ])("refuses %s (invalid_argument naming the header)", (_name, header, message) => {
    expect(() => parsePreconditionsHeader(header)).toThrow(
      expect.objectContaining({ code: "invalid_argument", message: expect.stringContaining(message) }),
    );
  });

  it("refuses the header sent twice", () => {
    expect(() => parsePreconditionsHeader(["[]", "[]"])).toThrow("EventsDB-Preconditions must be sent once");
  });
});

describe("preconditions in protobuf", () => {
  it("converts every kind; a request without the field has none", () => {
    const messages = [
      create(PreconditionSchema, { condition: { case: "pristine", value: "/a" } }),
      create(PreconditionSchema, { condition: { case: "populated", value: "/b" } }),
      create(PreconditionSchema, { condition: { case: "onEvent", value: { subject: "/c", id: 7n } } }),
    ];
    expect(toPreconditions(messages)).toEqual([
      { kind: "pristine", subject: "/a" },
      { kind: "populated", subject: "/b" },
      { kind: "on_event", subject: "/c", id: 7 },
    ]);
    const plain = create(CreateEventRequestSchema, { source: "s", type: "t", subject: "u" });
    expect(toAppendInput(plain, limits).preconditions).toEqual([]);
    const batch = create(CreateEventsRequestSchema, { events: [plain], preconditions: messages.slice(0, 1) });
    expect(toAppendInput(batch, limits)).toMatchObject({ preconditions: [{ kind: "pristine" }] });
  });

  it("refuses an empty condition, an id out of range, and preconditions on a batch's events", () => {
    expect(() => toPreconditions([create(PreconditionSchema, {})])).toThrow(
      "precondition 0: set one of pristine, populated, on_event",
    );
    expect(() =>
      toPreconditions([
        create(PreconditionSchema, { condition: { case: "onEvent", value: { subject: "/c", id: -1n } } }),
      ]),
    ).toThrow("precondition 0: id is out of range");
    const inner = create(CreateEventRequestSchema, {
      source: "s",
      type: "t",
      preconditions: [create(PreconditionSchema, { condition: { case: "pristine", value: "/a" } })],
    });
    expect(() => toAppendInput(create(CreateEventsRequestSchema, { events: [inner] }), limits)).toThrow(
      "event 0: set preconditions on CreateEventsRequest, not on its events",
    );
  });
});
