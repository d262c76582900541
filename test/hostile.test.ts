import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConnectPeer, connectPeer, metric } from "./support/grpc.js";
import { startTestServer, type TestServer } from "./support/server.js";
import { waitUntil } from "./support/sse.js";

/**
 * Hostile input, property-based: random and malformed requests on every transport of one real
 * server (SQLite, small limits). Whatever comes in, the server
 *   - never answers 5xx (and Connect/gRPC never INTERNAL or UNKNOWN),
 *   - keeps answering /healthz,
 *   - stores exactly the events it acknowledged: nothing from a rejected request.
 * Two oracle properties also say which CloudEvents must be accepted and which rejected, and check
 * what an accepted one reads back as.
 *
 * Fixed seed; FC_SEED and FC_RUNS override it (fast-check prints seed and path on failure).
 * Inputs that hit a known bug are left out of the properties and pinned by the failing tests under
 * "regressions" at the end.
 */

const SEED = Number(process.env.FC_SEED ?? 20261123);
const RUNS = Number(process.env.FC_RUNS ?? 250);
const MAX_EVENT_BYTES = 4096;
const MAX_BODY_BYTES = 65536;
const MAX_BATCH_EVENTS = 20;
const params = (numRuns = RUNS) => ({ seed: SEED, numRuns });

let dir: string;
let t: TestServer;
let peers: ConnectPeer[] = [];
/** Every id up to here is accounted for: acknowledged by a response seen by this file. */
let known = 0;
const acknowledged = new Set<number>();
let serial = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "eventsdb-hostile-"));
  t = await startTestServer(`sqlite:${join(dir, "events.db")}`, {
    "max-event-bytes": String(MAX_EVENT_BYTES),
    "max-body-bytes": String(MAX_BODY_BYTES),
    "max-batch-events": String(MAX_BATCH_EVENTS),
  });
  peers = [connectPeer("connect (HTTP/1.1)", t), connectPeer("grpc (HTTP/2)", t)];
});

afterAll(async () => {
  for (const peer of peers) peer.close();
  await t?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// The invariant checked after every request
// ---------------------------------------------------------------------------------------------

interface Answer {
  readonly status: number;
  readonly text: string;
}

async function send(path: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(`${t.url}${path}`, init);
  return { status: res.status, text: await res.text() };
}

/** Header values fetch refuses (controls but HTAB): such requests go over a raw socket. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: detecting control characters is the point.
const FETCH_REFUSES = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/**
 * One HTTP/1.1 request written by hand on its own connection (Connection: close), so header
 * values can carry control characters that fetch and node:http refuse to send.
 */
function rawRequest(
  method: string,
  path: string,
  headers: Headers | [string, string][],
  body: Buffer,
): Promise<Answer> {
  const lines = [
    `${method} ${path} HTTP/1.1`,
    `host: 127.0.0.1`,
    "connection: close",
    `content-length: ${body.length}`,
  ];
  for (const [name, value] of headers) lines.push(`${name}: ${value}`);
  const head = Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(new URL(t.url).port), "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const response = Buffer.concat(chunks).toString("utf8");
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? "NaN");
      const split = response.indexOf("\r\n\r\n");
      let text = split === -1 ? "" : response.slice(split + 4);
      if (/^transfer-encoding: chunked/im.test(response.slice(0, split))) text = unchunk(text);
      resolve({ status, text });
    });
    socket.end(Buffer.concat([head, body]));
  });
}

function unchunk(text: string): string {
  let out = "";
  let rest = text;
  for (;;) {
    const eol = rest.indexOf("\r\n");
    const size = Number.parseInt(rest.slice(0, eol), 16);
    if (eol === -1 || !(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}

/** POST with fetch, or over a raw socket when a header value holds a control character. */
async function post(path: string, headers: [string, string][], body: Buffer): Promise<Answer> {
  if (headers.some(([, value]) => FETCH_REFUSES.test(value))) return rawRequest("POST", path, headers, body);
  return send(path, { method: "POST", headers, body });
}

/** Buffers print as a short preview in fast-check's counterexamples. */
function shown(bytes: Buffer): Buffer {
  const preview = JSON.stringify(bytes.subarray(0, 160).toString("latin1"));
  return Object.defineProperty(bytes, fc.toStringMethod, {
    value: () => `<${bytes.length} bytes ${preview}${bytes.length > 160 ? "…" : ""}>`,
  });
}

/** Ids a create answered with: REST `{id}` / `{ids}`, Connect JSON `{"id":"7"}` / `{"ids":[…]}`. */
function claimedIds(text: string): number[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return [];
  }
  const { id, ids } = (body ?? {}) as { id?: unknown; ids?: unknown };
  if (Array.isArray(ids)) return ids.map(Number);
  return id === undefined ? [] : [Number(id)];
}

/**
 * No 5xx, /healthz answers, and the events stored since the last check are exactly those this
 * request acknowledged (`claimed`; none when it was rejected or is no create).
 */
async function settle(label: string, status: number, claimed: readonly number[] = []): Promise<void> {
  expect(status, label).toBeLessThan(500);
  const health = await fetch(`${t.url}/healthz`);
  expect(health.status, `/healthz after ${label}`).toBe(200);
  await health.arrayBuffer();
  const page = (await (await fetch(`${t.url}/events?from_id=${known}&limit=1000`)).json()) as {
    events: { id: number }[];
  };
  const fresh = page.events.map((e) => e.id);
  expect(
    fresh.filter((id) => !claimed.includes(id)),
    `stored without being acknowledged (${label})`,
  ).toEqual([]);
  expect(
    claimed.filter((id) => id > known && !fresh.includes(id)),
    `acknowledged but not stored (${label})`,
  ).toEqual([]);
  for (const id of claimed) acknowledged.add(id);
  known = Math.max(known, ...fresh, ...claimed);
}

const describeAnswer = (what: string, answer: Answer) =>
  `${what} → ${answer.status} ${answer.text.slice(0, 300)}`;

/** A REST or Connect-JSON request; creates name the ids they acknowledged. */
async function sendAndSettle(what: string, path: string, init: RequestInit, creates: boolean) {
  const answer = await send(path, init);
  await settle(
    describeAnswer(what, answer),
    answer.status,
    creates && answer.status === 200 ? claimedIds(answer.text) : [],
  );
  return answer;
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const utf8 = (text: string) => Buffer.from(text, "utf8");

/** Strings that break parsers, validators and SQL: limits, controls, lone surrogates, NaN-likes. */
const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "0x10",
    "1e309",
    "null",
    "undefined",
    "true",
    "[object Object]",
    "__proto__",
    "constructor",
    "\u0000",
    "a\u0007b",
    "\t",
    "\n",
    "\u007f",
    "\u0085",
    "\u2028",
    "\ud800",
    "\udfff",
    "\ufeff",
    "😀",
    "%00",
    "%",
    "%25",
    "_",
    "\\",
    "a/b/../c",
    "'\"`;--",
    "$" + "{x}{{x}}",
  ),
  fc.string({ unit: "binary", maxLength: 30 }),
  fc
    .constantFrom(255, 256, 1024, 1025, 4096, 4097)
    .chain((n) => fc.constantFrom("x".repeat(n), "😀".repeat(n), `${"x".repeat(n - 1)}\u0000`)),
);

/** Any JSON-able value where a string, base64 or a small integer is expected. */
const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  nastyString,
  fc.constantFrom(0, -0, 1, -1, 1.5, 2147483647, 2147483648, -2147483649, Number.MAX_SAFE_INTEGER, 1e300),
  fc.constantFrom(true, false, null, [], {}, [null], { __proto__: null }),
  fc.jsonValue({ maxDepth: 3 }),
);

const FIELD_NAMES = [
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  "data_base64",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "hasOwnProperty",
  "ext1",
  "Ext",
  "a".repeat(20),
  "a".repeat(21),
] as const;

