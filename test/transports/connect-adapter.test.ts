import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import { compressionGzip } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_JSON_DEPTH } from "../../src/events/formats.js";
import { EventsDB, GetEventByIDRequestSchema } from "../../src/gen/grpc/eventsdb_pb.js";
import { grpcMessage, rawGrpcCall } from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";

/**
 * What src/transports/grpc/connect-adapter.ts adds to @connectrpc/connect-fastify. The first block
 * pins upstream's own answers that the adapter works around: when one of them fails, upstream has
 * changed — check the adapter's matching override and remove it if it is no longer needed.
 */

/** The published plugin alone, with a CreateEvent that answers what it was given as its error. */
async function upstreamOnly(
  options: { jsonOptions?: object; readMaxBytes?: number } = {},
): Promise<FastifyInstance> {
  const app = Fastify();
  await app.register(fastifyConnectPlugin, {
    ...options,
    routes: (router) => {
      router.service(EventsDB, {
        createEvent: (request) => {
          throw new ConnectError(
            JSON.stringify({ source: request.source, extensions: Object.keys(request.extensions) }),
            Code.FailedPrecondition,
          );
        },
      });
    },
  });
  await app.ready();
  return app;
}

async function connectCall(app: FastifyInstance, body: string | Buffer, contentType = "application/json") {
  const answer = await app.inject({
    method: "POST",
    url: "/grpc.EventsDB/CreateEvent",
    headers: { "content-type": contentType },
    payload: body,
  });
  return { status: answer.statusCode, error: answer.json<{ code: string; message: string }>() };
}

const invalidUtf8 = Buffer.concat([
  Buffer.from('{"source":"a'),
  Buffer.from([0xff]),
  Buffer.from('","type":"t","subject":"s"}'),
]);

describe("upstream @connectrpc/connect-fastify, as the adapter's overrides assume it", () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await upstreamOnly();
  });
  afterAll(async () => {
    await app.close();
  });

  it("answers a request message that is not protobuf with INTERNAL (HTTP 500), message 'parse binary: …'", async () => {
    const answer = await connectCall(app, Buffer.from([0xff, 0xff, 0xff]), "application/proto");
    expect(answer.status).toBe(500);
    expect(answer.error.code).toBe("internal");
    expect(answer.error.message).toMatch(/^parse binary: /);
  });

  it("answers a cut gzip body with INTERNAL", async () => {
    const cut = gzipSync('{"prefix":""}').subarray(0, 10);
    const failure = await compressionGzip.decompress(cut, 1 << 20).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(failure?.code).toBe(Code.Internal);
  });

  it("names the size limit by its option, readMaxBytes, in a RESOURCE_EXHAUSTED (HTTP 429)", async () => {
    const small = await upstreamOnly({ readMaxBytes: 16 });
    try {
      const answer = await connectCall(small, JSON.stringify({ source: "x".repeat(64) }));
      expect([answer.status, answer.error.code]).toEqual([429, "resource_exhausted"]);
      expect(answer.error.message).toMatch(/is larger than configured readMaxBytes 16$/);
    } finally {
      await small.close();
    }
  });

  it("percent-encodes grpc-message with encodeURIComponent (grpc-js shows `a%2Fb`)", () => {
    const trailer = setTrailerStatus(new Headers(), new ConnectError("a/b", Code.NotFound));
    expect(trailer.get("grpc-message")).toBe("a%2Fb");
  });

  it("reads Connect JSON with a lenient UTF-8 decoder: a 0xFF byte becomes U+FFFD", async () => {
    const answer = await connectCall(app, invalidUtf8);
    expect(answer.error.code).toBe("failed_precondition");
    expect(JSON.parse(answer.error.message).source).toBe("a\uFFFD");
  });

  it("drops a `__proto__` key of a JSON map without a word", async () => {
    const answer = await connectCall(app, '{"source":"s","extensions":{"__proto__":"x","ok":"y"}}');
    expect(JSON.parse(answer.error.message).extensions).toEqual(["ok"]);
  });

  it("honours jsonOptions.textDecoder on the server (not in the handler options' type)", async () => {
    const strict = await upstreamOnly({
      jsonOptions: {
        textDecoder: {
          decode: () => {
            throw new Error("refused by the decoder");
          },
        },
      },
    });
    try {
      const answer = await connectCall(strict, '{"source":"s"}');
      expect([answer.status, answer.error.code, answer.error.message]).toEqual([
        400,
        "invalid_argument",
        "refused by the decoder",
      ]);
    } finally {
      await strict.close();
    }
  });
});

