import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issue, makeCa } from "../support/certs.js";
import { DIALECTS } from "../support/dialects.js";
import { GrpcJsClient } from "../support/grpc.js";
import { within } from "../support/process.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { SseParser, waitUntil } from "../support/sse.js";

/** Small bounds so each case takes a second or two; the defaults are 20 / 120 / 65 s and 100. */
const FLAGS = {
  "header-timeout": "1",
  "request-timeout": "2",
  "idle-timeout": "2",
  "max-concurrent-streams": "3",
};
/** Long enough for any of the timeouts above plus node's check interval; never reached when they work. */
const CUT_WITHIN_MS = 8_000;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const GOAWAY = 0x7;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One HTTP/2 frame (RFC 9113 §4.1). */
function frame(type: number, flags: number, streamId: number, payload = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK string literal, not Huffman-coded (RFC 7541 §5.2); short strings only. */
function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  if (bytes.length > 126) throw new Error("too long for this test's encoder");
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/** A HEADERS frame for GET `path` (END_STREAM | END_HEADERS): static-table names, literal values. */
function getRequest(streamId: number, requestPath: string, scheme: "http" | "https"): Buffer {
  const block = Buffer.concat([
    Buffer.from([0x82, scheme === "http" ? 0x86 : 0x87]), // :method GET, :scheme (RFC 7541 App. A)
    Buffer.from([0x04]), // :path, literal without indexing (§6.2.2)
    hpackString(requestPath),
    Buffer.from([0x01]), // :authority
    hpackString("localhost"),
  ]);
  return frame(HEADERS, 0x5, streamId, block);
}

/**
 * A raw HTTP/2 client that sends what it is told without waiting for the server's SETTINGS (as a
 * hostile peer would) and records the frames it gets back.
 */
class RawH2 {
  readonly frames: { type: number; streamId: number; code?: number }[] = [];
  readonly closed: Promise<void>;
  #buffer = Buffer.alloc(0);

  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => this.#read(chunk));
    socket.on("error", () => {});
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
  }

  /** Stream ids that got response HEADERS / RST_STREAM. */
  answered(type: number): number[] {
    return this.frames.filter((f) => f.type === type).map((f) => f.streamId);
  }

  #read(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    while (this.#buffer.length >= 9) {
      const length = this.#buffer.readUIntBE(0, 3);
      if (this.#buffer.length < 9 + length) return;
      const type = this.#buffer[3] as number;
      const flags = this.#buffer[4] as number;
      const streamId = this.#buffer.readUInt32BE(5) & 0x7fffffff;
      const payload = this.#buffer.subarray(9, 9 + length);
      this.#buffer = this.#buffer.subarray(9 + length);
      const code = type === RST_STREAM ? payload.readUInt32BE(0) : undefined;
      this.frames.push({ type, streamId, ...(code === undefined ? {} : { code }) });
      if (type === SETTINGS && (flags & 0x1) === 0) this.socket.write(frame(SETTINGS, 0x1, 0));
    }
  }
}

/** Resolves when the server closes the socket, failing the test if it does not within CUT_WITHIN_MS. */
function cut(socket: net.Socket, what: string): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once("close", () => resolve());
  });
  socket.on("error", () => {});
  socket.resume(); // read whatever the server answers (408, GOAWAY) so its close is seen
  return within(closed, CUT_WITHIN_MS, `the server to close ${what}`);
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => resolve(socket));
    socket.once("error", reject);
  });
}