/** JSON text of an object from entries, written by hand so `__proto__` and duplicates survive. */
function objectText(entries: readonly (readonly [string, unknown])[]): string {
  return `{${entries.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value) ?? "null"}`).join(",")}}`;
}

const SIMPLE_BASE: [string, unknown][] = [
  ["source", "fuzz"],
  ["type", "t"],
  ["subject", "fuzz/1"],
];
const CE_BASE: [string, unknown][] = [["specversion", "1.0"], ["id", "fuzz-id"], ...SIMPLE_BASE];

/** An event-shaped JSON object: a valid base (or none) with random fields added or overridden. */
const eventText: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom<[string, unknown][]>([], SIMPLE_BASE, CE_BASE),
    fc.array(fc.tuple(fc.oneof(fc.constantFrom(...FIELD_NAMES), fc.string({ maxLength: 12 })), nastyValue), {
      maxLength: 6,
    }),
  )
  .map(([base, extra]) => objectText([...base, ...extra]));

/** Byte sequences that are not UTF-8: lone continuation, overlong, surrogate, > U+10FFFF, cut. */
const INVALID_UTF8 = [
  [0xff],
  [0xc3, 0x28],
  [0xc0, 0xaf],
  [0xed, 0xa0, 0x80],
  [0xf4, 0x90, 0x80, 0x80],
  [0xe2, 0x82],
];

function withInvalidUtf8(text: string, bad: readonly number[], at: number): Buffer {
  const bytes = utf8(text);
  const cut = at % (bytes.length + 1);
  return Buffer.concat([bytes.subarray(0, cut), Buffer.from(bad), bytes.subarray(cut)]);
}

/** A simple event padded with an ignored field to exactly `length` bytes of JSON. */
function paddedSimpleEvent(length: number): Buffer {
  const head = `{"source":"pad","type":"t","subject":"fuzz/pad","pad":"`;
  return utf8(`${head}${"p".repeat(Math.max(0, length - head.length - 2))}"}`);
}

type Position = "top" | "simple-data" | "ce-source" | "ce-extension" | "ce-data" | "batch-item";

