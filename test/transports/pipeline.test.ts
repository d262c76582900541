import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningServer, startServer } from "../../src/server.js";
import { connectPeer, grpcMessage, openConnectStream, rawGrpcCall } from "../support/grpc.js";
import { testConfig } from "../support/server.js";

/**
 * Issue 11, items 1–2: every request passes one pipeline, whatever its transport. The gRPC unary
 * fast path has no credential parser, guard calls or log line of its own: with it on and off, a
 * call gets the same answer and the same request line; SSE and gRPC streams share one pump and say
 * the same when they open and close.
 */

const TOKEN = "pipeline-token-0123456789";
const CREATE_EVENT = "/grpc.EventsDB/CreateEvent";
// CreateEventRequest{source:"s", type:"t", subject:"p/1"} in protobuf wire format.
const VALID = Buffer.from([0x0a, 0x01, 0x73, 0x12, 0x01, 0x74, 0x1a, 0x03, 0x70, 0x2f, 0x31]);

interface LogLine {
  readonly msg: string;
  readonly [field: string]: unknown;
}

interface Logged {
  readonly server: RunningServer;
  readonly url: string;
  readonly grpcUrl: string;
  readonly lines: LogLine[];
}

async function start(fastPath: boolean): Promise<Logged> {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const config = testConfig("sqlite::memory:", { "grpc-fast-path": String(fastPath) }, { AUTH_TOKEN: TOKEN });
  const server = await startServer(config, { logger: { level: "info", stream }, defaultMetrics: false });
  return {
    server,
    url: `http://127.0.0.1:${server.restPort}`,
    grpcUrl: `http://127.0.0.1:${server.grpcPort}`,
    lines,
  };
}

/** A session cookie for the token (the console's sign-in). */
async function signIn(url: string): Promise<string> {
  const res = await fetch(`${url}/auth/session`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: TOKEN }),
  });
  expect(res.status).toBe(200);
  return (res.headers.get("set-cookie") ?? "").split(";")[0] as string;
}

describe.each([
  ["on", true],
  ["off", false],
])("one pipeline (--grpc-fast-path %s)", (_name, fastPath) => {
  let t: Logged;
  beforeAll(async () => {
    t = await start(fastPath);
  });
  afterAll(async () => {
    await t.server.close();
  });

  /** The request lines of CreateEvent calls, without what differs per call (time, ms, ids). */
  const requestLines = () =>
    t.lines
      .filter((line) => line.msg === "request" && line.route === CREATE_EVENT)
      .map(({ method, route, status, grpcStatus, caller }) => ({
        method,
        route,
        status,
        grpcStatus,
        caller,
      }));

  it("answers gRPC appends alike and writes the same request line for each", async () => {
    const bearer = { authorization: `Bearer ${TOKEN}` };
    const cookie = await signIn(t.url);
    // The session cookie is a credential on gRPC too, under the CSRF rule for state changes.
    const console = { cookie, "sec-fetch-site": "same-origin", "x-eventsdb-console": "1" };
    const calls: [Record<string, string>, Buffer, string][] = [
      [bearer, grpcMessage(VALID), "0"],
      [{ authorization: "wrong" }, grpcMessage(VALID), "16"],
      [{}, grpcMessage(VALID), "16"],
      [bearer, grpcMessage(Buffer.from([0xff, 0xff, 0xff])), "3"],
      [{ cookie }, grpcMessage(VALID), "7"],
      [console, grpcMessage(VALID), "0"],
    ];
    for (const [headers, body, status] of calls) {
      const answer = await rawGrpcCall(t.grpcUrl, CREATE_EVENT, body, headers);
      expect(answer.grpcStatus, JSON.stringify(headers)).toBe(status);
    }
    const line = (grpcStatus: number, caller: string) => ({
      method: "POST",
      route: CREATE_EVENT,
      status: 200,
      grpcStatus,
      caller,
    });
    await expect.poll(requestLines).toEqual([
      line(0, "auth-token"),
      line(16, "anonymous"),
      line(16, "anonymous"),
      line(3, "auth-token"),
      line(7, "anonymous"), // refused before it was admitted: no caller yet
      line(0, "auth-token"),
    ]);
  });

  it("logs a handler's bug with its stack on every transport and answers internal without detail", async () => {
    const headers = { authorization: `Bearer ${TOKEN}` };
    const { eventLog } = t.server;
    const bug = () => Promise.reject(new Error("bug: the store is broken"));
    const failed = () => t.lines.filter((line) => line.msg === "request failed");
    const before = failed().length;
    Object.assign(eventLog, { get: bug, append: bug });
    try {
      const rest = await fetch(`${t.url}/events/1`, { headers });
      expect([rest.status, await rest.json()]).toEqual([
        500,
        { error: { code: "internal", message: "internal error" } },
      ]);
      const connect = await fetch(`${t.url}/grpc.EventsDB/GetEventByID`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body: '{"id":"1"}',
      });
      expect([connect.status, await connect.json()]).toEqual([
        500,
        { code: "internal", message: "internal error" },
      ]);
      // gRPC: CreateEvent goes the fast path when it is on, the Connect path when it is off.
      const grpc = await rawGrpcCall(t.grpcUrl, CREATE_EVENT, grpcMessage(VALID), headers);
      expect([grpc.grpcStatus, decodeURIComponent(grpc.rawMessage ?? "")]).toEqual(["13", "internal error"]);
      await expect.poll(() => failed().length).toBe(before + 3);
      for (const line of failed().slice(before)) {
        expect(line.err).toMatchObject({
          message: "bug: the store is broken",
          stack: expect.stringContaining("Error"),
        });
      }
    } finally {
      delete (eventLog as unknown as Record<string, unknown>).get;
      delete (eventLog as unknown as Record<string, unknown>).append;
    }
  });

  it("opens and closes SSE and gRPC streams through one pump: the same log lines", async () => {
    const headers = { authorization: `Bearer ${TOKEN}` };
    const sse = new AbortController();
    const res = await fetch(`${t.url}/events/stream?subject=p/1`, { headers, signal: sse.signal });
    expect(res.status).toBe(200);
    const peer = connectPeer("grpc (HTTP/2)", t);
    const grpc = openConnectStream((signal) =>
      peer.client.streamEventsFromSubject({ subject: "p/1" }, { signal, headers }),
    );
    const opened = () => t.lines.filter((line) => line.msg === "stream opened");
    await expect
      .poll(() => opened().map((line) => line.transport))
      .toEqual(expect.arrayContaining(["sse", "grpc"]));
    for (const line of opened()) {
      expect(line).toMatchObject({ subjects: ["p/1"], recursive: false, fromId: 0, caller: "auth-token" });
    }
    sse.abort();
    grpc.close();
    await grpc.ended;
    peer.close();
    const closed = () => t.lines.filter((line) => line.msg === "stream closed");
    await expect
      .poll(() =>
        closed()
          .map((line) => line.transport)
          .sort(),
      )
      .toEqual(["grpc", "sse"]);
    for (const line of closed()) expect(line.reason).toBe("client left");
  });
});