describe("the Connect adapter", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer("sqlite::memory:", { "max-body-bytes": "1024" });
  });
  afterAll(async () => {
    await t.close();
  });

  const post = async (path: string, body: Buffer | string, headers: Record<string, string>) => {
    const res = await fetch(`${t.url}${path}`, { method: "POST", headers, body });
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  };
  const stored = async () =>
    ((await (await fetch(`${t.url}/events?limit=1000`)).json()) as { events: unknown[] }).events.length;

  it("refuses Connect JSON nested deeper than MAX_JSON_DEPTH with REST's message", async () => {
    const deep = `{"source":"s","type":"t","subject":"d","extensions":{"x":${"[".repeat(MAX_JSON_DEPTH + 1)}${"]".repeat(MAX_JSON_DEPTH + 1)}}}`;
    const answer = await post("/grpc.EventsDB/CreateEvent", deep, { "content-type": "application/json" });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body.toString())).toEqual({
      code: "invalid_argument",
      message: `the request body nests JSON deeper than ${MAX_JSON_DEPTH} levels`,
    });
  });

  it("refuses invalid UTF-8 in a gzip-compressed Connect JSON body too, and stores nothing", async () => {
    const before = await stored();
    const answer = await post("/grpc.EventsDB/CreateEvent", gzipSync(invalidUtf8), {
      "content-type": "application/json",
      "content-encoding": "gzip",
    });
    expect([answer.status, JSON.parse(answer.body.toString()).message]).toEqual([
      400,
      "the request body is not valid UTF-8",
    ]);
    expect(await stored()).toBe(before);
  });

  it("refuses a `__proto__` map key in gRPC-Web JSON, and stores nothing", async () => {
    const before = await stored();
    const json = Buffer.from('{"source":"s","type":"t","subject":"p","extensions":{"__proto__":"x"}}');
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, json.length]), json]);
    const answer = await post("/grpc.EventsDB/CreateEvent", envelope, {
      "content-type": "application/grpc-web+json",
    });
    const status =
      answer.headers.get("grpc-status") ?? /grpc-status: ?(\d+)/.exec(answer.body.toString())?.[1];
    expect(status).toBe(String(grpc.status.INVALID_ARGUMENT));
    expect(await stored()).toBe(before);
  });

  it("answers a gRPC message that is not protobuf with INVALID_ARGUMENT on the Connect path", async () => {
    const answer = await rawGrpcCall(
      t.grpcUrl,
      "/grpc.EventsDB/GetEventByID",
      grpcMessage(Buffer.from([0xff, 0xff, 0xff])),
    );
    expect(answer.grpcStatus).toBe(String(grpc.status.INVALID_ARGUMENT));
    expect(decodeURIComponent(answer.rawMessage ?? "")).toMatch(/^parse binary: /);
  });

  it("answers a gRPC-Web message that is not protobuf with INVALID_ARGUMENT, grpc-message spec-encoded", async () => {
    const answer = await post("/grpc.EventsDB/GetEventByID", grpcMessage(Buffer.from([0xff, 0xff, 0xff])), {
      "content-type": "application/grpc-web+proto",
    });
    // The status is in the trailer frame (flag 0x80) at the end of the body.
    expect(answer.body[0]).toBe(0x80);
    const trailer = answer.body.subarray(5).toString("latin1");
    expect(trailer).toMatch(/^grpc-status: ?3\r$/m);
    expect(trailer).toMatch(/^grpc-message: ?parse binary: /m);
  });

  it("ends a Connect stream whose request is not protobuf with invalid_argument", async () => {
    const answer = await post(
      "/grpc.EventsDB/StreamEventsFromSubject",
      grpcMessage(Buffer.from([0xff, 0xff, 0xff])),
      { "content-type": "application/connect+proto" },
    );
    // The error is in the end-of-stream message (flag 0x02), JSON.
    expect(answer.body[0]).toBe(0b10);
    const end = JSON.parse(answer.body.subarray(5).toString()) as {
      error: { code: string; message: string };
    };
    expect(end.error.code).toBe("invalid_argument");
    expect(end.error.message).toMatch(/^parse binary: /);
  });

  it.each([
    ["Connect", "application/json", Buffer.from(JSON.stringify({ source: "x".repeat(2048) }))],
    ["gRPC-Web", "application/grpc-web+proto", grpcMessage(Buffer.alloc(2048))],
    ["a Connect stream", "application/connect+proto", grpcMessage(Buffer.alloc(2048))],
  ])("names --max-body-bytes when a %s message is over it", async (_name, type, body) => {
    const answer = await post(
      type === "application/connect+proto"
        ? "/grpc.EventsDB/StreamEventsFromSubject"
        : "/grpc.EventsDB/CreateEvent",
      body,
      { "content-type": type },
    );
    const text = answer.body.toString("latin1");
    expect(text).toMatch(/message size \d+ is larger than --max-body-bytes 1024/);
    expect(text).toMatch(/resource_exhausted|grpc-status: ?8/);
    if (type === "application/json") expect(answer.status).toBe(429);
  });

  it("answers a well-formed call as before", async () => {
    const answer = await rawGrpcCall(
      t.grpcUrl,
      "/grpc.EventsDB/GetEventByID",
      grpcMessage(toBinary(GetEventByIDRequestSchema, create(GetEventByIDRequestSchema, { id: 999n }))),
    );
    expect(answer.grpcStatus).toBe(String(grpc.status.NOT_FOUND));
  });
});