function deepText(depth: number, kind: "array" | "object", position: Position): string {
  const deep =
    kind === "array"
      ? `${"[".repeat(depth)}${"]".repeat(depth)}`
      : `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
  switch (position) {
    case "top":
      return deep;
    case "simple-data":
      return `{"source":"s","type":"t","subject":"fuzz/deep","data":${deep}}`;
    case "ce-source":
      return `{"specversion":"1.0","id":"d","source":${deep},"type":"t","subject":"fuzz/deep"}`;
    case "ce-extension":
      return `{"specversion":"1.0","id":"d","source":"s","type":"t","subject":"fuzz/deep","ext":${deep}}`;
    case "ce-data":
      return `{"specversion":"1.0","id":"d${depth}${kind}","source":"s","type":"t","subject":"fuzz/deep","data":${deep}}`;
    case "batch-item":
      return `[{"source":"s","type":"t","subject":"fuzz/deep"},${deep}]`;
  }
}

/** Request bodies for POST /events. */
const restBody: fc.Arbitrary<Buffer> = fc
  .oneof(
    fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
    eventText.map(utf8),
    fc.array(eventText, { maxLength: MAX_BATCH_EVENTS + 5 }).map((items) => utf8(`[${items.join(",")}]`)),
    fc
      .tuple(eventText, fc.constantFrom(...INVALID_UTF8), fc.nat())
      .map(([text, bad, at]) => withInvalidUtf8(text, bad, at)),
    fc.tuple(eventText, fc.nat()).map(([text, at]) => utf8(text.slice(0, at % (text.length + 1)))),
    fc.json({ maxDepth: 4 }).map(utf8),
    fc
      .constantFrom(
        "NaN",
        "[NaN]",
        '{"source":NaN,"type":"t","subject":"s"}',
        "Infinity",
        "-",
        "[",
        "{",
        '"',
        "nul",
        "[1,]",
        '{"a":1,}',
        '\ufeff{"source":"bom","type":"t","subject":"fuzz/bom"}',
        '// comment\n{"source":"s","type":"t","subject":"s"}',
        "{'source':'s','type':'t','subject':'s'}",
        '{"source":"s","type":"t","subject":"s"}{"source":"s"}',
        "[]",
        "{}",
        "null",
        "0",
        '""',
      )
      .map(utf8),
    // Near and over the limits: event data, body size, attribute and key lengths.
    fc
      .constantFrom(MAX_EVENT_BYTES - 1, MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1)
      .map((n) => utf8(objectText([...SIMPLE_BASE, ["data", Buffer.alloc(n, 7).toString("base64")]]))),
    fc.constantFrom(MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 70_000).map(paddedSimpleEvent),
    fc
      .tuple(fc.constantFrom("source", "type", "subject", "id"), fc.constantFrom(255, 256, 60_000))
      .map(([field, n]) => utf8(objectText([...CE_BASE, [field, "s".repeat(n)]]))),
    fc.constantFrom(1_000, 10_000, 60_000).map((n) => utf8(objectText([...CE_BASE, ["k".repeat(n), "v"]]))),
    fc
      .tuple(
        fc.constantFrom(10, 1_000, 10_000, 30_000),
        fc.constantFrom<"array" | "object">("array", "object"),
        fc.constantFrom<Position>("top", "simple-data", "ce-source", "ce-extension", "ce-data", "batch-item"),
      )
      .map(([depth, kind, position]) => utf8(deepText(depth, kind, position))),
  )
  .map(shown);

const CONTENT_TYPES = [
  "application/json",
  "APPLICATION/JSON",
  "application/json; charset=utf-8",
  "application/json;",
  "application/json; charset",
  'application/json; a="unterminated',
  "application/cloudevents+json",
  "application/cloudevents+json; charset=UTF-8",
  "application/cloudevents-batch+json",
  "Application/CloudEvents-Batch+JSON",
  "text/plain",
  "text/plain;;;",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "multipart/mixed",
  "application/octet-stream",
  "",
  ";",
  "garbage",
  "a/b/c",
  "*/*",
  "application/*",
  "application/json, text/plain",
] as const;

/** A header value that keeps the request framed (no CR, LF); other controls go over a raw socket. */
const headerSafe = (s: string) => s.replace(/[\r\n]/g, "");

const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  fc.constantFrom(...CONTENT_TYPES),
  fc.constant(undefined),
  fc.string({ unit: "binary-ascii", maxLength: 60 }).map(headerSafe),
);

/** Values for ce-* headers: percent-encoding edge cases, controls, Latin-1, long values. */
const ceHeaderValue: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "x",
    "",
    "%",
    "%2",
    "%zz",
    "%%",
    "%25",
    "%00",
    "%0A",
    "%0D%0A",
    "%7F",
    "%C2%85",
    "%C0%AF",
    "%E0%A4",
    "%ED%A0%80",
    "%F4%90%80%80",
    "%F0%9F%98%80",
    "%EF%BB%BF",
    "%E2%80%A8",
    "a%20b",
    "1.0",
    "1%2E0",
    "true",
    "42",
    "\u00e9",
    "\u00ff\u00fe",
    "a\tb",
    "a\u0001b",
    "2026-01-02T03:04:05Z",
  ),
  fc.string({ unit: "binary-ascii", maxLength: 40 }).map(headerSafe),
  fc.string({ unit: "grapheme", maxLength: 20 }).map((s) => encodeURIComponent(s)),
  fc.constantFrom(255, 256, 300, 4097).map((n) => "v".repeat(n)),
  fc.constantFrom(85, 86).map((n) => "%E2%82%AC".repeat(n)),
);

const ceHeaderName: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "id",
    "source",
    "type",
    "subject",
    "time",
    "dataschema",
    "datacontenttype",
    "data",
    "data_base64",
    "__proto__",
    "constructor",
    "toString",
    "Ext",
    "a".repeat(20),
    "a".repeat(21),
    "a_b",
    "a.b",
    "",
  ),
  fc.stringMatching(/^[a-z0-9]{1,24}$/),
);

// ---------------------------------------------------------------------------------------------
// REST: bodies, content types, ce-* headers
// ---------------------------------------------------------------------------------------------

describe("hostile input (fast-check)", () => {
  it("POST /events with random and malformed bodies under any Content-Type: never 5xx, nothing stored from a rejection", async () => {
    await fc.assert(
      fc.asyncProperty(restBody, contentType, async (body, type) => {
        const answer = await post("/events", type === undefined ? [] : [["content-type", type]], body);
        await settle(
          describeAnswer(`POST /events (${JSON.stringify(type)}, ${body.length} bytes)`, answer),
          answer.status,
          answer.status === 200 ? claimedIds(answer.text) : [],
        );
      }),
      params(),
    );
  }, 60_000);

  it("POST /events with random ce-* headers (binary mode and not): never 5xx, nothing stored from a rejection", async () => {
    const headerSet = fc.record({
      specversion: fc.option(fc.oneof(fc.constant("1.0"), ceHeaderValue), { nil: undefined, freq: 4 }),
      base: fc.boolean(),
      extra: fc.array(fc.tuple(ceHeaderName, ceHeaderValue), { maxLength: 6 }),
      type: contentType,
      body: fc.oneof(
        fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
        eventText.map(utf8),
        fc.constantFrom(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1).map((n) => Buffer.alloc(n, 1)),
      ),
    });
    await fc.assert(
      fc.asyncProperty(headerSet, async ({ specversion, base, extra, type, body }) => {
        const headers: [string, string][] = [];
        if (specversion !== undefined) headers.push(["ce-specversion", specversion]);
        if (base) {
          headers.push(["ce-id", `hdr-${serial++}`], ["ce-source", "fuzz"], ["ce-type", "t"]);
          headers.push(["ce-subject", "fuzz/binary"]);
        }
        // Repeated names are sent twice (Node joins them with ", ").
        for (const [name, value] of extra) headers.push([`ce-${name}`, value]);
        if (type !== undefined) headers.push(["content-type", type]);
        const answer = await post("/events", headers, body);
        await settle(
          describeAnswer(`POST /events with ${JSON.stringify(headers).slice(0, 500)}`, answer),
          answer.status,
          answer.status === 200 ? claimedIds(answer.text) : [],
        );
      }),
      params(),
    );
  }, 60_000);

  // -------------------------------------------------------------------------------------------
  // Oracles: structured and binary CloudEvents whose validity is known
  // -------------------------------------------------------------------------------------------

  it("structured CloudEvents: exactly the valid ones are stored, and read back as sent", async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(structuredCase, fc.boolean(), async (c, asBatch) => {
        const n = serial++;
        const entries: [string, unknown][] = [];
        const put = (name: string, choice: Choice) => {
          if (choice.value !== ABSENT)
            entries.push([name, typeof choice.value === "function" ? choice.value(n) : choice.value]);
        };
        put("specversion", c.specversion);
        put("id", c.id);
        put("source", c.source);
        put("type", c.type);
        put("subject", c.subject);
        put("time", c.time);
        put("datacontenttype", c.datacontenttype);
        put("dataschema", c.dataschema);
        for (const [name, value] of c.data.entries) entries.push([name, value]);
        for (const ext of c.extensions) entries.push([ext.name, ext.value]);

        const ct = c.datacontenttype.value;
        const jsonData = ct === ABSENT || ct === null || (typeof ct === "string" && isJsonMedia(ct));
        const data = c.data.resolve(jsonData);
        const verdict = combine([
          c.specversion.validity,
          c.id.validity,
          c.source.validity,
          c.type.validity,
          c.subject.validity,
          c.time.validity,
          c.datacontenttype.validity,
          c.dataschema.validity,
          data.validity,
          ...c.extensions.map((e) => e.validity),
        ]);
        const text = objectText(entries);
        const answer = await sendAndSettle(
          `structured ${asBatch ? "batch" : "event"} ${text.slice(0, 400)}`,
          "/events",
          {
            method: "POST",
            headers: {
              "content-type": asBatch ? "application/cloudevents-batch+json" : "application/cloudevents+json",
            },
            body: asBatch ? `[${text}]` : text,
          },
          true,
        );
        const what = `${describeAnswer("structured event", answer)}\nsent ${text.slice(0, 600)}`;
        if (verdict === "invalid") expect([400, 413], what).toContain(answer.status);
        if (verdict === "valid") expect(answer.status, what).toBe(200);
        if (answer.status !== 200) return;
        accepted++;
        const [id] = claimedIds(answer.text);
        const stored = (await (await fetch(`${t.url}/events/${id}`)).json()) as StoredJson;
        const expected = (choice: Choice) => {
          const value = typeof choice.value === "function" ? choice.value(n) : choice.value;
          return value === ABSENT || value === null ? undefined : value;
        };
        expect(stored.source, what).toBe(expected(c.source));
        expect(stored.type, what).toBe(expected(c.type));
        expect(stored.subject, what).toBe(expected(c.subject));
        expect(stored.ce_id, what).toBe(expected(c.id));
        expect(stored.datacontenttype, what).toBe(expected(c.datacontenttype));
        expect(stored.dataschema, what).toBe(expected(c.dataschema));
        expect(stored.data, what).toBe(data.bytes.toString("base64"));
        if (c.time.display !== undefined) expect(stored.time, what).toBe(c.time.display);
        expect(stored.time, what).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/);
        // Through JSON, as the server saw them (-0 is 0).
        const extensions: unknown = JSON.parse(
          JSON.stringify(
            Object.fromEntries(c.extensions.filter((e) => e.value !== null).map((e) => [e.name, e.value])),
          ),
        );
        expect(stored.extensions ?? {}, what).toEqual(extensions);
      }),
      params(),
    );
    // The oracle saw both sides: enough valid events reached the store.
    expect(accepted).toBeGreaterThan(RUNS / 10);
  }, 60_000);

  it("binary-mode CloudEvents: exactly the valid ones are stored, and read back as sent (percent-decoded)", async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(binaryCase, async (c) => {
        const n = serial++;
        const headers = new Headers();
        const decoded: Record<string, string | undefined> = {};
        const verdicts: Validity[] = [];
        for (const [name, choice] of Object.entries(c.attributes)) {
          verdicts.push(choice.validity);
          if (choice.header === undefined) continue;
          const value = choice.header(n);
          headers.set(`ce-${name}`, value);
          decoded[name] = choice.decoded?.(n);
        }
        for (const ext of c.extensions) {
          verdicts.push(ext.validity);
          headers.set(`ce-${ext.name}`, ext.header);
        }
        if (c.contentType.value !== undefined) headers.set("content-type", c.contentType.value);
        verdicts.push(c.contentType.validity, c.body.length > MAX_EVENT_BYTES ? "invalid" : "valid");
        // Past Node's 16 KiB of headers the answer is 431 whatever the event.
        const headerBytes = [...headers].reduce((sum, [k, v]) => sum + k.length + v.length + 4, 0);
        const verdict = headerBytes > 14_000 ? "either" : combine(verdicts);
        const answer = await sendAndSettle(
          `binary event ${JSON.stringify([...headers])}`,
          "/events",
          { method: "POST", headers, body: c.body },
          true,
        );
        const what = `${describeAnswer("binary event", answer)}\nheaders ${JSON.stringify([...headers]).slice(0, 600)}`;
        if (verdict === "invalid") expect([400, 413, 415], what).toContain(answer.status);
        if (verdict === "valid") expect(answer.status, what).toBe(200);
        if (answer.status !== 200) return;
        accepted++;
        const [id] = claimedIds(answer.text);
        const stored = (await (await fetch(`${t.url}/events/${id}`)).json()) as StoredJson;
        expect(stored.ce_id, what).toBe(decoded.id);
        expect(stored.source, what).toBe(decoded.source);
        expect(stored.type, what).toBe(decoded.type);
        expect(stored.subject, what).toBe(decoded.subject);
        expect(stored.data, what).toBe(c.body.toString("base64"));
        expect(stored.datacontenttype, what).toBe(
          c.contentType.value === "" ? undefined : c.contentType.value,
        );
        const extensions = Object.fromEntries(c.extensions.map((e) => [e.name.toLowerCase(), e.decoded]));
        expect(stored.extensions ?? {}, what).toEqual(extensions);
      }),
      params(),
    );
    // The oracle saw both sides: enough valid events reached the store.
    expect(accepted).toBeGreaterThan(RUNS / 10);
  }, 60_000);

  // -------------------------------------------------------------------------------------------
  // Connect / gRPC
  // -------------------------------------------------------------------------------------------

  it("Connect JSON over HTTP/1.1 (raw fetch) with random bodies: never 5xx, never internal/unknown", async () => {
    const bodies = fc
      .oneof(
        connectMessage.map((m) => utf8(objectText(m))),
        fc.json({ maxDepth: 4 }).map(utf8),
        fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
        fc.tuple(eventText, fc.nat()).map(([text, at]) => utf8(text.slice(0, at % (text.length + 1)))),
        fc
          .tuple(fc.constantFrom(10, 10_000), fc.constantFrom("[", '{"a":'))
          .map(([depth, open]) => utf8(`${open.repeat(depth)}1${(open === "[" ? "]" : "}").repeat(depth)}`)),
        fc.constantFrom(70_000).map(paddedSimpleEvent),
      )
      .map(shown);
    const connectHeaders = fc.record({
      type: fc.constantFrom("application/json", "application/json; charset=utf-8", "APPLICATION/JSON"),
      version: fc.option(fc.constantFrom("1", "2", "", "x"), { nil: undefined }),
      timeout: fc.option(fc.constantFrom("1", "0", "-1", "abc", "99999999999", "10000"), { nil: undefined }),
      encoding: fc.option(fc.constantFrom("gzip", "br", "identity", "zstd", "nope"), {
        nil: undefined,
        freq: 8,
      }),
    });
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...UNARY_METHODS), bodies, connectHeaders, async (method, body, h) => {
        const headers: Record<string, string> = { "content-type": h.type };
        if (h.version !== undefined) headers["connect-protocol-version"] = h.version;
        if (h.timeout !== undefined) headers["connect-timeout-ms"] = h.timeout;
        if (h.encoding !== undefined) headers["content-encoding"] = h.encoding;
        // Half of the bodies under gzip or br are compressed properly, half are not compressed at all.
        const sent =
          body.length % 2 === 1
            ? body
            : h.encoding === "gzip"
              ? gzipSync(body)
              : h.encoding === "br"
                ? brotliCompressSync(body)
                : body;
        const answer = await send(`/grpc.EventsDB/${method}`, { method: "POST", headers, body: sent });
        const label = describeAnswer(`Connect ${method} ${JSON.stringify(headers)}`, answer);
        expectNoInternalCode(answer);
        // The Connect protocol answers an unknown Content-Encoding with unimplemented (HTTP 501).
        const unknownEncoding =
          answer.status === 501 &&
          h.encoding !== undefined &&
          !["gzip", "br", "identity"].includes(h.encoding);
        const creates = method === "CreateEvent" || method === "CreateEvents";
        await settle(
          label,
          unknownEncoding ? 400 : answer.status,
          creates && answer.status === 200 ? claimedIds(answer.text) : [],
        );
      }),
      params(),
    );
  }, 60_000);

  it("Connect streaming (enveloped JSON) with random requests: never internal/unknown", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          streamMessage.map((m) => utf8(objectText(m))),
          fc.json({ maxDepth: 3 }).map(utf8),
          fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
        ),
        fc.constantFrom(0, 1, 2),
        async (json, flags) => {
          const envelope = Buffer.alloc(5);
          envelope.writeUInt8(flags, 0);
          envelope.writeUInt32BE(json.length, 1);
          // A stream that has nothing to send yet may not have sent its headers either: such a call
          // is cancelled after 100 ms and counts as open.
          const controller = new AbortController();
          const timer = setTimeout(() => controller.abort(), 100);
          let res: Response;
          try {
            res = await fetch(`${t.url}/grpc.EventsDB/StreamEventsFromSubject`, {
              method: "POST",
              headers: { "content-type": "application/connect+json" },
              body: Buffer.concat([envelope, json]),
              signal: controller.signal,
            });
          } catch (error) {
            if (!controller.signal.aborted) throw error;
            await settle(`stream ${flags} ${json.toString("latin1").slice(0, 200)} (open)`, 200);
            return;
          } finally {
            clearTimeout(timer);
          }
          // Protocol errors (415, 413, …) are plain HTTP; call errors come in the end-stream message.
          const endStream = res.status === 200 ? await readEndStream(res, controller, 50) : await res.text();
          const label = `stream ${flags} ${json.toString("latin1").slice(0, 200)} → ${res.status} ${endStream ?? "(open)"}`;
          if (endStream !== undefined && res.status === 200) {
            const code = (JSON.parse(endStream) as { error?: { code?: string } }).error?.code;
            // A compressed envelope without a negotiated encoding is a protocol error that
            // connect-go and the other Connect implementations also answer with internal.
            if ((flags & 1) === 0) expect(["internal", "unknown"], label).not.toContain(code);
          }
          await settle(label, res.status);
        },
      ),
      params(100),
    );
  }, 60_000);

  it("connect-node clients (Connect HTTP/1.1, gRPC HTTP/2) with random field values: never INTERNAL/UNKNOWN", async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: 1 }), clientCall, async (which, call) => {
        const peer = peers[which] as ConnectPeer;
        const label = `${which === 0 ? "connect" : "grpc"} ${call.method} ${stringifyBig(call.request).slice(0, 300)}`;
        let claimed: number[] = [];
        try {
          const reply = await invoke(peer, call);
          claimed = reply;
        } catch (error) {
          const code = ConnectError.from(error).code;
          expect(
            [Code.Internal, Code.Unknown],
            `${label} → ${Code[code]} ${ConnectError.from(error).message}`,
          ).not.toContain(code);
        }
        await settle(label, 200, claimed);
      }),
      params(200),
    );
  }, 60_000);

  // -------------------------------------------------------------------------------------------
  // Query strings on every GET/DELETE route, and the stream
  // -------------------------------------------------------------------------------------------

  it("random query strings and headers on every GET/DELETE route and /events/stream: never 5xx, nothing stored", async () => {
    const routes = fc.oneof(
      fc.constantFrom(
        "GET /events",
        "DELETE /events",
        "GET /subjects",
        "GET /events/get",
        "GET /events/stream",
      ),
      fc.constantFrom(
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "DELETE /events/get",
        "DELETE /subjects",
      ),
      fc
        .oneof(
          fc.constantFrom(
            "0",
            "-1",
            "1",
            "1.5",
            "1e3",
            "%00",
            "%ZZ",
            "9007199254740993",
            "99999999999999999999",
            " 1",
          ),
          fc
            .string({ maxLength: 20 })
            .filter((s) => s.isWellFormed())
            .map((s) => encodeURIComponent(s)),
        )
        .map((segment) => `GET /events/${segment}`),
    );
    const accept = fc.option(
      fc.constantFrom(
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/cloudevents-batch+json;q=0",
        "application/cloudevents+json;q=0.0, */*",
        "text/event-stream",
        "garbage",
        "",
      ),
      { nil: undefined },
    );
    const lastEventId = fc.option(
      fc.constantFrom("", "0", "1", "-1", "abc", "1.5", "99999999999999999999", " 3 ", "%00"),
      { nil: undefined, freq: 4 },
    );
    await fc.assert(
      fc.asyncProperty(routes, queryString, accept, lastEventId, async (route, query, acc, last) => {
        const [method, path] = route.split(" ") as [string, string];
        const headers: Record<string, string> = {};
        if (acc !== undefined) headers.accept = acc;
        if (last !== undefined) headers["last-event-id"] = last;
        const url = `${path}${query === "" ? "" : `?${query}`}`;
        if (path === "/events/stream") {
          const controller = new AbortController();
          const res = await fetch(`${t.url}${url}`, { headers, signal: controller.signal });
          if (res.status === 200) {
            expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
            controller.abort();
            // The server notices the client is gone: nothing leaks per hostile client.
            await waitUntil(
              async () => (await metric(t.url, "app_active_event_streams")) === 0,
              `the stream ${url} ${JSON.stringify(headers)} to close after the client aborted`,
              2_000,
            );
          } else {
            await res.arrayBuffer();
          }
          await settle(`${method} ${url} → ${res.status}`, res.status);
          return;
        }
        await sendAndSettle(`${method} ${url}`, url, { method, headers }, false);
      }),
      params(300),
    );
  }, 60_000);

  it("stores nothing but acknowledged events (full scan)", async () => {
    let fromId = 0;
    for (;;) {
      const page = (await (await fetch(`${t.url}/events?from_id=${fromId}&limit=1000`)).json()) as {
        events: { id: number }[];
        has_more: boolean;
        next_from_id: number;
      };
      expect(page.events.map((e) => e.id).filter((id) => !acknowledged.has(id))).toEqual([]);
      if (!page.has_more) break;
      fromId = page.next_from_id;
    }
    expect(acknowledged.size).toBeGreaterThan(100); // the properties did reach the store
  });
});

// ---------------------------------------------------------------------------------------------
// Known bugs: each fails until the server is fixed; the properties above leave these inputs out.
// ---------------------------------------------------------------------------------------------

describe("regressions of bugs found by the properties above", () => {
  it("structured mode: data nested 10,000 deep is a 4xx, not a 500 (JSON.stringify overflows the stack)", async () => {
    const depth = 10_000;
    const body = `{"specversion":"1.0","id":"deep-1","source":"s","type":"t","subject":"bug/deep","data":${"[".repeat(depth)}${"]".repeat(depth)}}`;
    const answer = await send("/events", {
      method: "POST",
      headers: { "content-type": "application/cloudevents+json" },
      body,
    });
    await settle(describeAnswer("deep structured data", answer), answer.status);
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
      const answer = await send(path, init);
      const stored = answer.status === 200 ? claimedIds(answer.text) : [];
      await settle(describeAnswer(mode, answer), answer.status, stored);
      if (answer.status !== 400) outcomes.push(describeAnswer(mode, answer));
    }
    // ce-a_b and "a_b" are 400; "__proto__" is accepted and silently dropped.
    expect(outcomes).toEqual([]);
  });

  it("binary mode: a ce-datacontenttype header is rejected (the check after the reserved-name skip never runs)", async () => {
    const answer = await send("/events", {
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
    await settle(
      describeAnswer("ce-datacontenttype", answer),
      answer.status,
      answer.status === 200 ? claimedIds(answer.text) : [],
    );
    expect(answer.status, describeAnswer("binary mode with ce-datacontenttype", answer)).toBe(400);
  });

  it("Connect: a malformed protobuf request is invalid_argument, not internal (HTTP 500)", async () => {
    const answer = await send("/grpc.EventsDB/CreateEvent", {
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
      const answer = await send("/grpc.EventsDB/ListSubjects", {
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
    const rest = await send("/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    expect(rest.status).toBe(400);
    const answer = await send("/grpc.EventsDB/CreateEvent", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    const claimed = answer.status === 200 ? claimedIds(answer.text) : [];
    await settle(describeAnswer("invalid UTF-8", answer), answer.status, claimed);
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

// ---------------------------------------------------------------------------------------------
// Oracle material: choices that know whether they are valid
// ---------------------------------------------------------------------------------------------

type Validity = "valid" | "invalid" | "either";
const ABSENT = Symbol("absent");

interface Choice {
  /** The JSON value, ABSENT for a missing member, or a function of the run's serial (unique ids). */
  readonly value: unknown;
  readonly validity: Validity;
  /** For valid times: how the server shows them. */
  readonly display?: string;
}

interface StoredJson {
  id: number;
  source: string;
  type: string;
  subject: string;
  time: string;
  data: string;
  ce_id?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions?: Record<string, unknown>;
}

function combine(verdicts: readonly Validity[]): Validity {
  if (verdicts.includes("invalid")) return "invalid";
  return verdicts.includes("either") ? "either" : "valid";
}

const valid = (...values: unknown[]): Choice[] => values.map((value) => ({ value, validity: "valid" }));
const invalid = (...values: unknown[]): Choice[] => values.map((value) => ({ value, validity: "invalid" }));
/**
 * One of the choices, valid ones far more often: an event is accepted only when all of its dozen
 * attributes are valid, and a quarter or so of the runs should reach the store.
 */
function pick<T extends { readonly validity: Validity }>(choices: readonly T[]): fc.Arbitrary<T> {
  const weights: Record<Validity, number> = { valid: 24, invalid: 2, either: 1 };
  return fc.oneof(
    ...(["valid", "invalid", "either"] as const)
      .map((validity) => ({ validity, some: choices.filter((c) => c.validity === validity) }))
      .filter(({ some }) => some.length > 0)
      .map(({ validity, some }) => ({ weight: weights[validity], arbitrary: fc.constantFrom(...some) })),
  );
}

function isJsonMedia(type: string): boolean {
  const media = type.split(";")[0]?.trim().toLowerCase() ?? "";
  return media === "application/json" || media === "text/json" || media.endsWith("+json");
}

/** A required string attribute (source, type, subject): limits count code points. */
const requiredAttribute = pick([
  ...valid("s", "fuzz/a b", "%25_\\", "ünïcödé/ß", "x".repeat(255), "😀".repeat(255), "__proto__", " "),
  ...invalid(
    ABSENT,
    null,
    "",
    42,
    true,
    {},
    [],
    "x".repeat(256),
    "😀".repeat(256),
    "a\u0000b",
    "a\u001fb",
    "\u007f",
  ),
  ...invalid("\u0085", "\ud800", "a\udfffb"),
]);

const uniqueId = (prefix: string, length?: number) => (n: number) => {
  const id = `${prefix}${n}-`;
  return length === undefined ? id : id + (prefix === "😀" ? "😀" : "i").repeat(length - [...id].length);
};

const ceId = pick([
  ...valid(uniqueId("u-"), uniqueId("i", 255), uniqueId("😀", 255)),
  ...invalid(
    ABSENT,
    null,
    "",
    7,
    uniqueId("i", 256),
    (n: number) => `ctl-${n}\u0007`,
    (n: number) => `s-${n}\ud800`,
  ),
]);

const specversion = pick([
  ...valid("1.0"),
  ...invalid(ABSENT, null, "1", "1.0 ", " 1.0", "1.00", "v1.0", "0.3", "", 1, 1.0),
]);

const time = pick([
  { value: ABSENT, validity: "valid" },
  { value: null, validity: "valid" },
  { value: "2026-01-02T03:04:05Z", validity: "valid", display: "2026-01-02T03:04:05Z" },
  { value: "9999-12-31T23:59:59.999999999Z", validity: "valid", display: "9999-12-31T23:59:59.999999Z" },
  { value: "0001-01-01T00:00:00Z", validity: "valid", display: "0001-01-01T00:00:00Z" },
  { value: "2026-01-02t03:04:05z", validity: "valid", display: "2026-01-02T03:04:05Z" },
  { value: "2026-01-02T03:04:05+23:59", validity: "valid", display: "2026-01-01T03:05:05Z" },
  { value: "2026-01-02T03:04:05-23:59", validity: "valid", display: "2026-01-03T03:03:05Z" },
  { value: "2024-02-29T12:00:00.5+01:00", validity: "valid", display: "2024-02-29T11:00:00.5Z" },
  { value: "2000-02-29T00:00:00.000001Z", validity: "valid", display: "2000-02-29T00:00:00.000001Z" },
  // RFC 3339 allows these; the store does not (a leap second, UTC before 0001 or after 9999, a
  // space, > 9 fraction digits).
  ...invalid(
    "1998-12-31T23:59:60Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:60Z",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+00:01",
    "2026-01-02 03:04:05Z",
    "2026-01-02T03:04:05.1234567890Z",
  ),
  ...invalid(
    "",
    12345,
    "2026-01-02T03:04:05+24:00",
    "2026-01-02T03:04:05-24:00",
    "2023-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-02T24:00:00Z",
    "2026-01-02T03:60:00Z",
    "1998-12-31T23:59:61Z",
    "2026-01-02T03:04:05",
    "2026-01-02T03:04:05.Z",
    "2026-01-02",
    "NaN",
    "2026-01-02T03:04:05Z\u0000",
  ),
]);

const datacontenttype = pick([
  ...valid(ABSENT, null, "application/json", "text/plain; charset=utf-8", "application/octet-stream"),
  ...valid("application/vnd.fuzz+json", "TEXT/JSON", "application/json; charset=utf-8"),
  ...invalid("", "nonsense", "a/b/c", `application/${"x".repeat(250)}`, 42, "text/plain\u0000"),
]);

const dataschema = pick([
  ...valid(
    ABSENT,
    null,
    "https://example.com/schema.json",
    "urn:example:fuzz",
    `https://e.com/${"p".repeat(1010)}`,
  ),
  ...invalid("", "not a uri", "/relative/path", `https://e.com/${"p".repeat(1011)}`, 7),
]);

