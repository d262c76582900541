import { describe, expect, it } from "vitest";
import { EventsDbClient, EventsDbError, type ReconnectInfo } from "../../../src/client/lib/index.js";

// The library's own logic against a scripted fetch: what it sends when it reconnects, what it
// delivers, what it retries and what it gives up on. The real server is in test/client-library.test.ts.

interface Call {
  readonly url: URL;
  readonly headers: Record<string, string>;
  readonly method: string;
  readonly body: string | undefined;
}

type Answer = (call: Call, signal: AbortSignal) => Response | Promise<Response>;

/** A fetch that answers the n-th call with the n-th answer (the last one repeats) and records the calls. */
function scripted(answers: Answer[]) {
  const calls: Call[] = [];
  const fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const call: Call = {
      url: new URL(String(input)),
      headers: { ...(init?.headers as Record<string, string>) },
      method: init?.method ?? "GET",
      body: init?.body as string | undefined,
    };
    calls.push(call);
    const answer = answers[Math.min(calls.length - 1, answers.length - 1)] as Answer;
    return answer(call, init?.signal as AbortSignal);
  }) as typeof globalThis.fetch;
  return { fetch, calls };
}

/** An SSE response with these frames, then the end of the stream (or never, with `hang`). */
function sse(frames: string[], hang = false): Answer {
  return (_call, signal) => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const frame of frames) controller.enqueue(new TextEncoder().encode(frame));
        if (!hang) controller.close();
        signal.addEventListener("abort", () => controller.error(new Error("aborted")));
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  };
}

function frame(id: number): string {
  return `id: ${id}\ndata: ${JSON.stringify({ id, source: "s", type: "t", subject: "a", time: "x", data: "" })}\n\n`;
}

function error(status: number, code: string, message: string, headers: Record<string, string> = {}): Answer {
  return () =>
    new Response(JSON.stringify({ error: { code, message } }), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });
}

function client(fetch: typeof globalThis.fetch, timeoutMs = 5_000) {
  return new EventsDbClient({ url: "http://eventsdb.test/base", fetch, timeoutMs, token: "t0k" });
}

async function take<T>(iterator: AsyncIterable<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  if (n === 0) return out;
  for await (const item of iterator) {
    out.push(item);
    if (out.length === n) break;
  }
  return out;
}

describe("EventsDbClient.stream: resuming", () => {
  it("reconnects after the stream ends with Last-Event-ID and from_id of the last delivered id; repeats are dropped", async () => {
    const { fetch, calls } = scripted([
      sse(["retry: 2000\n\n", frame(1), frame(2)]),
      sse([frame(2), frame(3)], true),
    ]);
    const reconnects: ReconnectInfo[] = [];
    const stream = client(fetch).stream({
      subject: ["orders", "invoices"],
      recursive: true,
      type: "created",
      fromId: 0,
      reconnectDelayMs: 1,
      onReconnect: (info) => reconnects.push(info),
    });
    expect((await take(stream, 3)).map((m) => m.id)).toEqual([1, 2, 3]);
    expect(calls).toHaveLength(2);
    const [first, second] = calls as [Call, Call];
    expect(first.url.pathname).toBe("/base/events/stream");
    expect(first.url.searchParams.getAll("subject")).toEqual(["orders", "invoices"]);
    expect(first.url.searchParams.get("recursive")).toBe("true");
    expect(first.url.searchParams.get("type")).toBe("created");
    expect(first.headers["last-event-id"]).toBeUndefined();
    expect(first.headers.authorization).toBe("Bearer t0k");
    expect(second.headers["last-event-id"]).toBe("2");
    expect(second.url.searchParams.get("from_id")).toBe("2");
    expect(reconnects).toEqual([
      { reason: "the server ended the stream", delayMs: expect.any(Number), lastId: 2 },
    ]);
  });

  it("retries 503 and 429 after Retry-After, then delivers", async () => {
    const { fetch, calls } = scripted([
      sse([frame(4)]),
      error(503, "unavailable", "the store is down", { "retry-after": "0" }),
      error(429, "resource_exhausted", "too many streams", { "retry-after": "0" }),
      sse([frame(5)], true),
    ]);
    const reasons: string[] = [];
    const stream = client(fetch).stream({
      fromId: 3,
      reconnectDelayMs: 1,
      onReconnect: (i) => reasons.push(i.reason),
    });
    expect((await take(stream, 2)).map((m) => m.id)).toEqual([4, 5]);
    expect(calls.map((c) => c.headers["last-event-id"])).toEqual(["3", "4", "4", "4"]);
    expect(reasons.slice(1)).toEqual([
      "the server refused the stream: the store is down (503 unavailable)",
      "the server refused the stream: too many streams (429 resource_exhausted)",
    ]);
  });

  it("reconnects after a broken connection and after the idle timeout", async () => {
    const broken: Answer = () => {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent) controller.error(new Error("socket hang up"));
          else controller.enqueue(new TextEncoder().encode(frame(1)));
          sent = true;
        },
      });
      return new Response(body);
    };
    const { fetch, calls } = scripted([broken, sse([": heartbeat\n\n"], true), sse([frame(2)], true)]);
    const reasons: string[] = [];
    const stream = client(fetch).stream({
      idleTimeoutMs: 50,
      reconnectDelayMs: 1,
      onReconnect: (i) => reasons.push(i.reason),
    });
    expect((await take(stream, 2)).map((m) => m.id)).toEqual([1, 2]);
    expect(calls.map((c) => c.headers["last-event-id"])).toEqual([undefined, "1", "1"]);
    expect(reasons).toEqual(["the stream broke (socket hang up)", "nothing received for 0.05 s"]);
  });

  it("gives up on a refusal with the server's error, and when the first connection fails", async () => {
    const refused = client(scripted([error(401, "unauthenticated", "a token is required")]).fetch).stream();
    const failure = await take(refused, 1).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(EventsDbError);
    expect(failure).toMatchObject({
      status: 401,
      code: "unauthenticated",
      error: { code: "unauthenticated", message: "a token is required" },
      message: "a token is required (401 unauthenticated)",
    });
    const down = client(
      scripted([
        () => {
          throw new TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } });
        },
      ]).fetch,
    ).stream();
    await expect(take(down, 1)).rejects.toMatchObject({
      status: 0,
      code: "unavailable",
      message: "cannot reach http://eventsdb.test/base: ECONNREFUSED",
    });
  });

  it("ends without an error when its signal aborts, also while waiting to reconnect", async () => {
    const controller = new AbortController();
    const { fetch } = scripted([sse([frame(1)])]);
    const stream = client(fetch).stream({
      signal: controller.signal,
      reconnectDelayMs: 60_000,
      onReconnect: () => controller.abort(),
    });
    const ids: number[] = [];
    for await (const message of stream) ids.push(message.id);
    expect(ids).toEqual([1]);
  });
});

