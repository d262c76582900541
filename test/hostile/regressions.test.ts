import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { startTestServer } from "../support/server.js";
import { utf8 } from "./arbitraries.js";
import { claimedIds, describeAnswer, Hostile } from "./harness.js";

// Bugs the properties of properties.test.ts found, one test each; each failed before its fix.

describe("regressions of bugs found by the hostile-input properties", () => {
  const hostile = Hostile.server();

  it("structured mode: data nested 10,000 deep is a 4xx, not a 500 (JSON.stringify overflows the stack)", async () => {
    const depth = 10_000;
    const body = `{"specversion":"1.0","id":"deep-1","source":"s","type":"t","subject":"bug/deep","data":${"[".repeat(depth)}${"]".repeat(depth)}}`;
    const answer = await hostile.send("/events", {
      method: "POST",
      headers: { "content-type": "application/cloudevents+json" },
      body,
    });
    await hostile.settle(describeAnswer("deep structured data", answer), answer.status);
  });

  it("an extension attribute named __proto__ is rejected like any other invalid name, in every mode", async () => {
    const cases: [string, string, RequestInit][] = [
      [
        "structured",
        "/events",
        {
          method: "POST",
          headers: { "content-type": "application/cloudevents+json" },
          body: '{"specversion":"1.0","id":"proto-1","source":"s","type":"t","subject":"bug/proto","__proto__":"x"}',
        },
      ],
      [
        "binary",
        "/events",
        {
          method: "POST",
          headers: {
            "ce-specversion": "1.0",
            "ce-id": "proto-2",
            "ce-source": "s",
            "ce-type": "t",
            "ce-subject": "bug/proto",
            "ce-__proto__": "x",
          },
          body: "hi",
        },
      ],
      [
        "Connect",
        "/grpc.EventsDB/CreateEvent",
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: '{"source":"s","type":"t","subject":"bug/proto","extensions":{"__proto__":"x"}}',
        },
      ],
    ];
    const outcomes: string[] = [];
    for (const [mode, path, init] of cases) {
      const answer = await hostile.send(path, init);
      const stored = answer.status === 200 ? claimedIds(answer.text) : [];
      await hostile.settle(describeAnswer(mode, answer), answer.status, stored);
      if (answer.status !== 400) outcomes.push(describeAnswer(mode, answer));
    }
    // ce-a_b and "a_b" are 400; "__proto__" is accepted and silently dropped.
    expect(outcomes).toEqual([]);
  });

  it("binary mode: a ce-datacontenttype header is rejected (the check after the reserved-name skip never runs)", async () => {
    const answer = await hostile.send("/events", {
      method: "POST",
      headers: {
        "ce-specversion": "1.0",
        "ce-id": "dct-1",
        "ce-source": "s",
        "ce-type": "t",
        "ce-subject": "bug/dct",
        "ce-datacontenttype": "text/plain",
      },
      body: "hi",
    });
    await hostile.settle(
      describeAnswer("ce-datacontenttype", answer),
      answer.status,
      answer.status === 200 ? claimedIds(answer.text) : [],
    );
    expect(answer.status, describeAnswer("binary mode with ce-datacontenttype", answer)).toBe(400);
  });

  it("Connect: a malformed protobuf request is invalid_argument, not internal (HTTP 500)", async () => {
    const answer = await hostile.send("/grpc.EventsDB/CreateEvent", {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: "garbage",
    });
    expect(answer.status, describeAnswer("garbage protobuf", answer)).toBeLessThan(500);
    expect((JSON.parse(answer.text) as { code: string }).code).toBe("invalid_argument");
  });

  it("Connect: a gzip or brotli body that does not decompress is invalid_argument, not internal (HTTP 500)", async () => {
    const gzip = gzipSync('{"prefix":""}');
    const outcomes: string[] = [];
    for (const [encoding, body] of [
      ["gzip", gzip.subarray(0, 10)], // cut short: zlib's Z_BUF_ERROR
      ["gzip", Buffer.from("{")],
      ["br", Buffer.from("x")],
    ] as const) {
      const answer = await hostile.send("/grpc.EventsDB/ListSubjects", {
        method: "POST",
        headers: { "content-type": "application/json", "content-encoding": encoding },
        body,
      });
      if (answer.status >= 500)
        outcomes.push(describeAnswer(`${encoding} ${JSON.stringify(body.toString("latin1"))}`, answer));
    }
    // A body that is not gzip at all ("incorrect header check") is already a 400.
    expect(outcomes).toEqual([]);
  });

  it("Connect JSON: invalid UTF-8 in a string is rejected like on REST, not stored as U+FFFD", async () => {
    const body = Buffer.concat([
      utf8('{"source":"'),
      Buffer.from([0xff]),
      utf8('","type":"t","subject":"bug/utf8"}'),
    ]);
    const rest = await hostile.send("/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(rest.status).toBe(400);
    const answer = await hostile.send("/grpc.EventsDB/CreateEvent", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    const claimed = answer.status === 200 ? claimedIds(answer.text) : [];
    await hostile.settle(describeAnswer("invalid UTF-8", answer), answer.status, claimed);
    expect(answer.status, describeAnswer("Connect CreateEvent with a 0xFF byte in source", answer)).toBe(400);
  });

  it("an accepted event whose JSON data nests 20,000 deep reads back (structured, batch) without a 500", async () => {
    const dir2 = mkdtempSync(join(tmpdir(), "eventsdb-hostile-deep-"));
    const big = await startTestServer(`sqlite:${join(dir2, "events.db")}`, { "max-event-bytes": "65536" });
    try {
      const depth = 20_000;
      const posted = await fetch(`${big.url}/events`, {
        method: "POST",
        headers: {
          "ce-specversion": "1.0",
          "ce-id": "deep",
          "ce-source": "s",
          "ce-type": "t",
          "ce-subject": "bug/deep",
          "content-type": "application/json",
        },
        body: `${"[".repeat(depth)}${"]".repeat(depth)}`,
      });
      const answer = { status: posted.status, text: await posted.text() };
      // Rejecting such data at the door would be a fix too; storing it must not poison reads.
      if (answer.status !== 200) {
        expect(answer.status, describeAnswer("deep binary data", answer)).toBeLessThan(500);
        return;
      }
      const [id] = claimedIds(answer.text);
      const one = await fetch(`${big.url}/events/${id}`, {
        headers: { accept: "application/cloudevents+json" },
      });
      const page = await fetch(`${big.url}/events?subject=bug/deep`, {
        headers: { accept: "application/cloudevents-batch+json" },
      });
      expect([one.status, page.status], await one.text()).toEqual([200, 200]);
    } finally {
      await big.close();
      rmSync(dir2, { recursive: true, force: true });
    }
  });
});