function publish(t: TestServer, subject: string): Promise<number> {
  return fetch(`${t.url}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ source: "conn", type: "t", subject }),
  }).then(async (res) => ((await res.json()) as { id: number }).id);
}

describe.each(["rest", "grpc"] as const)("cleartext connections on the %s port", (which) => {
  let t: TestServer;
  let port: number;
  beforeAll(async () => {
    t = await startTestServer(await (DIALECTS[0] as (typeof DIALECTS)[number]).url(), FLAGS);
    port = which === "rest" ? t.server.restPort : t.server.grpcPort;
  });
  afterAll(() => t.close());

  it("closes a socket that sends nothing", async () => {
    await cut(await connect(port), "a silent socket");
  });

  it("closes a socket that sends part of the HTTP/2 preface and stops", async () => {
    const socket = await connect(port);
    socket.write(PREFACE.subarray(0, 16));
    await cut(socket, "a partial preface");
  });

  it("closes a slowloris: one header line at a time, never the end of the headers", async () => {
    const socket = await connect(port);
    socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    const drip = setInterval(() => socket.writable && socket.write("X-Slow: 1\r\n"), 300);
    try {
      await cut(socket, "a slowloris");
    } finally {
      clearInterval(drip);
    }
  });

  it("closes a slow HTTP/1.1 body once the request timeout is up", async () => {
    const socket = await connect(port);
    socket.write(
      "POST /events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
    );
    const drip = setInterval(() => socket.writable && socket.write(" "), 200);
    try {
      await cut(socket, "a slow body");
    } finally {
      clearInterval(drip);
    }
  });

  it.each([
    ["a REST POST", { ":method": "POST", ":path": "/events", "content-type": "application/json" }],
    [
      "a gRPC append (the unary short path)",
      { ":method": "POST", ":path": "/grpc.EventsDB/CreateEvent", "content-type": "application/grpc" },
    ],
  ])(
    "cancels an HTTP/2 stream whose body trickles in past the request timeout: %s",
    async (_what, headers) => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      session.on("error", () => {});
      const req = session.request(headers);
      req.on("error", () => {});
      req.resume();
      const closed = new Promise<number>((resolve) => req.once("close", () => resolve(req.rstCode)));
      req.write(headers["content-type"] === "application/grpc" ? Buffer.from([0, 0, 0, 1, 0]) : "{");
      const drip = setInterval(
        () =>
          !req.destroyed && req.write(headers["content-type"] === "application/grpc" ? Buffer.alloc(1) : " "),
        200,
      );
      try {
        expect(await within(closed, CUT_WITHIN_MS, "the server to cancel the slow stream")).toBe(
          http2.constants.NGHTTP2_CANCEL,
        );
      } finally {
        clearInterval(drip);
        session.destroy();
      }
    },
  );

  it("closes an HTTP/2 connection that sends the preface and no stream", async () => {
    const socket = await connect(port);
    const h2 = new RawH2(socket);
    socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0)]));
    await cut(socket, "a preface without frames");
    expect(h2.answered(GOAWAY)).toContain(0);
  });

  it("closes idle HTTP/1.1 keep-alive and HTTP/2 connections, not the ones with a quiet open stream", async () => {
    // HTTP/1.1: one request, then nothing.
    const agent = new http.Agent({ keepAlive: true });
    let h1Socket: net.Socket | undefined;
    await new Promise<void>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port, path: "/healthz", agent }, (res) => {
          h1Socket = res.socket;
          res.resume();
          res.on("end", resolve);
        })
        .on("error", reject);
    });
    const h1Closed = cut(h1Socket as net.Socket, "an idle keep-alive connection");
    // HTTP/2: one request, then nothing; the session gets GOAWAY.
    const idle = http2.connect(`http://127.0.0.1:${port}`);
    idle.on("error", () => {});
    const goaway = new Promise<void>((resolve) => idle.once("goaway", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      const req = idle.request({ ":path": "/healthz" });
      req.on("error", reject);
      req.resume();
      req.on("end", resolve);
    });
    // Quiet streams: SSE over HTTP/1.1 and HTTP/2 (heartbeats every 15 s) and a gRPC stream.
    const sseH1 = new SseParser();
    const h1Stream = http.get({ host: "127.0.0.1", port, path: "/events/stream?subject=quiet" }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => sseH1.push(chunk));
    });
    h1Stream.on("error", () => {});
    const busy = http2.connect(`http://127.0.0.1:${port}`);
    busy.on("error", () => {});
    let busyGoaway = false;
    busy.on("goaway", () => {
      busyGoaway = true;
    });
    const sseH2 = new SseParser();
    const h2Stream = busy.request({ ":path": "/events/stream?subject=quiet" });
    h2Stream.setEncoding("utf8");
    h2Stream.on("data", (chunk: string) => sseH2.push(chunk));
    h2Stream.on("error", () => {});
    const grpc = new GrpcJsClient(port, true);
    const grpcStream = grpc.stream({ subject: "quiet" });
    try {
      await within(h1Closed, CUT_WITHIN_MS, "the keep-alive connection to close");
      await within(goaway, CUT_WITHIN_MS, "GOAWAY on the idle HTTP/2 session");
      await waitUntil(() => sseH1.retry !== undefined && sseH2.retry !== undefined, "both SSE streams open");
      // Past the header and idle timeouts, with nothing sent on the streams...
      await sleep(3_500);
      // ...they are still open and deliver.
      const id = await publish(t, "quiet");
      await waitUntil(
        () => sseH1.ids().includes(id) && sseH2.ids().includes(id) && grpcStream.ids().includes(id),
        "the event on every quiet stream",
      );
      expect(busyGoaway).toBe(false);
      expect(grpcStream.error).toBeUndefined();
    } finally {
      agent.destroy();
      idle.destroy();
      h1Stream.destroy();
      h2Stream.destroy();
      busy.destroy();
      grpc.close();
    }
  });

  it("refuses streams beyond --max-concurrent-streams on one HTTP/2 connection, not on another", async () => {
    const socket = await connect(port);
    const greedy = new RawH2(socket);
    const ids = [1, 3, 5, 7, 9];
    socket.write(
      Buffer.concat([
        PREFACE,
        frame(SETTINGS, 0, 0),
        ...ids.map((id) => getRequest(id, "/events/stream?subject=greedy", "http")),
      ]),
    );
    const other = http2.connect(`http://127.0.0.1:${port}`);
    other.on("error", () => {});
    try {
      await waitUntil(
        () => greedy.answered(HEADERS).length + greedy.answered(RST_STREAM).length === ids.length,
        "an answer to every stream",
      );
      expect(greedy.answered(HEADERS)).toEqual([1, 3, 5]);
      expect(greedy.answered(RST_STREAM)).toEqual([7, 9]);
      // Another connection still opens a stream.
      const status = await new Promise<number>((resolve, reject) => {
        const req = other.request({ ":path": "/events/stream?subject=greedy" });
        req.on("response", (headers) => resolve(Number(headers[":status"])));
        req.on("error", reject);
      });
      expect(status).toBe(200);
    } finally {
      socket.destroy();
      other.destroy();
    }
  });
});