/** data / data_base64: the members to send and, given whether data is JSON, the bytes stored. */
interface DataCase {
  readonly entries: [string, unknown][];
  resolve(jsonData: boolean): { validity: Validity; bytes: Buffer };
}

const limitChecked = (bytes: Buffer): { validity: Validity; bytes: Buffer } => ({
  validity: bytes.length > MAX_EVENT_BYTES ? "invalid" : "valid",
  bytes,
});

const dataValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(
    "x".repeat(MAX_EVENT_BYTES - 2),
    "x".repeat(MAX_EVENT_BYTES - 1),
    "x".repeat(MAX_EVENT_BYTES),
    "x".repeat(MAX_EVENT_BYTES + 1),
    "",
    "héllo",
  ),
);

const base64Value = pick([
  ...valid("", "aGk=", "AAEC/w==", Buffer.alloc(MAX_EVENT_BYTES, 1).toString("base64")),
  ...valid(Buffer.alloc(MAX_EVENT_BYTES + 1, 1).toString("base64")), // size checked below
  ...invalid("aGk", "aG k=", "aGk=\n", " aGk=", "-_8=", "aGl=", "====", "a===", 42, true, {}),
]);

const dataCase: fc.Arbitrary<DataCase> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.constant<DataCase>({
      entries: [],
      resolve: () => ({ validity: "valid", bytes: Buffer.alloc(0) }),
    }),
  },
  {
    weight: 4,
    arbitrary: dataValue.map<DataCase>((value) => ({
      entries: [["data", value]],
      resolve: (jsonData) => {
        if (value === null) return { validity: "valid", bytes: Buffer.alloc(0) };
        if (jsonData) return limitChecked(utf8(JSON.stringify(value)));
        if (typeof value === "string") return limitChecked(utf8(value));
        return { validity: "invalid", bytes: Buffer.alloc(0) };
      },
    })),
  },
  {
    weight: 4,
    arbitrary: base64Value.map<DataCase>((choice) => ({
      entries: [["data_base64", choice.value]],
      resolve: () =>
        choice.validity === "valid"
          ? limitChecked(Buffer.from(choice.value as string, "base64"))
          : { validity: "invalid", bytes: Buffer.alloc(0) },
    })),
  },
  {
    weight: 1,
    arbitrary: fc.tuple(dataValue, base64Value).map<DataCase>(([value, choice]) => ({
      entries: [
        ["data", value],
        ["data_base64", choice.value],
      ],
      // Both present is an error; JSON null is absence.
      resolve: (jsonData) => {
        if (value === null && choice.validity === "valid")
          return limitChecked(Buffer.from(choice.value as string, "base64"));
        if (value === null) return { validity: "invalid", bytes: Buffer.alloc(0) };
        if (choice.value === null) {
          if (jsonData) return limitChecked(utf8(JSON.stringify(value)));
          return typeof value === "string"
            ? limitChecked(utf8(value))
            : { validity: "invalid", bytes: Buffer.alloc(0) };
        }
        return { validity: "invalid", bytes: Buffer.alloc(0) };
      },
    })),
  },
);

