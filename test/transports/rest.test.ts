import http2 from "node:http2";
import { CloudEvent, emitterFor, HTTP, httpTransport, Mode } from "cloudevents";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import { scrapeMetrics } from "../support/metrics.js";
import { startTestServer, type TestServer } from "../support/server.js";

const JSON_HEADERS = { "content-type": "application/json" };
// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked by value, not by type.
type Json = any;

describe.each(DIALECTS)("REST on $name", (dialect) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(await dialect.url(), { "max-event-bytes": "2048", "max-body-bytes": "262144" });
  });
  afterAll(async () => {
    await t.close();
  });

  const post = (body: string | Buffer, headers: Record<string, string> = JSON_HEADERS) =>
    fetch(`${t.url}/events`, { method: "POST", headers, body });
  const getJson = async (path: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${t.url}${path}`, { headers });
    return { status: res.status, headers: res.headers, body: (await res.json()) as Json };
  };
  const count = async (subject: string) =>
    (await getJson(`/events?subject=${encodeURIComponent(subject)}&recursive=true&limit=1000`)).body.events
      .length;

  it("creates an event in the simple format, also as curl -d sends it (form content type)", async () => {
    const res = await post(JSON.stringify({ source: "s", type: "t", subject: "simple/1", data: "aGk=" }));
    expect(res.status).toBe(200);
    const { id } = (await res.json()) as { id: number };
    expect(id).toBeGreaterThan(0);
    const form = await post(JSON.stringify({ source: "s", type: "t", subject: "simple/2", data: "aGk=" }), {
      "content-type": "application/x-www-form-urlencoded",
    });
    expect(form.status).toBe(200);
    const second = ((await form.json()) as { id: number }).id;
    expect(second).toBe(id + 1);
    const got = await getJson(`/events/get?id=${id}`);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({ id, source: "s", type: "t", subject: "simple/1", data: "aGk=" });
    expect(got.body.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/);
    expect((await getJson(`/events/${id}`)).body).toEqual(got.body);
  });

  it("accepts events from the CloudEvents SDK's binary and structured emitters", async () => {
    const transport = httpTransport(`${t.url}/events`);
    const binary = emitterFor(transport, { mode: Mode.BINARY });
    const structured = emitterFor(transport, { mode: Mode.STRUCTURED });
    const ce = new CloudEvent({
      id: "sdk-1",
      source: "urn:sdk",
      type: "com.example.created",
      subject: "sdk/binary",
      time: "2026-03-04T05:06:07.891234Z",
      datacontenttype: "application/json",
      data: { hello: "world" },
      traceid: "abc",
    });
    const r1 = (await binary(ce)) as { body: string };
    const id1 = (JSON.parse(r1.body) as { id: number }).id;
    const r2 = (await structured(ce.cloneWith({ id: "sdk-2", subject: "sdk/structured" }))) as {
      body: string;
    };
    const id2 = (JSON.parse(r2.body) as { id: number }).id;
    expect(id2).toBeGreaterThan(id1);

    for (const [id, subject] of [
      [id1, "sdk/binary"],
      [id2, "sdk/structured"],
    ] as const) {
      const got = await fetch(`${t.url}/events/${id}`, {
        headers: { accept: "application/cloudevents+json" },
      });
      expect(got.headers.get("content-type")).toContain("application/cloudevents+json");
      const back = HTTP.toEvent({
        headers: Object.fromEntries(got.headers),
        body: await got.text(),
      }) as CloudEvent;
      expect(back.subject).toBe(subject);
      expect(back.source).toBe("urn:sdk");
      expect(back.type).toBe("com.example.created");
      // The SDK keeps times as JS Dates, so it sends milliseconds only.
      expect(back.time).toBe("2026-03-04T05:06:07.891Z");
      expect(back.data).toEqual({ hello: "world" });
      expect(back.traceid).toBe("abc");
    }
  });

  it("keeps microseconds and normalizes time zones to UTC", async () => {
    const ce = { specversion: "1.0", id: "time-1", source: "s", type: "t", subject: "time" };
    const res = await post(JSON.stringify({ ...ce, time: "2026-03-04T07:06:07.891234567+02:00" }), {
      "content-type": "application/cloudevents+json",
    });
    const { id } = (await res.json()) as { id: number };
    expect((await getJson(`/events/${id}`)).body.time).toBe("2026-03-04T05:06:07.891234Z");
  });

  it("is idempotent on (source, id): a retried CloudEvent returns the stored id and stores nothing", async () => {
    const body = JSON.stringify({ specversion: "1.0", id: "dup-1", source: "s", type: "t", subject: "dup" });
    const headers = { "content-type": "application/cloudevents+json" };
    const results = await Promise.all([post(body, headers), post(body, headers), post(body, headers)]);
    const ids = await Promise.all(results.map(async (r) => ((await r.json()) as { id: number }).id));
    expect(new Set(ids).size).toBe(1);
    expect(await count("dup")).toBe(1);
  });

  it("stores batches atomically, in order, in both batch forms", async () => {
    const simple = Array.from({ length: 5 }, (_, i) => ({ source: "s", type: "t", subject: `batch/a/${i}` }));
    const r1 = await post(JSON.stringify(simple));
    expect(r1.status).toBe(200);
    const { ids } = (await r1.json()) as { ids: number[] };
    expect(ids).toHaveLength(5);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(5);

    const ces = Array.from({ length: 3 }, (_, i) => ({
      specversion: "1.0",
      id: `b-${i}`,
      source: "s",
      type: "t",
      subject: `batch/b/${i}`,
      datacontenttype: "text/plain",
      data: `text ${i}`,
    }));
    const r2 = await post(JSON.stringify(ces), { "content-type": "application/cloudevents-batch+json" });
    expect(r2.status).toBe(200);
    const batchIds = ((await r2.json()) as { ids: number[] }).ids;
    expect(batchIds).toHaveLength(3);
    const got = await getJson(`/events/${batchIds[1]}`, { accept: "application/cloudevents+json" });
    expect(got.body).toMatchObject({ id: "b-1", data: "text 1", datacontenttype: "text/plain" });

    const bad = [
      ...simple.map((e) => ({ ...e, subject: `batch/c/${e.subject}` })),
      { source: "s", type: "t", subject: "" },
    ];
    const r3 = await post(JSON.stringify(bad));
    expect(r3.status).toBe(400);
    expect(((await r3.json()) as { error: { message: string } }).error.message).toContain(
      "event 5: subject must not be empty",
    );
    expect(await count("batch/c")).toBe(0);
  });

  it.each([
    ["a missing source", { type: "t", subject: "x" }, "source is required"],
    ["a non-string type", { source: "s", type: 5, subject: "x" }, "type must be a string"],
    [
      "a subject over 255 characters",
      { source: "s", type: "t", subject: "x".repeat(256) },
      "longer than 255",
    ],
    ["a control character", { source: "s", type: "t", subject: "a\u0007b" }, "control characters"],
    ["invalid base64", { source: "s", type: "t", subject: "x", data: "aGk" }, "not valid base64"],
    ["base64 with whitespace", { source: "s", type: "t", subject: "x", data: "aG k=" }, "not valid base64"],
    ["URL-safe base64", { source: "s", type: "t", subject: "x", data: "-_-_" }, "not valid base64"],
    ["a JSON string", "just a string", "must be a JSON object"],
  ])("rejects %s with 400 and stores nothing", async (_name, body, message) => {
    const before = (await getJson("/events?limit=1000")).body.events.length;
    const res = await post(JSON.stringify(body));
    expect(res.status).toBe(400);
    const error = (await res.json()) as { error: { code: string; message: string } };
    expect(error.error.code).toBe("invalid_argument");
    expect(error.error.message).toContain(message);
    expect((await getJson("/events?limit=1000")).body.events.length).toBe(before);
  });

  it.each([
    ["specversion 0.2", { specversion: "0.2" }, 'specversion must be "1.0" or "0.3"'],
    ["no id", { id: undefined }, "id is required"],
    ["a bad time", { time: "2026-13-01T00:00:00Z" }, "RFC 3339"],
    ["a time without zone", { time: "2026-01-01T00:00:00" }, "RFC 3339"],
    ["an upper-case extension", { Traceid: "x" }, "extension attribute name"],
    ["a long extension name", { abcdefghijklmnopqrstu: "x" }, "extension attribute name"],
    ["an object extension", { ext: { a: 1 } }, "must be a string, a boolean or a 32-bit integer"],
    ["data and data_base64", { data: 1, data_base64: "aGk=" }, "must not both be present"],
    ["a relative dataschema", { dataschema: "schema.json" }, "absolute URI"],
    ["an object as text data", { datacontenttype: "text/plain", data: { a: 1 } }, "data must be a string"],
  ])("rejects a structured CloudEvent with %s", async (_name, change, message) => {
    const ce = { specversion: "1.0", id: "x", source: "s", type: "t", subject: "bad/structured", ...change };
    const res = await post(JSON.stringify(ce), { "content-type": "application/cloudevents+json" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain(message);
    expect(await count("bad/structured")).toBe(0);
  });

  it("rejects binary mode without required headers, and accepts percent-encoded values", async () => {
    const base = { "ce-specversion": "1.0", "ce-id": "bin-1", "ce-source": "s", "ce-type": "t" };
    const { "ce-type": _, ...noType } = base;
    const missing = await post("payload", { ...noType, "ce-subject": "bin/x", "content-type": "text/plain" });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { error: { message: string } }).error.message).toContain(
      "type is required",
    );
    const ok = await post(Buffer.from([0, 1, 2, 255]), {
      ...base,
      "ce-subject": "bin/%C3%BCber",
      "content-type": "application/octet-stream",
      "ce-myext": "a%20b",
    });
    expect(ok.status).toBe(200);
    const { id } = (await ok.json()) as { id: number };
    const got = await getJson(`/events/${id}`);
    expect(got.body).toMatchObject({
      subject: "bin/über",
      data: Buffer.from([0, 1, 2, 255]).toString("base64"),
      ce_id: "bin-1",
      datacontenttype: "application/octet-stream",
      extensions: { myext: "a b" },
    });
  });

  it("answers malformed bodies with 400, oversize with 413, unknown content types with 415", async () => {
    const invalidJson = await post("{nope");
    expect(invalidJson.status).toBe(400);
    const badUtf8 = await post(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
    expect(badUtf8.status).toBe(400);
    expect(((await badUtf8.json()) as { error: { message: string } }).error.message).toContain("UTF-8");
    const empty = await post("");
    expect(empty.status).toBe(400);
    const deep = await post(`${"[".repeat(5000)}${"]".repeat(5000)}`);
    expect(deep.status).toBe(400);
    const tooBigData = await post(
      JSON.stringify({ source: "s", type: "t", subject: "big", data: Buffer.alloc(4096).toString("base64") }),
    );
    expect(tooBigData.status).toBe(413);
    expect(((await tooBigData.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
    const tooBigBody = await post(
      JSON.stringify({ source: "s", type: "t", subject: "big", pad: "x".repeat(300_000) }),
    );
    expect(tooBigBody.status).toBe(413);
    const png = await post("xx", { "content-type": "image/png" });
    expect(png.status).toBe(415);
    expect(((await png.json()) as { error: { code: string } }).error.code).toBe("unsupported_media_type");
    expect(await count("big")).toBe(0);
  });

  it("rejects a batch over --max-batch-events", async () => {
    const events = Array.from({ length: 1001 }, () => ({ source: "s", type: "t", subject: "toomany" }));
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify(events),
    });
    expect(res.status).toBe(400);
    expect(await count("toomany")).toBe(0);
  });

  it("pages with keyset cursors, filters, and answers a CloudEvents batch on request", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 7; i++) {
      const res = await post(
        JSON.stringify({ source: "s", type: i % 2 ? "odd" : "even", subject: `page/${i % 3}` }),
      );
      ids.push(((await res.json()) as { id: number }).id);
    }
    const p1 = await getJson("/events?subject=page&recursive=true&limit=3");
    expect(p1.body.events.map((e: { id: number }) => e.id)).toEqual(ids.slice(0, 3));
    expect(p1.body).toMatchObject({ has_more: true, next_from_id: ids[2] });
    const p3 = await getJson(`/events?subject=page&recursive=true&limit=3&from_id=${ids[5]}`);
    expect(p3.body).toMatchObject({ has_more: false, next_from_id: ids[6] });
    const odd = await getJson("/events?subject=page&recursive&type=odd");
    expect(odd.body.events.map((e: { id: number }) => e.id)).toEqual([ids[1], ids[3], ids[5]]);
    const exact = await getJson("/events?subject=page/1");
    expect(exact.body.events.map((e: { id: number }) => e.id)).toEqual([ids[1], ids[4]]);
    const several = await getJson("/events?subject=page/1&subject=page/2");
    expect(several.body.events.map((e: { id: number }) => e.id)).toEqual([ids[1], ids[2], ids[4], ids[5]]);

    const batch = await fetch(`${t.url}/events?subject=page&recursive=true&limit=2`, {
      headers: { accept: "application/cloudevents-batch+json" },
    });
    expect(batch.headers.get("content-type")).toContain("application/cloudevents-batch+json");
    expect(batch.headers.get("x-has-more")).toBe("true");
    expect(batch.headers.get("x-next-from-id")).toBe(String(ids[1]));
    const ces = (await batch.json()) as { specversion: string; id: string }[];
    expect(ces.map((c) => c.id)).toEqual([String(ids[0]), String(ids[1])]);
    expect(ces[0]?.specversion).toBe("1.0");

    for (const q of [
      "limit=0",
      "limit=1001",
      "from_id=-1",
      "from_id=abc",
      "recursive=maybe",
      "subject=a&subject=",
    ]) {
      expect((await getJson(`/events?${q}`)).status, q).toBe(400);
    }
  });

  it("deletes by subject and lists subjects by prefix", async () => {
    for (const subject of ["del/a", "del/a/1", "del/b", "del%x"]) {
      await post(JSON.stringify({ source: "s", type: "t", subject }));
    }
    const subjects = await getJson("/subjects?prefix=del");
    expect(subjects.body).toEqual(["del%x", "del/a", "del/a/1", "del/b"]);
    expect((await getJson("/subjects?prefix=del%25")).body).toEqual(["del%x"]);
    const all = await getJson("/subjects");
    expect(all.body).toEqual(expect.arrayContaining(["del/a", "simple/1"]));

    const res = await fetch(`${t.url}/events?subject=del/a&recursive=true`, { method: "DELETE" });
    expect(await res.json()).toEqual({ deleted: 2 });
    expect((await getJson("/subjects?prefix=del")).body).toEqual(["del%x", "del/b"]);
    const noSubject = await fetch(`${t.url}/events`, { method: "DELETE" });
    expect(noSubject.status).toBe(400);
  });

  it("answers 404 with the JSON error body for unknown events and routes, 400 for bad ids", async () => {
    expect(await getJson("/events/get?id=999999")).toMatchObject({
      status: 404,
      body: { error: { code: "not_found" } },
    });
    expect(await getJson("/events/999999")).toMatchObject({ status: 404 });
    expect(await getJson("/events/get?id=abc")).toMatchObject({
      status: 400,
      body: { error: { code: "invalid_argument" } },
    });
    expect(await getJson("/events/get")).toMatchObject({ status: 400 });
    expect(await getJson("/events/0")).toMatchObject({ status: 400 });
    expect(await getJson("/nowhere")).toMatchObject({ status: 404, body: { error: { code: "not_found" } } });
  });

  it("serves health, readiness and metrics", async () => {
    expect(await getJson("/healthz")).toMatchObject({ status: 200, body: { status: "ok" } });
    const ready = await getJson("/readyz");
    expect(ready).toMatchObject({
      status: 200,
      body: {
        status: "ok",
        checks: { store: { status: "ok", dialect: dialect.name }, writer: { status: "ok" } },
      },
    });
    const metrics = (await scrapeMetrics(t.url)).text;
    expect(metrics).toMatch(/app_event_operations_total\{operation="create_event",status="success"\} [1-9]/);
    expect(metrics).toMatch(/app_event_operations_total\{operation="create_event",status="error"\} [1-9]/);
    expect(metrics).toContain("app_event_operation_duration_seconds_bucket");
    expect(metrics).toContain("app_active_event_streams 0");
    expect(metrics).toMatch(/eventsdb_writer_batch_events_count [1-9]/);
  });

  it("serves the same app over cleartext HTTP/2 on the gRPC port", async () => {
    const session = http2.connect(t.grpcUrl);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ":path": "/healthz" });
        let text = "";
        req.setEncoding("utf8");
        req.on("data", (chunk: string) => {
          text += chunk;
        });
        req.on("end", () => resolve(text));
        req.on("error", reject);
      });
      expect(JSON.parse(body)).toMatchObject({ status: "ok" });
    } finally {
      session.close();
    }
    expect((await getJson("/healthz").then(() => fetch(`${t.grpcUrl}/healthz`))).status).toBe(200);
  });
});