describe("TLS connections", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-conn-tls-"));
  const ca = makeCa(dir);
  const server = issue(dir, ca, "server", 11);
  const caPem = fs.readFileSync(ca.caCert);
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(await (DIALECTS[0] as (typeof DIALECTS)[number]).url(), {
      ...FLAGS,
      "tls-cert-file": server.cert,
      "tls-key-file": server.key,
    });
  });
  afterAll(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const secure = (alpn: string): Promise<tls.TLSSocket> =>
    new Promise((resolve, reject) => {
      const socket = tls.connect(
        {
          port: t.server.restPort,
          host: "127.0.0.1",
          servername: "localhost",
          ca: caPem,
          ALPNProtocols: [alpn],
        },
        () => resolve(socket),
      );
      socket.once("error", reject);
    });

  it("closes a socket that never starts the TLS handshake", async () => {
    await cut(await connect(t.server.restPort), "a silent socket before the handshake");
  });

  it("closes a slowloris over TLS (HTTP/1.1)", async () => {
    const socket = await secure("http/1.1");
    socket.write("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    const drip = setInterval(() => socket.writable && socket.write("X-Slow: 1\r\n"), 300);
    try {
      await cut(socket, "a slowloris over TLS");
    } finally {
      clearInterval(drip);
    }
  });

  it("closes an HTTP/2 connection over TLS that opens no stream", async () => {
    const socket = await secure("h2");
    socket.write(Buffer.concat([PREFACE, frame(SETTINGS, 0, 0)]));
    await cut(socket, "an h2 connection without streams");
  });

  it("refuses streams beyond --max-concurrent-streams over TLS", async () => {
    const socket = await secure("h2");
    const greedy = new RawH2(socket);
    const ids = [1, 3, 5, 7];
    socket.write(
      Buffer.concat([
        PREFACE,
        frame(SETTINGS, 0, 0),
        ...ids.map((id) => getRequest(id, "/events/stream?subject=greedy", "https")),
      ]),
    );
    try {
      await waitUntil(
        () => greedy.answered(HEADERS).length + greedy.answered(RST_STREAM).length === ids.length,
        "an answer to every stream",
      );
      expect(greedy.answered(HEADERS)).toEqual([1, 3, 5]);
      expect(greedy.answered(RST_STREAM)).toEqual([7]);
    } finally {
      socket.destroy();
    }
  });
});