const RESERVED = new Set([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
]);

interface Extension {
  readonly name: string;
  readonly value: unknown;
  readonly validity: Validity;
}

const extensionName = fc.oneof(
  {
    weight: 12,
    arbitrary: fc
      .stringMatching(/^[a-z0-9]{1,20}$/)
      .filter((name) => !RESERVED.has(name))
      .map((name) => ({ name, ok: true })),
  },
  fc
    .constantFrom("a".repeat(20), "constructor", "hasownproperty", "tostring", "prototype")
    .map((name) => ({ name, ok: true })),
  fc
    .constantFrom(
      "a".repeat(21),
      "1".repeat(21),
      "a_b",
      "A",
      "valueOf",
      "a-b",
      "a.b",
      "ü",
      "",
      " a",
      "__proto__",
    )
    .map((name) => ({ name, ok: false })),
);

const extensionValue = fc.oneof(
  { weight: 12, arbitrary: fc.string({ maxLength: 20 }).map((value) => ({ value, ok: true })) },
  fc
    .constantFrom<unknown>(
      "v".repeat(4096),
      "😀".repeat(4096),
      "NaN",
      "",
      true,
      false,
      0,
      -0,
      2147483647,
      -2147483648,
    )
    .map((value) => ({ value, ok: true })),
  fc
    .constantFrom<unknown>(
      "v".repeat(4097),
      "a\u0000",
      "\u0085",
      "\ud800",
      2147483648,
      -2147483649,
      1.5,
      1e300,
      {},
      [],
      [1],
    )
    .map((value) => ({ value, ok: false })),
  fc.constant({ value: null as unknown, ok: true }),
);

