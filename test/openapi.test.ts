import { generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { type RunningServer, startServer } from "../src/server.js";
import { OpenApiContract, parseMediaType } from "./support/openapi.js";

/**
 * The real server (SQLite in a fresh temp dir, real sockets, real fetch) against openapi.yaml:
 * every response is checked by `contract.expectMatches` (status documented, Content-Type
 * documented, headers and body valid against the schema), and the last tests assert that every
 * documented operation and every documented status that a client can provoke was exercised.
 */

const MAX_BODY_BYTES = 65_536;
const MAX_EVENT_BYTES = 1024;
const MAX_BATCH_EVENTS = 10;
/** The smallest write queue the server accepts: a batch with more data never fits it (a sure 413). */
const WRITE_QUEUE_BYTES = MAX_EVENT_BYTES;

/** Small, so the 429 of POST /subscriptions is cheap to provoke. */
const MAX_SUBSCRIPTIONS = 3;

const contract = new OpenApiContract();
/** A chain hash and an Ed25519 signature, lowercase hex. */
const HASH = /^[0-9a-f]{64}$/;
const SIGNATURE = /^[0-9a-f]{128}$/;

let server: RunningServer;
let baseUrl: string;
let dir: string;
let publicKeyPem: string;

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  /** Parsed JSON for JSON media types, otherwise the text. */
  readonly body: unknown;
}

interface CallOptions {
  /** Values for `{name}` in the path template. */
  readonly params?: Record<string, string>;
  readonly query?: Record<string, string | readonly string[] | undefined>;
  readonly headers?: Record<string, string>;
  readonly body?: string | Uint8Array<ArrayBuffer>;
  /** "manual" to see a redirect itself. */
  readonly redirect?: "manual" | "follow";
}

function isJsonMediaType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const { type } = parseMediaType(contentType);
  return type === "application/json" || type.endsWith("+json");
}

/** One real HTTP request; the response must match openapi.yaml for (template, method). */
async function call(method: string, template: string, options: CallOptions = {}): Promise<Reply> {
  const path = template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = options.params?.[name];
    if (value === undefined) throw new Error(`no value for {${name}}`);
    return encodeURIComponent(value);
  });
  const url = new URL(path, baseUrl);
  for (const [name, value] of Object.entries(options.query ?? {})) {
    for (const item of typeof value === "string" ? [value] : (value ?? []))
      url.searchParams.append(name, item);
  }
  const response = await fetch(url, {
    method,
    ...(options.headers === undefined ? {} : { headers: options.headers }),
    ...(options.body === undefined ? {} : { body: options.body }),
    ...(options.redirect === undefined ? {} : { redirect: options.redirect }),
  });
  const text = await response.text();
  const contentType = response.headers.get("content-type");
  const body: unknown = isJsonMediaType(contentType) && text !== "" ? JSON.parse(text) : text;
  contract.expectMatches(template, method, response, body);
  return { status: response.status, headers: response.headers, body };
}

function json(value: unknown): string {
  return JSON.stringify(value);
}

function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

/** The request body must be valid for its documented media type (the examples are the docs). */
function expectDocumentedRequest(mediaType: string, body: unknown): void {
  expect(contract.requestBodyErrors("/events", "post", mediaType, body)).toBeUndefined();
}

function errorCode(reply: Reply): unknown {
  return (reply.body as { error?: { code?: unknown } }).error?.code;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "eventsdb-openapi-"));
  // A signing server: every event carries a signature, and the key is served.
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  writeFileSync(join(dir, "signing.pem"), privateKey.export({ type: "pkcs8", format: "pem" }));
  publicKeyPem = publicKey.export({ type: "spki", format: "pem" }).toString();
  const config = loadConfig(
    {},
    {
      "database-url": `sqlite:${join(dir, "events.db")}`,
      "rest-port": "0",
      "grpc-port": "0",
      host: "127.0.0.1",
      "max-body-bytes": String(MAX_BODY_BYTES),
      "max-event-bytes": String(MAX_EVENT_BYTES),
      "max-batch-events": String(MAX_BATCH_EVENTS),
      "write-queue-bytes": String(WRITE_QUEUE_BYTES),
      "max-total-clients": "1",
      "signing-key-file": join(dir, "signing.pem"),
      "max-subscriptions": String(MAX_SUBSCRIPTIONS),
      // The API alone: this process delivers none (delivery is tested in test/subscriptions/).
      "subscriptions-per-process": "0",
    },
  );
  server = await startServer(config, { logger: false, defaultMetrics: false });
  baseUrl = `http://127.0.0.1:${server.restPort}`;
});

