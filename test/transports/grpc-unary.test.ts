import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FAST_PATH_MODES, grpcMessage, rawGrpcCall } from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";

/** `message` as one length-prefixed frame with the given flag byte (1: compressed). */
function frame(message: Buffer, flag = 0): Buffer {
  const framed = grpcMessage(message);
  framed[0] = flag;
  return framed;
}

/** The status and its decoded message of a raw unary call. */
async function call(url: string, path: string, body: Buffer, headers: Record<string, string> = {}) {
  const answer = await rawGrpcCall(url, path, body, headers);
  const message = answer.rawMessage === undefined ? undefined : decodeURIComponent(answer.rawMessage);
  return { status: answer.grpcStatus, message, data: answer.data };
}

// CreateEventRequest{source:"s", type:"t", subject:"u"} in protobuf wire format.
const VALID = Buffer.from([0x0a, 0x01, 0x73, 0x12, 0x01, 0x74, 0x1a, 0x01, 0x75]);

/**
 * Bodies that are not one uncompressed message, with the status both paths give: the fast path
 * answers as the Connect path (upstream's envelope reader) does, following the gRPC status codes
 * document (zero or two messages: a cardinality violation, UNIMPLEMENTED).
 */
const CASES: [string, Buffer, string][] = [
  ["malformed protobuf", frame(Buffer.from([0xff, 0xff, 0xff])), "3"],
  ["a compressed flag without grpc-encoding", frame(VALID, 1), "13"],
  ["two messages", Buffer.concat([frame(VALID), frame(VALID)]), "12"],
  [
    "a malformed message and a second one",
    Buffer.concat([frame(Buffer.from([0xff, 0xff])), frame(VALID)]),
    "3",
  ],
  ["a message and a cut one", Buffer.concat([frame(VALID), frame(VALID).subarray(0, 7)]), "3"],
  ["a truncated frame", frame(VALID).subarray(0, 7), "3"],
  ["a cut header", Buffer.from([0, 0, 0]), "3"],
  ["an empty body", Buffer.alloc(0), "12"],
  [
    "a message over --max-body-bytes",
    frame(Buffer.concat([VALID, Buffer.from([0x22, 0x80, 0x10]), Buffer.alloc(2048)])),
    "8",
  ],
];

/** 1 MiB: the client cannot send it all before the server's answer (64 KiB window). */
const BIG = frame(Buffer.concat([VALID, Buffer.from([0x22, 0x80, 0x80, 0x40]), Buffer.alloc(1 << 20)]));

// What the wire carries for unary calls, on the fast path and without it: the same either way.
describe.each(FAST_PATH_MODES)("unary gRPC calls on the wire, fast path $fastPath", ({ flags }) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite::memory:", { "max-body-bytes": "1024", ...flags });
  });
  afterAll(async () => {
    await t.close();
  });

  it("appends and answers one length-prefixed reply with grpc-status 0 in the trailers", async () => {
    const answer = await call(t.grpcUrl, "/grpc.EventsDB/CreateEvent", frame(VALID));
    expect(answer.status).toBe("0");
    expect(answer.data.subarray(0, 5)).toEqual(Buffer.from([0, 0, 0, 0, 2]));
    expect(answer.data.subarray(5)).toEqual(Buffer.from([0x08, 0x01])); // CreateEventReply{id: 1}
  });

  for (const [name, body, status] of CASES) {
    it(`answers ${name} with status ${status}, stores nothing and stays up`, async () => {
      const before = ((await (await fetch(`${t.url}/events?limit=1000`)).json()) as { events: unknown[] })
        .events.length;
      const answer = await call(t.grpcUrl, "/grpc.EventsDB/CreateEvent", body);
      expect(answer.status).toBe(status);
      const after = ((await (await fetch(`${t.url}/events?limit=1000`)).json()) as { events: unknown[] })
        .events.length;
      expect(after).toBe(before);
    });
  }

  it("answers a message far beyond the flow-control window at once and ends the stream", async () => {
    const answer = await call(t.grpcUrl, "/grpc.EventsDB/CreateEvent", BIG);
    expect(answer.status).toBe("8");
    // The call is over on the server too: nothing left for a graceful stop to wait for.
    await expect.poll(() => t.server.inFlight).toBe(0);
  });

  it("names --max-body-bytes in the message of such a call", async () => {
    const answer = await call(t.grpcUrl, "/grpc.EventsDB/CreateEvent", BIG);
    expect(answer.message).toMatch(/^message size \d+ is larger than --max-body-bytes 1024$/);
  });

  it("ends an over-limit call on the Connect path too (gRPC-Web over HTTP/2), not only its answer", async () => {
    const answer = await call(t.grpcUrl, "/grpc.EventsDB/CreateEvent", BIG, {
      "content-type": "application/grpc-web+proto",
    });
    // gRPC-Web carries the status in a trailer frame (flag 0x80) of the body.
    expect(answer.data[0]).toBe(0x80);
    expect(answer.data.subarray(5).toString("latin1")).toMatch(/^grpc-status: ?8\r\n/m);
    await expect.poll(() => t.server.inFlight).toBe(0);
  });
});