const extensions: fc.Arbitrary<Extension[]> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .uniqueArray(fc.tuple(extensionName, extensionValue), { maxLength: 4, selector: ([n]) => n.name })
      .map((list) =>
        list.map(([n, v]) => ({
          name: n.name,
          value: v.value,
          // JSON null means absent: the name is then never looked at.
          validity: (v.value === null || (n.ok && v.ok) ? "valid" : "invalid") as Validity,
        })),
      ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(64, 65).map((count) =>
      Array.from({ length: count }, (_, i) => ({
        name: `e${i}`,
        value: i,
        validity: (count > 64 ? "invalid" : "valid") as Validity,
      })),
    ),
  },
);

const structuredCase = fc.record({
  specversion,
  id: ceId,
  source: requiredAttribute,
  type: requiredAttribute,
  subject: requiredAttribute,
  time,
  datacontenttype,
  dataschema,
  data: dataCase,
  extensions,
});

/** A ce-* header: what to send, what the server must decode it to, and whether it is valid. */
interface HeaderChoice {
  readonly header: ((n: number) => string) | undefined;
  readonly decoded?: (n: number) => string;
  readonly validity: Validity;
}

const hv = (header: string, decoded: string | undefined, validity: Validity): HeaderChoice => ({
  header: () => header,
  ...(decoded === undefined ? {} : { decoded: () => decoded }),
  validity,
});