afterAll(async () => {
  await server?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe("expectMatches (the checker itself)", () => {
  const checker = new OpenApiContract();
  const jsonResponse = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json; charset=utf-8", ...headers },
    });

  it("accepts a documented response", () => {
    expect(() =>
      checker.expectMatches("/healthz", "GET", jsonResponse(200, { status: "ok" }), { status: "ok" }),
    ).not.toThrow();
  });

  it("rejects an undocumented status, and does not fall back to `default`", () => {
    expect(() => checker.expectMatches("/healthz", "GET", jsonResponse(418, {}), {})).toThrow(
      /status 418 is not documented/,
    );
    const internal = { error: { code: "internal", message: "internal error" } };
    expect(() => checker.expectMatches("/events", "POST", jsonResponse(500, internal), internal)).toThrow(
      /status 500 is not documented/,
    );
  });

  it("rejects an undocumented Content-Type", () => {
    const response = new Response("ok", { status: 200, headers: { "content-type": "text/html" } });
    expect(() => checker.expectMatches("/healthz", "GET", response, "ok")).toThrow(
      /Content-Type text\/html is not documented/,
    );
    const metrics = new Response("x 1", { status: 200, headers: { "content-type": "text/plain" } });
    expect(() => checker.expectMatches("/metrics", "GET", metrics, "x 1")).toThrow(/not documented/);
  });

  it("rejects a body that does not match the schema", () => {
    expect(() =>
      checker.expectMatches("/healthz", "GET", jsonResponse(200, { status: "fine" }), { status: "fine" }),
    ).toThrow(/does not match the schema/);
    const page = { events: [{ id: 0 }], has_more: false, next_from_id: 0 };
    expect(() => checker.expectMatches("/events", "GET", jsonResponse(200, page), page)).toThrow(
      /does not match the schema/,
    );
  });

  it("rejects a documented header with an invalid value", () => {
    const page = { events: [], has_more: false, next_from_id: 0 };
    const response = jsonResponse(200, page, { "x-has-more": "maybe" });
    expect(() => checker.expectMatches("/events", "GET", response, page)).toThrow(/header X-Has-More/);
  });

  it("rejects an undocumented path or method", () => {
    expect(() => checker.expectMatches("/nope", "GET", jsonResponse(200, {}), {})).toThrow(/not documented/);
    expect(() => checker.expectMatches("/healthz", "POST", jsonResponse(200, {}), {})).toThrow(
      /not documented/,
    );
  });

  it("records nothing for a response that does not match", () => {
    expect(checker.coveredOperations).toEqual(new Set(["GET /healthz"]));
    expect(checker.coveredResponses).toEqual(new Set(["GET /healthz 200"]));
  });
});

