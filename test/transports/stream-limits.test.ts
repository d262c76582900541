import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { REVOKED_COMMENT } from "../../src/transports/http/sse.js";
import { CONNECT_KINDS, connectPeer, GrpcJsClient, openConnectStream } from "../support/grpc.js";
import { metric, scrapeMetrics } from "../support/metrics.js";
import { serversPerTest, type TestServer } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-stream-limits-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const READER = "reader-token-0123456789";
const OTHER = "other-token-0123456789";

interface TokenSpec {
  readonly name: string;
  readonly token: string;
  readonly expires?: Date;
}

/** Writes an auth file with these tokens (read and write everything). */
function writeTokens(file: string, tokens: readonly TokenSpec[]): void {
  const lines = tokens.flatMap((t) => [
    `  - name: ${t.name}`,
    `    sha256: ${tokenDigest(t.token).toString("hex")}`,
    `    read: ["*"]`,
    `    write: ["*"]`,
    ...(t.expires === undefined ? [] : [`    expires: ${t.expires.toISOString()}`]),
  ]);
  fs.writeFileSync(file, lines.length === 0 ? "tokens: []\n" : `tokens:\n${lines.join("\n")}\n`);
}

let files = 0;
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** The status a connect-node stream ended with ("ok" when it ended without an error). */
async function endCode(stream: { ended: Promise<void> }): Promise<Code | "ok"> {
  return stream.ended.then(
    () => "ok" as const,
    (error: unknown) => ConnectError.from(error).code,
  );
}