const requiredHeader = pick<HeaderChoice>([
  hv("s", "s", "valid"),
  hv("a%2Fb%20c", "a/b c", "valid"),
  hv("%E2%82%AC", "€", "valid"),
  hv("%F0%9F%98%80", "😀", "valid"),
  hv("\u00e9", "\u00e9", "valid"), // a Latin-1 byte, as it arrives
  hv("%25", "%", "valid"),
  hv("x".repeat(255), "x".repeat(255), "valid"),
  hv("%E2%82%AC".repeat(255), "€".repeat(255), "valid"),
  { header: undefined, validity: "invalid" },
  hv("", undefined, "invalid"),
  hv("x".repeat(256), undefined, "invalid"),
  hv("%E2%82%AC".repeat(256), undefined, "invalid"),
  hv("%", undefined, "invalid"),
  hv("%zz", undefined, "invalid"),
  hv("%E0%A4", undefined, "invalid"),
  hv("%ED%A0%80", undefined, "invalid"),
  hv("%C0%AF", undefined, "invalid"),
  hv("%00", undefined, "invalid"),
  hv("a%0Ab", undefined, "invalid"),
  hv("%C2%85", undefined, "invalid"),
  hv("%7F", undefined, "invalid"),
]);

const binaryId = pick<HeaderChoice>([
  { header: (n) => `b-${n}`, decoded: (n) => `b-${n}`, validity: "valid" },
  { header: (n) => `%62-${n}%2F%E2%82%AC`, decoded: (n) => `b-${n}/€`, validity: "valid" },
  { header: undefined, validity: "invalid" },
  hv("", undefined, "invalid"),
  hv("%", undefined, "invalid"),
  { header: (n) => `b-${n}%00`, validity: "invalid" },
]);

const binaryTime = pick<HeaderChoice>([
  { header: undefined, validity: "valid" },
  hv("2026-01-02T03:04:05Z", undefined, "valid"),
  hv("2026-01-02T03%3A04%3A05%2B01%3A00", undefined, "valid"),
  hv("1998-12-31T23:59:60Z", undefined, "invalid"),
  hv("9999-12-31T23:59:59.999999999Z", undefined, "valid"),
  hv("0000-01-01T00:00:00Z", undefined, "invalid"),
  hv("2026-01-02T03:04:05+24:00", undefined, "invalid"),
  hv("2026-02-30T00:00:00Z", undefined, "invalid"),
  hv("yesterday", undefined, "invalid"),
  hv("%", undefined, "invalid"),
  hv("", undefined, "invalid"),
]);

const binarySpecversion = pick<HeaderChoice>([
  hv("1.0", undefined, "valid"),
  hv("1%2E0", undefined, "valid"),
  hv("1", undefined, "invalid"),
  hv("1.00", undefined, "invalid"),
  hv("", undefined, "invalid"),
  hv("%", undefined, "invalid"),
  hv("1.0%00", undefined, "invalid"),
]);

const binaryDataschema = pick<HeaderChoice>([
  { header: undefined, validity: "valid" },
  hv("https%3A%2F%2Fexample.com%2Fs.json", undefined, "valid"),
  hv("urn:x:y", undefined, "valid"),
  hv("not%20a%20uri", undefined, "invalid"),
  hv("%", undefined, "invalid"),
]);

const binaryExtension = fc
  .tuple(
    fc.oneof(
      fc
        .stringMatching(/^[a-z0-9]{1,20}$/)
        .filter((name) => !RESERVED.has(name) && name !== "datacontenttype")
        .map((name) => ({ name, ok: true })),
      // Header names are case-insensitive: Node lower-cases them, so these are valid names.
      fc
        .constantFrom("UPPER", "Ext", "A".repeat(20), "constructor", "tostring")
        .map((name) => ({ name, ok: true })),
      fc
        .constantFrom("a".repeat(21), "a_b", "a.b", "a-b", "", "__proto__", "datacontenttype")
        .map((name) => ({ name, ok: false })),
    ),
    fc.constantFrom<[string, string | undefined]>(
      ["v", "v"],
      ["", ""],
      ["a%20b", "a b"],
      ["%F0%9F%98%80", "😀"],
      ["true", "true"],
      ["v".repeat(4096), "v".repeat(4096)],
      ["v".repeat(4097), undefined],
      ["%", undefined],
      ["%ED%A0%80", undefined],
      ["%00", undefined],
      ["%C2%9F", undefined],
    ),
  )
  .map(([{ name, ok }, [header, decoded]]) => ({
    name,
    header,
    decoded,
    validity: (ok && decoded !== undefined ? "valid" : "invalid") as Validity,
  }));

const binaryContentType = pick<{ value: string | undefined; validity: Validity }>([
  { value: undefined, validity: "valid" },
  { value: "text/plain", validity: "valid" },
  { value: "application/json", validity: "valid" },
  { value: "application/octet-stream", validity: "valid" },
  { value: "text/plain; charset=utf-8", validity: "valid" },
  { value: "image/png", validity: "valid" },
  { value: "nonsense", validity: "invalid" },
  { value: "a/b/c", validity: "invalid" },
  { value: `application/${"x".repeat(250)}`, validity: "invalid" },
]);

const binaryCase = fc.record({
  attributes: fc.record({
    specversion: binarySpecversion,
    id: binaryId,
    source: requiredHeader,
    type: requiredHeader,
    subject: requiredHeader,
    time: binaryTime,
    dataschema: binaryDataschema,
  }),
  extensions: fc.uniqueArray(binaryExtension, { maxLength: 3, selector: (e) => e.name.toLowerCase() }),
  contentType: binaryContentType,
  body: fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.constantFrom(0, MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1).map((n) => Buffer.alloc(n, 0x41)),
  ),
});

// ---------------------------------------------------------------------------------------------
// Connect material
// ---------------------------------------------------------------------------------------------

const UNARY_METHODS = [
  "CreateEvent",
  "CreateEvents",
  "GetEventByID",
  "GetHistoricEventsFromSubject",
  "DeleteFromSubject",
  "ListSubjects",
] as const;

/** int64 fields in Connect JSON: strings or numbers, in and out of range. */
const int64Json = fc.oneof(
  fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
  fc.constantFrom<unknown>(
    0,
    1,
    -1,
    1.5,
    1e300,
    "1e3",
    "0x10",
    "",
    " 1",
    "NaN",
    "9007199254740993",
    true,
    null,
    [],
    {},
  ),
);

const connectMessage: fc.Arbitrary<[string, unknown][]> = fc.array(
  fc.oneof(
    fc.tuple(
      fc.constantFrom("source", "type", "subject", "id", "time", "datacontenttype", "dataschema", "prefix"),
      nastyValue,
    ),
    fc.tuple(fc.constantFrom("id", "fromId", "from_id", "limit"), int64Json),
    fc.tuple(fc.constantFrom("recursive"), fc.constantFrom<unknown>(true, false, "true", 1, null)),
    fc.tuple(fc.constantFrom("data"), fc.oneof(fc.constantFrom("aGk=", "aGk", "-_8", "", "!!"), nastyValue)),
    fc.tuple(
      fc.constantFrom("extensions"),
      fc.oneof(fc.dictionary(nastyString, nastyValue, { maxKeys: 3 }), nastyValue),
    ),
    fc.tuple(
      fc.constantFrom("events"),
      fc.oneof(
        fc.array(fc.constantFrom<unknown>({ source: "s", type: "t", subject: "fuzz/c" }, null, {}, 1), {
          maxLength: 25,
        }),
        nastyValue,
      ),
    ),
    fc.tuple(fc.string({ maxLength: 10 }), nastyValue),
  ),
  { maxLength: 6 },
);