describe("REST API against openapi.yaml", () => {
  let singleId = 0;
  let batchIds: number[] = [];
  let cloudEventId = 0;
  let binaryId = 0;

  describe("POST /events", () => {
    it("stores one simple event (application/json) → 200 {id}", async () => {
      const event = { source: "test/openapi", type: "order.created", subject: "orders/1", data: b64("one") };
      expectDocumentedRequest("application/json", event);
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json(event),
      });
      expect(reply.status).toBe(200);
      const { id } = reply.body as { id: number };
      expect(id).toBeGreaterThanOrEqual(1);
      singleId = id;
    });

    it("stores a batch array atomically → 200 {ids} in request order", async () => {
      const batch = [1, 2, 3].map((n) => ({
        source: "test/openapi",
        type: n === 2 ? "order.shipped" : "order.created",
        subject: `orders/${n === 3 ? "2" : "1"}`,
        data: b64(`batch ${n}`),
      }));
      expectDocumentedRequest("application/json", batch);
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json(batch),
      });
      expect(reply.status).toBe(200);
      const { ids } = reply.body as { ids: number[] };
      expect(ids).toHaveLength(batch.length);
      expect(ids[0]).toBeGreaterThan(singleId);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(new Set(ids).size).toBe(ids.length);
      batchIds = ids;
    });

    it("reads text/plain and form-urlencoded (curl -d compatibility) as JSON → 200 {id}", async () => {
      let previous = batchIds.at(-1) ?? 0;
      for (const contentType of ["text/plain", "application/x-www-form-urlencoded"]) {
        const text = json({ source: "test/openapi", type: "note", subject: "notes", data: null });
        expectDocumentedRequest(contentType, text);
        const reply = await call("POST", "/events", { headers: { "content-type": contentType }, body: text });
        expect(reply.status).toBe(200);
        expect((reply.body as { id: number }).id).toBe(previous + 1);
        previous += 1;
      }
    });

    it("stores a structured CloudEvent (application/cloudevents+json) idempotently → 200 {id}", async () => {
      const event = {
        specversion: "1.0",
        id: "ce-1",
        source: "test/openapi/ce",
        type: "invoice.issued",
        subject: "invoices/7",
        time: "2026-01-02T03:04:05.123456789+01:00",
        datacontenttype: "application/json",
        dataschema: "https://example.com/schemas/invoice.json",
        data: { amount: 42 },
        tenant: "acme",
        priority: 3,
      };
      expectDocumentedRequest("application/cloudevents+json", event);
      const send = () =>
        call("POST", "/events", {
          headers: { "content-type": "application/cloudevents+json; charset=utf-8" },
          body: json(event),
        });
      const first = await send();
      expect(first.status).toBe(200);
      cloudEventId = (first.body as { id: number }).id;
      expect(cloudEventId).toBeGreaterThan(batchIds.at(-1) ?? 0);
      // A retry of the same (source, id) returns the stored id and stores nothing.
      const retry = await send();
      expect(retry.body).toEqual({ id: cloudEventId });
    });

    it("stores a CloudEvent batch (application/cloudevents-batch+json) → 200 {ids}", async () => {
      const batch = ["a", "b"].map((suffix) => ({
        specversion: "1.0",
        id: `ce-batch-${suffix}`,
        source: "test/openapi/ce",
        type: "invoice.paid",
        subject: "invoices/8",
        data_base64: b64(`paid ${suffix}`),
      }));
      expectDocumentedRequest("application/cloudevents-batch+json", batch);
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/cloudevents-batch+json" },
        body: json(batch),
      });
      expect(reply.status).toBe(200);
      const { ids } = reply.body as { ids: number[] };
      expect(ids).toEqual([cloudEventId + 1, cloudEventId + 2]);
    });

    it("stores a binary-mode event (ce-* headers, body = data) → 200 {id}", async () => {
      const reply = await call("POST", "/events", {
        headers: {
          "content-type": "text/plain; charset=utf-8",
          "ce-specversion": "1.0",
          "ce-id": "bin-1",
          "ce-source": "test/openapi/binary",
          "ce-type": "log.line",
          "ce-subject": "logs/app",
          "ce-time": "2026-03-04T05:06:07Z",
          "ce-traceparent": "00-abc-def-01",
        },
        body: "hello binary",
      });
      expect(reply.status).toBe(200);
      binaryId = (reply.body as { id: number }).id;
      expect(binaryId).toBe(cloudEventId + 3);
    });

    it("reads a ce-specversion header with Content-Type application/json as binary mode → 200", async () => {
      const reply = await call("POST", "/events", {
        headers: {
          "content-type": "application/json",
          "ce-specversion": "1.0",
          "ce-id": "bin-json-1",
          "ce-source": "test/openapi/binary",
          "ce-type": "metric.sample",
          "ce-subject": "logs/json",
        },
        body: json({ cpu: 0.5 }),
      });
      expect(reply.status).toBe(200);
      const { id } = reply.body as { id: number };
      expect(id).toBe(binaryId + 1);
      const stored = await call("GET", "/events/{id}", {
        params: { id: String(id) },
        headers: { accept: "application/cloudevents+json" },
      });
      expect(stored.body).toMatchObject({
        id: "bin-json-1",
        datacontenttype: "application/json",
        data: { cpu: 0.5 },
      });
    });

    it("reads a JSON batch mixing simple events and CloudEvents → 200 {ids}", async () => {
      const batch = [
        { source: "test/openapi", type: "mixed", subject: "mixed/1" },
        { specversion: "1.0", id: "mixed-2", source: "test/openapi", type: "mixed", subject: "mixed/2" },
      ];
      expectDocumentedRequest("application/json", batch);
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json(batch),
      });
      expect(reply.status).toBe(200);
      expect(reply.body).toEqual({ ids: [binaryId + 2, binaryId + 3] });
      const second = await call("GET", "/events/get", { query: { id: String(binaryId + 3) } });
      expect(second.body).toMatchObject({ subject: "mixed/2", ce_id: "mixed-2", data: "" });
    });

    it("rejects a batch over --max-batch-events → 400", async () => {
      const batch = Array.from({ length: MAX_BATCH_EVENTS + 1 }, (_, i) => ({
        source: "s",
        type: "t",
        subject: `many/${i}`,
      }));
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json(batch),
      });
      expect(reply.status).toBe(400);
      expect((reply.body as { error: { message: string } }).error.message).toContain(
        `at most ${MAX_BATCH_EVENTS} events`,
      );
    });

    it("rejects data that is not valid base64 → 400 invalid_argument", async () => {
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json({ source: "s", type: "t", subject: "bad", data: "not base64!" }),
      });
      expect(reply.status).toBe(400);
      expect(errorCode(reply)).toBe("invalid_argument");
      expect((reply.body as { error: { message: string } }).error.message).toMatch(/base64/);
    });

    it("rejects a batch as a whole when one event is invalid → 400, nothing stored", async () => {
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json([{ source: "s", type: "t", subject: "atomic/1" }, { source: "s" }]),
      });
      expect(reply.status).toBe(400);
      expect((reply.body as { error: { message: string } }).error.message).toMatch(/event 1/);
      const page = await call("GET", "/events", { query: { subject: "atomic/1" } });
      expect((page.body as { events: unknown[] }).events).toEqual([]);
    });

    it("rejects an unsupported content type without ce-* headers → 415", async () => {
      const reply = await call("POST", "/events", {
        headers: { "content-type": "image/png" },
        body: new Uint8Array([0x89, 0x50, 0x4e, 0x47]),
      });
      expect(reply.status).toBe(415);
      expect(errorCode(reply)).toBe("unsupported_media_type");
    });

    it("rejects a body over --max-body-bytes → 413", async () => {
      const big = json({ source: "s", type: "t", subject: "big", pad: "x".repeat(MAX_BODY_BYTES) });
      expect(big.length).toBeGreaterThan(MAX_BODY_BYTES);
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: big,
      });
      expect(reply.status).toBe(413);
      expect(errorCode(reply)).toBe("payload_too_large");
    });

    it("rejects data over --max-event-bytes → 413", async () => {
      const data = Buffer.alloc(MAX_EVENT_BYTES + 1, 7).toString("base64");
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json({ source: "s", type: "t", subject: "big", data }),
      });
      expect(reply.status).toBe(413);
      expect(errorCode(reply)).toBe("payload_too_large");
      expect((reply.body as { error: { message: string } }).error.message).toContain(
        String(MAX_EVENT_BYTES + 1),
      );
    });

    it("answers 413 for a batch with more data than the whole write queue → 413", async () => {
      const data = Buffer.alloc(WRITE_QUEUE_BYTES / 2 + 1, 1).toString("base64");
      const reply = await call("POST", "/events", {
        headers: { "content-type": "application/json" },
        body: json([1, 2].map(() => ({ source: "s", type: "t", subject: "queue", data }))),
      });
      expect(reply.status).toBe(413);
      expect(errorCode(reply)).toBe("payload_too_large");
      expect((reply.body as { error: { message: string } }).error.message).toContain("--write-queue-bytes");
    });

    it("refuses an append whose EventsDB-Preconditions do not hold → 409, a malformed one → 400", async () => {
      // Both store nothing: "oas/pre" stays out of the subjects listed below.
      const event = json({ source: "s", type: "t", subject: "oas/pre", data: null });
      const headers = {
        "content-type": "application/json",
        "eventsdb-preconditions": json([{ type: "isSubjectPristine", payload: { subject: "orders/1" } }]),
      };
      const conflict = await call("POST", "/events", { headers, body: event });
      expect(conflict.status).toBe(409);
      expect(errorCode(conflict)).toBe("failed_precondition");
      const malformed = await call("POST", "/events", {
        headers: { ...headers, "eventsdb-preconditions": "[{" },
        body: event,
      });
      expect(malformed.status).toBe(400);
      expect((malformed.body as { error: { message: string } }).error.message).toContain(
        "EventsDB-Preconditions",
      );
    });
  });

  describe("GET /events/get (compat) and GET /events/{id}", () => {
    it("GET /events/get?id= returns the stored simple event → 200", async () => {
      const reply = await call("GET", "/events/get", { query: { id: String(singleId) } });
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({
        id: singleId,
        source: "test/openapi",
        type: "order.created",
        subject: "orders/1",
        data: b64("one"),
      });
      expect(reply.body).not.toHaveProperty("ce_id");
    });

    it("GET /events/get → 404 for an unknown id, 400 for a bad or missing id", async () => {
      const missing = await call("GET", "/events/get", { query: { id: "999999" } });
      expect(missing.status).toBe(404);
      expect(errorCode(missing)).toBe("not_found");
      for (const query of [{ id: "abc" }, { id: "0" }, {}]) {
        const bad = await call("GET", "/events/get", { query });
        expect(bad.status).toBe(400);
        expect(errorCode(bad)).toBe("invalid_argument");
      }
    });

    it("GET /events/{id} returns the simple format with the CloudEvents attributes → 200", async () => {
      const reply = await call("GET", "/events/{id}", { params: { id: String(cloudEventId) } });
      expect(reply.status).toBe(200);
      expect(reply.body).toEqual({
        id: cloudEventId,
        source: "test/openapi/ce",
        type: "invoice.issued",
        subject: "invoices/7",
        time: "2026-01-02T02:04:05.123456Z",
        data: b64('{"amount":42}'),
        ce_id: "ce-1",
        datacontenttype: "application/json",
        dataschema: "https://example.com/schemas/invoice.json",
        extensions: { priority: 3, tenant: "acme" },
        // The chain fields after what Events DB had; this server signs.
        hash: expect.stringMatching(HASH),
        prevhash: expect.stringMatching(HASH),
        signature: expect.stringMatching(SIGNATURE),
      });
    });

    it("GET /events/{id} with Accept: application/cloudevents+json returns a CloudEvent → 200", async () => {
      const reply = await call("GET", "/events/{id}", {
        params: { id: String(cloudEventId) },
        headers: { accept: "application/cloudevents+json" },
      });
      expect(reply.status).toBe(200);
      expect(parseMediaType(reply.headers.get("content-type") ?? "").type).toBe(
        "application/cloudevents+json",
      );
      expect(reply.body).toEqual({
        specversion: "1.0",
        id: "ce-1",
        source: "test/openapi/ce",
        type: "invoice.issued",
        subject: "invoices/7",
        time: "2026-01-02T02:04:05.123456Z",
        datacontenttype: "application/json",
        dataschema: "https://example.com/schemas/invoice.json",
        data: { amount: 42 },
        priority: 3,
        tenant: "acme",
        eventsdbhash: expect.stringMatching(HASH),
        eventsdbprevhash: expect.stringMatching(HASH),
        eventsdbsignature: expect.stringMatching(SIGNATURE),
      });
    });

    it("GET /events/{id} returns a binary-mode event with its text data and extensions", async () => {
      const reply = await call("GET", "/events/{id}", {
        params: { id: String(binaryId) },
        headers: { accept: "application/cloudevents+json" },
      });
      expect(reply.body).toMatchObject({
        id: "bin-1",
        source: "test/openapi/binary",
        subject: "logs/app",
        time: "2026-03-04T05:06:07Z",
        datacontenttype: "text/plain; charset=utf-8",
        data: "hello binary",
        traceparent: "00-abc-def-01",
      });
    });

    it("GET /events/{id} → 404 for an unknown id, 400 for a malformed one", async () => {
      const missing = await call("GET", "/events/{id}", { params: { id: "999999" } });
      expect(missing.status).toBe(404);
      expect(errorCode(missing)).toBe("not_found");
      const bad = await call("GET", "/events/{id}", { params: { id: "x1" } });
      expect(bad.status).toBe(400);
      expect(errorCode(bad)).toBe("invalid_argument");
    });
  });

  describe("GET /events", () => {
    it("pages with from_id and limit (application/json) → 200", async () => {
      const first = await call("GET", "/events", {
        query: { subject: "orders", recursive: "true", limit: "2" },
      });
      expect(first.status).toBe(200);
      const page1 = first.body as { events: { id: number }[]; has_more: boolean; next_from_id: number };
      expect(page1.events.map((e) => e.id)).toEqual([singleId, batchIds[0]]);
      expect(page1.has_more).toBe(true);
      expect(page1.next_from_id).toBe(batchIds[0]);

      const second = await call("GET", "/events", {
        query: { subject: "orders", recursive: "true", limit: "2", from_id: String(page1.next_from_id) },
      });
      const page2 = second.body as typeof page1;
      expect(page2.events.map((e) => e.id)).toEqual([batchIds[1], batchIds[2]]);
      expect(page2.has_more).toBe(false);
      expect(page2.next_from_id).toBe(batchIds[2]);
    });

    it("filters by exact subject and type", async () => {
      const reply = await call("GET", "/events", { query: { subject: "orders/1", type: "order.created" } });
      const page = reply.body as { events: { id: number; subject: string; type: string }[] };
      expect(page.events.map((e) => e.id)).toEqual([singleId, batchIds[0]]);
      expect(page.events.every((e) => e.subject === "orders/1" && e.type === "order.created")).toBe(true);
    });

    it("returns CloudEvents with X-Has-More / X-Next-From-Id (application/cloudevents-batch+json) → 200", async () => {
      const reply = await call("GET", "/events", {
        query: { subject: "invoices", recursive: "true", limit: "2" },
        headers: { accept: "application/cloudevents-batch+json" },
      });
      expect(reply.status).toBe(200);
      expect(parseMediaType(reply.headers.get("content-type") ?? "").type).toBe(
        "application/cloudevents-batch+json",
      );
      const events = reply.body as { id: string; subject: string }[];
      expect(events.map((e) => e.id)).toEqual(["ce-1", "ce-batch-a"]);
      expect(reply.headers.get("x-has-more")).toBe("true");
      expect(reply.headers.get("x-next-from-id")).toBe(String(cloudEventId + 1));

      const last = await call("GET", "/events", {
        query: { subject: "invoices", recursive: "true", limit: "2", from_id: String(cloudEventId + 1) },
        headers: { accept: "application/cloudevents-batch+json" },
      });
      expect((last.body as { id: string; data?: unknown }[]).map((e) => e.id)).toEqual(["ce-batch-b"]);
      expect(last.body).toMatchObject([{ data_base64: b64("paid b") }]);
      expect(last.headers.get("x-has-more")).toBe("false");
      expect(last.headers.get("x-next-from-id")).toBe(String(cloudEventId + 2));
    });

    it("returns an event without a subject without the member, in both formats → 200", async () => {
      const posted = await call("POST", "/events", {
        headers: { "content-type": "application/cloudevents+json" },
        body: json({ specversion: "0.3", id: "no-subject", source: "s", type: "t", schemaurl: "urn:x:y" }),
      });
      expect(posted.status).toBe(200);
      const id = String((posted.body as { id: number }).id);
      const simple = await call("GET", "/events/{id}", { params: { id } });
      expect(simple.body).not.toHaveProperty("subject");
      const ce = await call("GET", "/events/{id}", {
        params: { id },
        headers: { accept: "application/cloudevents+json" },
      });
      expect(ce.body).toMatchObject({ specversion: "1.0", dataschema: "urn:x:y" });
      expect(ce.body).not.toHaveProperty("subject");
    });

    it("rejects limit=0 and other bad parameters → 400", async () => {
      for (const query of [{ limit: "0" }, { limit: "1001" }, { from_id: "-1" }, { recursive: "maybe" }]) {
        const reply = await call("GET", "/events", { query });
        expect(reply.status, JSON.stringify(query)).toBe(400);
        expect(errorCode(reply)).toBe("invalid_argument");
      }
    });
  });

  describe("GET /subjects", () => {
    it("lists distinct subjects, sorted → 200", async () => {
      const reply = await call("GET", "/subjects");
      expect(reply.status).toBe(200);
      expect(reply.body).toEqual([
        "invoices/7",
        "invoices/8",
        "logs/app",
        "logs/json",
        "mixed/1",
        "mixed/2",
        "notes",
        "orders/1",
        "orders/2",
      ]);
    });

    it("filters by prefix → 200; a repeated prefix → 400", async () => {
      const reply = await call("GET", "/subjects", { query: { prefix: "orders/" } });
      expect(reply.body).toEqual(["orders/1", "orders/2"]);
      const bad = await call("GET", "/subjects", { query: { prefix: ["a", "b"] } });
      expect(bad.status).toBe(400);
      expect(errorCode(bad)).toBe("invalid_argument");
    });

    it("pages with limit and after, X-Has-More / X-Next-After → 200; a bad limit → 400", async () => {
      const first = await call("GET", "/subjects", { query: { prefix: "orders/", limit: "1" } });
      expect(first.status).toBe(200);
      expect(first.body).toEqual(["orders/1"]);
      expect(first.headers.get("x-has-more")).toBe("true");
      expect(first.headers.get("x-next-after")).toBe(encodeURIComponent("orders/1"));
      const after = decodeURIComponent(first.headers.get("x-next-after") ?? "");
      const last = await call("GET", "/subjects", { query: { prefix: "orders/", limit: "1", after } });
      expect(last.body).toEqual(["orders/2"]);
      expect(last.headers.get("x-has-more")).toBe("false");
      expect(last.headers.get("x-next-after")).toBe("");
      for (const limit of ["0", "1001", "x"]) {
        const bad = await call("GET", "/subjects", { query: { limit } });
        expect(bad.status, limit).toBe(400);
        expect(errorCode(bad)).toBe("invalid_argument");
      }
    });
  });

  describe("DELETE /events", () => {
    it("rejects a delete without subject → 400", async () => {
      const reply = await call("DELETE", "/events");
      expect(reply.status).toBe(400);
      expect(errorCode(reply)).toBe("invalid_argument");
    });

    it("deletes the matching events and reports how many → 200 {deleted}", async () => {
      const reply = await call("DELETE", "/events", {
        query: { subject: "orders", recursive: "true", from_id: String(singleId) },
      });
      expect(reply.status).toBe(200);
      expect(reply.body).toEqual({ deleted: batchIds.length });
      const left = await call("GET", "/events", { query: { subject: "orders", recursive: "true" } });
      expect((left.body as { events: { id: number }[] }).events.map((e) => e.id)).toEqual([singleId]);
      const again = await call("DELETE", "/events", { query: { subject: "orders/2" } });
      expect(again.body).toEqual({ deleted: 0 });
    });
  });

  describe("GET /events/chain and the signing key", () => {
    it("pages the chain, the deleted events' tombstones included → 200", async () => {
      const first = await call("GET", "/events/chain", { query: { limit: "2" } });
      expect(first.status).toBe(200);
      const page = first.body as {
        links: { id: number; deleted?: true }[];
        has_more: boolean;
        next_from_id: number;
      };
      expect(page.links.map((l) => l.id)).toEqual([1, 2]);
      expect(page).toMatchObject({ has_more: true, next_from_id: 2 });
      const all = await call("GET", "/events/chain", { query: { limit: "1000" } });
      const links = (all.body as { links: { id: number; deleted?: true }[] }).links;
      expect(links.filter((l) => l.deleted).map((l) => l.id)).toEqual(batchIds);
    });

    it("rejects bad parameters → 400", async () => {
      for (const query of [{ limit: "0" }, { from_id: "x" }]) {
        const reply = await call("GET", "/events/chain", { query });
        expect(reply.status, JSON.stringify(query)).toBe(400);
        expect(errorCode(reply)).toBe("invalid_argument");
      }
    });

    it("GET /.well-known/eventsdb/signing-key → 200 the public key as PEM", async () => {
      const reply = await call("GET", "/.well-known/eventsdb/signing-key");
      expect(reply.status).toBe(200);
      expect(reply.body).toBe(publicKeyPem);
    });
  });

  describe("sessions and the console", () => {
    it("POST /auth/session → 200 with the session cookie, DELETE → 204", async () => {
      const created = await call("POST", "/auth/session", {
        headers: { "content-type": "application/json" },
        body: json({ token: "anything: this server is open" }),
      });
      expect(created.status).toBe(200);
      expect(created.body).toMatchObject({ name: "anonymous", read: ["*"], write: ["*"] });
      expect(created.headers.get("set-cookie")).toMatch(/^eventsdb_session=/);
      const ended = await call("DELETE", "/auth/session");
      expect(ended.status).toBe(204);
    });

    it("POST /auth/session from another origin → 403; DELETE with the cookie but no console proof → 403", async () => {
      const crossOrigin = await call("POST", "/auth/session", {
        headers: { "content-type": "application/json", origin: "http://127.0.0.1:1" },
        body: json({ token: "anything" }),
      });
      expect(crossOrigin.status).toBe(403);
      const created = await call("POST", "/auth/session", {
        headers: { "content-type": "application/json" },
        body: json({ token: "anything: this server is open" }),
      });
      const cookie = (created.headers.get("set-cookie") ?? "").split(";")[0] as string;
      const forged = await call("DELETE", "/auth/session", { headers: { cookie } });
      expect(forged.status).toBe(403);
    });

    it("GET /ui → 302 to /ui/, GET /ui/ → 200 HTML", async () => {
      const redirect = await call("GET", "/ui", { redirect: "manual" });
      expect(redirect.status).toBe(302);
      expect(redirect.headers.get("location")).toBe("ui/"); // relative: /ui/
      const page = await call("GET", "/ui/");
      expect(page.status).toBe(200);
      expect(String(page.body)).toContain("<html");
    });
  });

  describe("subscriptions", () => {
    const JSON_HEADERS = { "content-type": "application/json" };
    const subscription = {
      sink: "https://hooks.example.com/orders",
      protocol: "HTTP",
      protocolsettings: { contentmode: "binary", headers: { "x-team": "billing" } },
      config: { subject: "orders", recursive: true, from: 0 },
      filters: [{ any: [{ prefix: { type: "com.example." } }, { not: { exact: { source: "/test" } } }] }],
      sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "s3cret" },
    };

    it("POST, GET, PUT, redrive and DELETE a subscription → 201, 200, 204", async () => {
      expect(
        contract.requestBodyErrors("/subscriptions", "post", "application/json", subscription),
      ).toBeUndefined();
      const created = await call("POST", "/subscriptions", {
        headers: JSON_HEADERS,
        body: json(subscription),
      });
      expect(created.status).toBe(201);
      const { id } = created.body as { id: string };
      expect(created.headers.get("location")).toBe(`/subscriptions/${id}`);
      expect(created.body).toMatchObject({
        sinkcredential: { credentialtype: "ACCESSTOKEN" },
        status: { position: 0 },
      });

      const listed = await call("GET", "/subscriptions");
      expect(listed.status).toBe(200);
      expect((listed.body as { id: string }[]).map((s) => s.id)).toContain(id);
      const read = await call("GET", "/subscriptions/{id}", { params: { id } });
      expect(read.body).toEqual(created.body);

      // What GET returns may be sent back as it is.
      expect(
        contract.requestBodyErrors("/subscriptions/{id}", "put", "application/json", read.body),
      ).toBeUndefined();
      const replaced = await call("PUT", "/subscriptions/{id}", {
        params: { id },
        headers: JSON_HEADERS,
        body: json({ ...(read.body as object), types: ["com.example.order.created"] }),
      });
      expect(replaced.status).toBe(200);
      expect(replaced.body).toMatchObject({ types: ["com.example.order.created"] });

      const redriven = await call("POST", "/subscriptions/{id}/redrive", {
        params: { id },
        headers: JSON_HEADERS,
        body: json({ from: "now" }),
      });
      expect(redriven.status).toBe(200);
      expect(await call("POST", "/subscriptions/{id}/redrive", { params: { id } })).toMatchObject({
        status: 200,
      });

      expect((await call("DELETE", "/subscriptions/{id}", { params: { id } })).status).toBe(204);
      for (const [method, template] of [
        ["GET", "/subscriptions/{id}"],
        ["PUT", "/subscriptions/{id}"],
        ["DELETE", "/subscriptions/{id}"],
        ["POST", "/subscriptions/{id}/redrive"],
      ] as const) {
        const gone = await call(method, template, {
          params: { id },
          ...(method === "PUT"
            ? { headers: JSON_HEADERS, body: json({ ...subscription, config: { subject: "orders" } }) }
            : {}),
        });
        expect(gone.status, `${method} ${template}`).toBe(404);
      }
    });

    it("refuses bad subscriptions → 400, other media types → 415, beyond --max-subscriptions → 429", async () => {
      const bad = { ...subscription, filters: [{ sql: "type = 'x'" }] };
      expect(contract.requestBodyErrors("/subscriptions", "post", "application/json", bad)).toBeDefined();
      const refused = await call("POST", "/subscriptions", { headers: JSON_HEADERS, body: json(bad) });
      expect(refused.status).toBe(400);
      expect(errorCode(refused)).toBe("invalid_argument");
      const yaml = { "content-type": "application/yaml" };
      expect((await call("POST", "/subscriptions", { headers: yaml, body: "sink: x" })).status).toBe(415);

      const ids: string[] = [];
      for (let i = 0; i < MAX_SUBSCRIPTIONS; i++) {
        const made = await call("POST", "/subscriptions", {
          headers: JSON_HEADERS,
          body: json(subscription),
        });
        expect(made.status).toBe(201);
        ids.push((made.body as { id: string }).id);
      }
      const full = await call("POST", "/subscriptions", { headers: JSON_HEADERS, body: json(subscription) });
      expect(full.status).toBe(429);
      expect(errorCode(full)).toBe("too_many_requests");

      const id = ids[0] as string;
      const badPut = await call("PUT", "/subscriptions/{id}", {
        params: { id },
        headers: JSON_HEADERS,
        body: json({ ...subscription, config: { from: 3 } }),
      });
      expect(badPut.status).toBe(400);
      expect(
        (await call("PUT", "/subscriptions/{id}", { params: { id }, headers: yaml, body: "sink: x" })).status,
      ).toBe(415);
      const badRedrive = await call("POST", "/subscriptions/{id}/redrive", {
        params: { id },
        headers: JSON_HEADERS,
        body: json({ from: -1 }),
      });
      expect(badRedrive.status).toBe(400);
      for (const each of ids) await call("DELETE", "/subscriptions/{id}", { params: { id: each } });
    });
  });

  describe("operations", () => {
    it("GET /healthz → 200 ok", async () => {
      const reply = await call("GET", "/healthz");
      expect(reply.status).toBe(200);
      expect(reply.body).toEqual({
        status: "ok",
        version: JSON.parse(readFileSync("package.json", "utf8")).version,
      });
    });

    it("GET /readyz → 200 with the store and writer checks", async () => {
      const reply = await call("GET", "/readyz");
      expect(reply.status).toBe(200);
      expect(reply.body).toMatchObject({
        status: "ok",
        checks: { store: { status: "ok", dialect: "sqlite" }, writer: { status: "ok", queued_events: 0 } },
      });
    });

    it("GET /metrics → 200 Prometheus text with the operation counters", async () => {
      const reply = await call("GET", "/metrics");
      expect(reply.status).toBe(200);
      const text = reply.body as string;
      expect(text).toMatch(/^app_event_operations_total\{operation="create_events",status="success"\} 3$/m);
      expect(text).toMatch(/^app_event_operations_total\{operation="get_event",status="error"\} \d+$/m);
      expect(text).toContain("# TYPE app_event_operation_duration_seconds histogram");
    });
  });

  describe("GET /events/stream", () => {
    it("→ 200 text/event-stream, 429 beyond --max-total-clients, 400 for bad parameters", async () => {
      const controller = new AbortController();
      const url = `${baseUrl}/events/stream?subject=oas&subject=oas2&recursive=true&format=cloudevents`;
      const open = await fetch(url, { signal: controller.signal, headers: { "last-event-id": "0" } });
      try {
        contract.expectMatches("/events/stream", "GET", open, "");
        expect(open.status).toBe(200);
        const second = await call("GET", "/events/stream", { query: { subject: "oas" } });
        expect(second.status).toBe(429);
        expect(second.body).toMatchObject({ error: { code: "too_many_requests" } });
      } finally {
        controller.abort();
      }
      await new Promise((r) => setTimeout(r, 50)); // let the server see the close and free the slot
      const bad = await call("GET", "/events/stream", { query: { subject: "oas", format: "xml" } });
      expect(bad.status).toBe(400);
    });
  });

  describe("HEAD /events/stream", () => {
    it("→ 200 with the stream's headers and no stream, 429 while the streams are taken, 400 for bad parameters", async () => {
      const ok = await call("HEAD", "/events/stream", { query: { subject: "oas" } });
      expect(ok.status).toBe(200);
      const controller = new AbortController();
      const open = await fetch(`${baseUrl}/events/stream?subject=oas`, { signal: controller.signal });
      try {
        expect(open.status).toBe(200);
        const full = await call("HEAD", "/events/stream", { query: { subject: "oas" } });
        expect(full.status).toBe(429);
      } finally {
        controller.abort();
      }
      const bad = await call("HEAD", "/events/stream", { query: { subject: "oas", from_id: "-1" } });
      expect(bad.status).toBe(400);
    });
  });

  describe("coverage of openapi.yaml", () => {
    /** Operations documented ahead of their implementation. */
    const NOT_IMPLEMENTED = new Set<string>();
    /** Documented responses a black-box test cannot provoke, with the reason. */
    const UNPROVOKABLE: Record<string, string> = {
      "GET /readyz 503": "needs an unreachable store or a >90 % full write queue",
      "POST /events 503":
        "needs concurrent appends filling the write queue or an unreachable store: test/unit/events/writer.test.ts, test/operations/outage.test.ts",
      "POST /auth/session 401": "needs a token-protected server: test/transports/auth.test.ts",
      "POST /auth/session 429": "needs 30 failed sign-ins: test/transports/auth.test.ts",
      "GET /events/chain 403": "needs a token-protected server: test/transports/chain-fields.test.ts",
      "POST /subscriptions 403": "needs a token-protected server: test/transports/subscriptions.test.ts",
      "PUT /subscriptions/{id} 403": "needs a token-protected server: test/transports/subscriptions.test.ts",
      "GET /.well-known/eventsdb/signing-key 404":
        "needs a server without --signing-key-file (this one signs): test/transports/chain-fields.test.ts",
    };

    it("exercised every documented operation", () => {
      const expected = contract.operations().filter((operation) => !NOT_IMPLEMENTED.has(operation));
      expect(expected.length).toBeGreaterThan(0);
      expect([...contract.coveredOperations].sort()).toEqual(expected.sort());
    });

    it("exercised every documented status except `default` and the unprovokable ones", () => {
      const expected = contract
        .responses()
        .filter((response) => !response.endsWith(" default"))
        .filter((response) => !NOT_IMPLEMENTED.has(response.split(" ").slice(0, 2).join(" ")))
        .filter((response) => !(response in UNPROVOKABLE));
      expect([...contract.coveredResponses].sort()).toEqual(expected.sort());
    });
  });
});