describe("EventsDbClient calls: retries, timeouts, errors", () => {
  it("retries a CloudEvent append after 503 and a network failure: (source, id) makes it safe", async () => {
    const { fetch, calls } = scripted([
      error(503, "unavailable", "busy", { "retry-after": "0" }),
      () => {
        throw new TypeError("fetch failed", { cause: { code: "ECONNRESET" } });
      },
      () => Response.json({ id: 9 }),
    ]);
    const id = await client(fetch).appendCloudEvent({
      id: "e-1",
      source: "s",
      type: "t",
      subject: "a",
      data: { n: 1 },
    });
    expect(id).toBe(9);
    expect(calls).toHaveLength(3);
    expect(new Set(calls.map((c) => c.body))).toEqual(
      new Set(['{"specversion":"1.0","id":"e-1","source":"s","type":"t","subject":"a","data":{"n":1}}']),
    );
    expect(calls[0]?.headers["content-type"]).toBe("application/cloudevents+json");
  });

  it("does not retry a simple append (no id to dedupe on) nor a 400", async () => {
    const busy = scripted([error(503, "unavailable", "busy"), () => Response.json({ id: 1 })]);
    await expect(
      client(busy.fetch).append({ source: "s", type: "t", subject: "a", data: "hi" }),
    ).rejects.toMatchObject({
      status: 503,
    });
    expect(busy.calls).toHaveLength(1);
    expect(JSON.parse(busy.calls[0]?.body ?? "")).toEqual({
      source: "s",
      type: "t",
      subject: "a",
      data: "aGk=",
    });
    const bad = scripted([error(400, "invalid_argument", "event 1: type is required")]);
    await expect(
      client(bad.fetch).appendBatch([{ id: "1", source: "s", type: "", subject: "a" }]),
    ).rejects.toMatchObject({
      code: "invalid_argument",
    });
    expect(bad.calls).toHaveLength(1);
  });

  it("times out a call that gets no answer", async () => {
    const { fetch } = scripted([
      (_call, signal) =>
        new Promise<Response>((_resolve, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason)),
        ),
    ]);
    await expect(client(fetch, 50).get(1)).rejects.toMatchObject({
      status: 0,
      code: "deadline_exceeded",
      message: "no answer from http://eventsdb.test/base within 0.05 s",
    });
  });

  it("names a body that is not the server's error JSON by status and text", async () => {
    const { fetch } = scripted([() => new Response("<html>\nBad gateway\n</html>", { status: 502 })]);
    await expect(client(fetch).subjects()).rejects.toMatchObject({
      status: 502,
      code: "unknown",
      error: undefined,
      message: "the server answered 502: <html> Bad gateway </html>",
    });
  });

  it("refuses an answer or a stream event beyond maxResponseBytes, without retrying the stream", async () => {
    const big = scripted([() => Response.json(["x".repeat(100)])]);
    const small = new EventsDbClient({ url: "http://eventsdb.test", fetch: big.fetch, maxResponseBytes: 50 });
    await expect(small.subjects()).rejects.toMatchObject({ code: "resource_exhausted", status: 200 });
    const huge = scripted([sse([frame(1), `data: ${"x".repeat(200)}`], true)]);
    const stream = new EventsDbClient({
      url: "http://eventsdb.test",
      fetch: huge.fetch,
      maxResponseBytes: 150,
    }).stream();
    const ids: number[] = [];
    const failure = await (async () => {
      for await (const message of stream) ids.push(message.id);
    })().catch((e: unknown) => e);
    expect(ids).toEqual([1]);
    expect(failure).toMatchObject({ code: "resource_exhausted" });
    expect(huge.calls).toHaveLength(1);
  });
});