const streamMessage: fc.Arbitrary<[string, unknown][]> = fc.array(
  fc.oneof(
    fc.tuple(fc.constantFrom("subject", "type"), nastyValue),
    fc.tuple(fc.constantFrom("fromId", "limit"), int64Json),
    fc.tuple(fc.constantFrom("recursive"), fc.constantFrom<unknown>(true, "x", null)),
  ),
  { maxLength: 4 },
);

function expectNoInternalCode(answer: Answer): void {
  let code: unknown;
  try {
    code = (JSON.parse(answer.text) as { code?: unknown }).code;
  } catch {
    return;
  }
  expect(["internal", "unknown"], describeAnswer("Connect", answer)).not.toContain(code);
}

/** Reads a Connect stream until its end-stream message (returned) or `ms` of silence (then aborts). */
async function readEndStream(
  res: Response,
  controller: AbortController,
  ms: number,
): Promise<string | undefined> {
  if (res.body === null) return undefined;
  const reader = res.body.getReader();
  let buffer = Buffer.alloc(0);
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      reader.read(),
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), ms);
      }),
    ]);
    clearTimeout(timer);
    if (next === "timeout" || next.done) {
      controller.abort();
      await reader.read().catch(() => {});
      return undefined;
    }
    buffer = Buffer.concat([buffer, Buffer.from(next.value)]);
    while (buffer.length >= 5) {
      const flags = buffer.readUInt8(0);
      const length = buffer.readUInt32BE(1);
      if (buffer.length < 5 + length) break;
      const message = buffer.subarray(5, 5 + length).toString("utf8");
      buffer = buffer.subarray(5 + length);
      if ((flags & 0x02) !== 0) {
        controller.abort();
        return message;
      }
    }
  }
}

const clientString = fc.oneof({ weight: 3, arbitrary: nastyString }, fc.constantFrom("s", "fuzz/grpc", "t"));
const int64 = fc.oneof(
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.constantFrom(0n, 1n, -1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)),
);
const int32 = fc.oneof(fc.integer(), fc.constantFrom(0, -1, 1, 1000, 1001, 2147483647, -2147483648));
const createRequest: fc.Arbitrary<CreateInit> = fc.record(
  {
    source: clientString,
    type: clientString,
    subject: clientString,
    id: clientString,
    time: fc.oneof(
      clientString,
      fc.constantFrom("2026-01-02T03:04:05Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:60Z"),
    ),
    datacontenttype: clientString,
    dataschema: clientString,
    data: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.constantFrom(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1).map((n) => new Uint8Array(n)),
    ),
    extensions: fc.dictionary(clientString, clientString, { maxKeys: 3 }),
  },
  { requiredKeys: [] },
);
const filterRequest: fc.Arbitrary<FilterInit> = fc.record(
  { subject: clientString, type: clientString, fromId: int64, recursive: fc.boolean(), limit: int32 },
  { requiredKeys: [] },
);

interface CreateInit {
  source?: string;
  type?: string;
  subject?: string;
  id?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  data?: Uint8Array;
  extensions?: Record<string, string>;
}

interface FilterInit {
  subject?: string;
  type?: string;
  fromId?: bigint;
  recursive?: boolean;
  limit?: number;
}

type ClientCall =
  | { method: "createEvent"; request: CreateInit }
  | { method: "createEvents"; request: { events: CreateInit[] } }
  | { method: "getEventByID"; request: { id: bigint } }
  | {
      method: "getHistoricEventsFromSubject" | "deleteFromSubject" | "streamEventsFromSubject";
      request: FilterInit;
    }
  | { method: "listSubjects"; request: { prefix: string } };

const clientCall: fc.Arbitrary<ClientCall> = fc.oneof(
  createRequest.map((request) => ({ method: "createEvent" as const, request })),
  fc
    .array(createRequest, { maxLength: MAX_BATCH_EVENTS + 2 })
    .map((events) => ({ method: "createEvents" as const, request: { events } })),
  int64.map((id) => ({ method: "getEventByID" as const, request: { id } })),
  fc
    .tuple(
      fc.constantFrom(
        "getHistoricEventsFromSubject",
        "deleteFromSubject",
        "streamEventsFromSubject" as const,
      ),
      filterRequest,
    )
    .map(([method, request]): ClientCall => ({ method, request })),
  clientString.map((prefix) => ({ method: "listSubjects" as const, request: { prefix } })),
);

/** Calls the method; returns the ids a create acknowledged. Streams are cancelled after 30 ms. */
async function invoke(peer: ConnectPeer, call: ClientCall): Promise<number[]> {
  const client = peer.client;
  switch (call.method) {
    case "createEvent":
      return [Number((await client.createEvent(call.request)).id)];
    case "createEvents":
      return (await client.createEvents(call.request)).ids.map(Number);
    case "getEventByID":
      await client.getEventByID(call.request);
      return [];
    case "getHistoricEventsFromSubject":
      await client.getHistoricEventsFromSubject(call.request);
      return [];
    case "deleteFromSubject":
      await client.deleteFromSubject(call.request);
      return [];
    case "listSubjects":
      await client.listSubjects(call.request);
      return [];
    case "streamEventsFromSubject": {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 30);
      try {
        for await (const _ of client.streamEventsFromSubject(call.request, { signal: controller.signal })) {
          // read until cancelled
        }
      } catch (error) {
        if (!(controller.signal.aborted && ConnectError.from(error).code === Code.Canceled)) throw error;
      } finally {
        clearTimeout(timer);
      }
      return [];
    }
  }
}

const stringifyBig = (value: unknown) =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? `<${v.length} bytes>` : v,
  ) ?? "";

// ---------------------------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------------------------

const queryKey = fc.oneof(
  fc.constantFrom("subject", "subject", "recursive", "type", "from_id", "limit", "prefix", "id", "format"),
  fc.constantFrom(
    "access_token",
    "",
    "subject[]",
    "subject[a]",
    "%00",
    "SUBJECT",
    "limit%00",
    "__proto__",
    "constructor",
  ),
);

const queryValue = fc.oneof(
  fc.constantFrom(
    "",
    "0",
    "1",
    "-1",
    "1.5",
    "1e3",
    "0x10",
    "+5",
    " 5",
    "9007199254740991",
    "9007199254740993",
  ),
  fc.constantFrom("99999999999999999999", "1000", "1001", "NaN", "Infinity", "true", "false", "TRUE", "yes"),
  fc.constantFrom(
    "%00",
    "%ZZ",
    "%",
    "%E0%A4",
    "%ED%A0%80",
    "%25",
    "_",
    "%5C",
    "fuzz",
    "fuzz%2F1",
    "a/b/",
    "/",
  ),
  fc.constantFrom("simple", "cloudevents", "x".repeat(1025), "x".repeat(5000)),
  fc
    .string({ maxLength: 20 })
    .filter((s) => s.isWellFormed())
    .map((s) => encodeURIComponent(s)),
  fc.string({ unit: "binary-ascii", maxLength: 20 }).map((s) => s.replace(/[#\0\r\n ]/g, "")),
);

/** `k=v&k2&=v…`: repeated keys, bare keys, empty pairs. */
const queryString: fc.Arbitrary<string> = fc.oneof(
  fc
    .array(fc.tuple(queryKey, fc.option(queryValue, { nil: undefined, freq: 6 })), { maxLength: 6 })
    .map((pairs) => pairs.map(([k, v]) => (v === undefined ? k : `${k}=${v}`)).join("&")),
  fc.constantFrom(
    "&&&",
    "=&=",
    "a=1=2",
    "subject=a&subject=b&subject=",
    `${"subject=x&".repeat(101)}recursive`,
  ),
);
