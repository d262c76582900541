import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import { connectPeer, GrpcJsClient } from "../support/grpc.js";
import { serversPerTest, type TestServer } from "../support/server.js";

/**
 * Event times: a leap second is refused with a message that says so (not stored as the next
 * second); a valid RFC 3339 time whose UTC falls outside 0001-9999 is refused as out of range (not
 * as bad syntax); the edges of the range are kept exactly. REST (structured, batch, binary) and
 * gRPC (grpc-js on the gRPC port, the unary fast path; Connect).
 */

const LEAP_TIMES = ["1998-12-31T23:59:60Z", "2016-12-31T18:59:60-05:00", "2016-12-31T23:59:60.5Z"];
const OUT_OF_RANGE = [
  "0000-01-01T00:00:00Z",
  "0000-12-31T23:59:59.999999Z",
  "0001-01-01T00:00:00+00:01",
  "9999-12-31T23:59:59-01:00",
  "9999-12-31T23:30:00-00:30",
];
/** Sent → as read back. */
const EDGES: [string, string][] = [
  ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"],
  ["0000-12-31T23:30:00-01:00", "0001-01-01T00:30:00Z"],
  ["9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"],
  ["9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59.999999Z"],
];

const LEAP = "is a leap second (second 60)";
const RANGE = "falls outside the years 0001 to 9999 in UTC";
/** The whole message for one event's time; `words` is the part without punctuation. */
const fullMessage = (time: string, words: string) =>
  words === LEAP
    ? `time ${JSON.stringify(time)} ${LEAP}, which this store cannot keep; send the second before or after it`
    : `time ${JSON.stringify(time)} ${RANGE} (0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z), which this store cannot keep`;
const CASES: [string, string][] = [
  ...LEAP_TIMES.map((time): [string, string] => [time, LEAP]),
  ...OUT_OF_RANGE.map((time): [string, string] => [time, RANGE]),
];

describe.each(DIALECTS)("event times on $name", (dialect) => {
  const { start, onCleanup } = serversPerTest(() => dialect.url());

  const ce = (id: string, time: string) => ({
    specversion: "1.0",
    id,
    source: "time",
    type: "t",
    subject: "times",
    time,
  });
  const post = async (
    t: TestServer,
    body: unknown,
    contentType: string,
    headers: Record<string, string> = {},
  ) => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": contentType, ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as { id?: number; error?: { message: string } } };
  };
  const storedCount = async (t: TestServer) =>
    ((await (await fetch(`${t.url}/events?subject=times`)).json()) as { events: unknown[] }).events.length;

  it("REST refuses a leap second and an out-of-range time with a 400 that says which, and stores nothing", async () => {
    const t = await start();
    for (const [time, words] of CASES) {
      const single = await post(t, ce("x", time), "application/cloudevents+json");
      expect(single.status, time).toBe(400);
      expect(single.body.error?.message, time).toBe(fullMessage(time, words));
      const batch = await post(
        t,
        [ce("ok", "2026-01-02T03:04:05Z"), ce("x", time)],
        "application/cloudevents-batch+json",
      );
      expect(batch.status, time).toBe(400);
      expect(batch.body.error?.message, time).toBe(`event 1: ${fullMessage(time, words)}`);
      const binary = await post(t, "", "application/octet-stream", {
        "ce-specversion": "1.0",
        "ce-id": "b",
        "ce-source": "time",
        "ce-type": "t",
        "ce-subject": "times",
        "ce-time": time,
      });
      expect(binary.status, time).toBe(400);
      expect(binary.body.error?.message, time).toBe(fullMessage(time, words));
    }
    // Bad syntax keeps its own message.
    const bad = await post(t, ce("x", "2026-01-02T03:04:05"), "application/cloudevents+json");
    expect(bad.body.error?.message).toContain("must be an RFC 3339 timestamp");
    expect(await storedCount(t)).toBe(0);
  });

  it("gRPC (grpc-js on the gRPC port and Connect) refuses them with INVALID_ARGUMENT and the same message", async () => {
    const t = await start();
    const grpcJs = new GrpcJsClient(t.server.grpcPort);
    onCleanup(() => grpcJs.close());
    const connect = connectPeer("connect (HTTP/1.1)", t);
    onCleanup(connect.close);
    const request = (time: string) => ({ source: "time", type: "t", subject: "times", id: "g", time });
    for (const [time, words] of CASES) {
      // grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"): compare the words only.
      const failure = await grpcJs.failure("CreateEvent", request(time));
      expect(failure.code, time).toBe(grpc.status.INVALID_ARGUMENT);
      expect(failure.details, time).toContain(words);
      const batch = await grpcJs.failure("CreateEvents", { events: [request(time)] });
      expect(batch.code, time).toBe(grpc.status.INVALID_ARGUMENT);
      expect(batch.details, time).toContain(words);
      const error = await connect.client.createEvent(request(time)).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(error?.code, time).toBe(Code.InvalidArgument);
      expect(error?.rawMessage, time).toBe(fullMessage(time, words));
    }
    expect(await storedCount(t)).toBe(0);
  });

  it("keeps the first and last microsecond of the range exactly (REST and gRPC)", async () => {
    const t = await start();
    const grpcJs = new GrpcJsClient(t.server.grpcPort);
    onCleanup(() => grpcJs.close());
    for (const [i, [sent, read]] of EDGES.entries()) {
      const rest = await post(t, ce(`r${i}`, sent), "application/cloudevents+json");
      expect(rest.status, sent).toBe(200);
      const simple = (await (await fetch(`${t.url}/events/${rest.body.id}`)).json()) as { time: string };
      expect(simple.time, sent).toBe(read);
      const { id } = await grpcJs.unary("CreateEvent", {
        source: "time",
        type: "t",
        subject: "times",
        id: `g${i}`,
        time: sent,
      });
      const event = await grpcJs.unary("GetEventByID", { id });
      expect(event.time, sent).toBe(read);
    }
  });
});