describe("streams and their credentials (SQLite: no storage involved)", () => {
  const { start, onCleanup } = serversPerTest(() => `sqlite:${path.join(dir, `events-${files}.db`)}`);

  const withTokens = async (tokens: readonly TokenSpec[], flags: Record<string, string> = {}) => {
    const file = path.join(dir, `tokens-${files++}.yaml`);
    writeTokens(file, tokens);
    const t = await start({ "auth-file": file, ...flags });
    return { t, file };
  };

  /** One stream of every kind with `token`: SSE, Connect/gRPC-Web/gRPC (connect-node) and grpc-js. */
  const openAll = (t: TestServer, token: string) => {
    const sse = openStream(`${t.url}/events/stream?subject=s`, bearer(token));
    const connect = CONNECT_KINDS.map((kind) => {
      const peer = connectPeer(kind, t);
      onCleanup(peer.close);
      const stream = openConnectStream((signal) =>
        peer.client.streamEventsFromSubject({ subject: "s" }, { signal, headers: bearer(token) }),
      );
      onCleanup(stream.close);
      return stream;
    });
    const grpcJs = new GrpcJsClient(t.server.grpcPort, true);
    onCleanup(() => grpcJs.close());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    const grpcStream = grpcJs.stream({ subject: "s" }, metadata);
    return { sse, connect, grpcStream };
  };
  const gauge = (t: TestServer) => metric(t.url, "app_active_event_streams");

  /** Every stream ends as revoked: SSE with its last comment, the others UNAUTHENTICATED. */
  const expectRevoked = async (streams: ReturnType<typeof openAll>) => {
    const sse = await streams.sse;
    await expect(sse.ended).resolves.toBeUndefined();
    expect(sse.parser.comments.at(-1)).toBe(REVOKED_COMMENT);
    for (const stream of streams.connect) expect(await endCode(stream)).toBe(Code.Unauthenticated);
    const status = await streams.grpcStream.ended;
    expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(status.details).toContain("no longer valid");
  };

  // Regression (issue 10, item 20): after the token was removed (SIGHUP) or expired, its open
  // streams went on delivering new events.
  it("ends every open stream of a token removed from the auth file when the tokens are reloaded", async () => {
    const { t, file } = await withTokens([
      { name: "reader", token: READER },
      { name: "other", token: OTHER },
    ]);
    const revoked = openAll(t, READER);
    const kept = openAll(t, OTHER);
    onCleanup(
      () => void revoked.sse.then((s) => s.close()),
      () => void kept.sse.then((s) => s.close()),
    );
    await waitUntil(async () => (await gauge(t)) === 12, "12 open streams");
    writeTokens(file, [{ name: "other", token: OTHER }]);
    t.server.reload();
    await expectRevoked(revoked);
    await waitUntil(async () => (await gauge(t)) === 6, "the other token's 6 streams only");
    // The other token's streams go on: a new event reaches them.
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(OTHER) },
      body: JSON.stringify({ source: "s", type: "t", subject: "s" }),
    });
    const { id } = (await res.json()) as { id: number };
    const sse = await kept.sse;
    await waitUntil(
      () =>
        sse.parser.ids().includes(id) &&
        kept.connect.every((s) => s.ids().includes(id)) &&
        kept.grpcStream.ids().includes(id),
      "the event on the kept streams",
    );
    // Reconnecting with the removed token is refused.
    expect((await fetch(`${t.url}/events/stream?subject=s`, { headers: bearer(READER) })).status).toBe(401);
  });

  it("ends the streams of a token that expires while they are open (checked about every second)", async () => {
    const { t } = await withTokens([{ name: "reader", token: READER, expires: new Date(Date.now() + 2500) }]);
    const streams = openAll(t, READER);
    onCleanup(() => void streams.sse.then((s) => s.close()));
    await waitUntil(async () => (await gauge(t)) === 6, "6 open streams");
    await expectRevoked(streams);
    expect(await gauge(t)).toBe(0);
  });

  it("ends an SSE stream opened with a session cookie when its token is removed", async () => {
    const { t, file } = await withTokens([{ name: "reader", token: READER }]);
    const signIn = await fetch(`${t.url}/auth/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: READER }),
    });
    const cookie = (signIn.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const stream = await openStream(`${t.url}/events/stream?subject=s`, { cookie });
    onCleanup(stream.close);
    await waitUntil(async () => (await gauge(t)) === 1, "the stream");
    writeTokens(file, []);
    t.server.reload();
    await expect(stream.ended).resolves.toBeUndefined();
    expect(stream.parser.comments.at(-1)).toBe(REVOKED_COMMENT);
  });
});

describe("--max-streams-per-client", () => {
  const { start, onCleanup } = serversPerTest(() => `sqlite:${path.join(dir, `limits-${files++}.db`)}`);

  // Regression (issue 10, item 8): one client could take every stream slot (--max-total-clients).
  it("refuses a token's streams beyond the limit with 429 / RESOURCE_EXHAUSTED before anything is sent; other tokens still stream", async () => {
    const file = path.join(dir, `tokens-${files++}.yaml`);
    writeTokens(file, [
      { name: "reader", token: READER },
      { name: "other", token: OTHER },
    ]);
    const t = await start({ "auth-file": file, "max-streams-per-client": "2" });
    const first = await openStream(`${t.url}/events/stream?subject=a`, bearer(READER));
    const second = await openStream(`${t.url}/events/stream?subject=b`, bearer(READER));
    onCleanup(first.close, second.close);
    const refused = await fetch(`${t.url}/events/stream?subject=c`, { headers: bearer(READER) });
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).not.toBeNull();
    expect(refused.headers.get("content-type")).toContain("application/json");
    expect(await refused.json()).toMatchObject({ error: { code: "too_many_requests" } });
    expect(
      (await fetch(`${t.url}/events/stream?subject=c`, { method: "HEAD", headers: bearer(READER) })).status,
    ).toBe(429);

    for (const kind of CONNECT_KINDS) {
      const peer = connectPeer(kind, t);
      onCleanup(peer.close);
      const stream = openConnectStream((signal) =>
        peer.client.streamEventsFromSubject({ subject: "c" }, { signal, headers: bearer(READER) }),
      );
      onCleanup(stream.close);
      expect(await endCode(stream), kind).toBe(Code.ResourceExhausted);
      expect(stream.replies).toEqual([]);
    }
    const grpcJs = new GrpcJsClient(t.server.grpcPort);
    onCleanup(() => grpcJs.close());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${READER}`);
    const status = await grpcJs.stream({ subject: "c" }, metadata).ended;
    expect(status.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(status.details).toContain("--max-streams-per-client");

    // Another token is another client.
    const other = await openStream(`${t.url}/events/stream?subject=c`, bearer(OTHER));
    onCleanup(other.close);
    expect(other.response.status).toBe(200);
    const metrics = await scrapeMetrics(t.url, { headers: bearer(READER) });
    expect(metrics.value("eventsdb_stream_refusals_total", { limit: "max_streams_per_client" })).toBe(7);
    // A closed stream frees its slot.
    first.close();
    await waitUntil(
      async () =>
        (await fetch(`${t.url}/events/stream?subject=c`, { method: "HEAD", headers: bearer(READER) }))
          .status === 200,
      "the slot to be freed",
    );
  });

  it("counts anonymous callers of an open server by address", async () => {
    const t = await start({ "max-streams-per-client": "1" });
    const first = await openStream(`${t.url}/events/stream?subject=a`);
    onCleanup(first.close);
    expect((await fetch(`${t.url}/events/stream?subject=b`)).status).toBe(429);
  });
});

describe("HEAD /events/stream", () => {
  const { start } = serversPerTest(() => `sqlite:${path.join(dir, `head-${files++}.db`)}`);

  // Regression (issue 10, item 13): HEAD never answered and counted as an open stream.
  it("answers at once with the headers a GET gets, opens no stream, and makes the same checks", async () => {
    const file = path.join(dir, `tokens-${files++}.yaml`);
    writeTokens(file, [{ name: "reader", token: READER }]);
    const t = await start({ "auth-file": file });
    const head = (query: string, headers: Record<string, string> = bearer(READER)) =>
      fetch(`${t.url}/events/stream?${query}`, {
        method: "HEAD",
        headers,
        signal: AbortSignal.timeout(5000),
      });
    const ok = await head("subject=a");
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(ok.headers.get("cache-control")).toBe("no-cache");
    expect(ok.headers.get("x-accel-buffering")).toBe("no");
    expect(ok.headers.get("content-length")).toBeNull();
    expect(await ok.text()).toBe("");
    expect(await metric(t.url, "app_active_event_streams")).toBe(0);
    expect((await head("subject=a&from_id=-1")).status).toBe(400);
    expect((await head("subject=a", {})).status).toBe(401);
    // The connection is still usable afterwards (nothing left half-written on it).
    for (let i = 0; i < 3; i++) expect((await head("subject=a")).status).toBe(200);
  });
});
