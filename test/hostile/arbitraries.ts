import fc from "fast-check";
import { MAX_BATCH_EVENTS, MAX_BODY_BYTES, MAX_EVENT_BYTES } from "./settings.js";

/** Arbitraries of hostile input: strings, JSON bodies, content types, ce-* headers, query strings. */

export const utf8 = (text: string) => Buffer.from(text, "utf8");

/** Strings that break parsers, validators and SQL: limits, controls, lone surrogates, NaN-likes. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
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
export const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
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
export function objectText(entries: readonly (readonly [string, unknown])[]): string {
  return `{${entries.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value) ?? "null"}`).join(",")}}`;
}

const SIMPLE_BASE: [string, unknown][] = [
  ["source", "fuzz"],
  ["type", "t"],
  ["subject", "fuzz/1"],
];
const CE_BASE: [string, unknown][] = [["specversion", "1.0"], ["id", "fuzz-id"], ...SIMPLE_BASE];

/** An event-shaped JSON object: a valid base (or none) with random fields added or overridden. */
export const eventText: fc.Arbitrary<string> = fc
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
export function paddedSimpleEvent(length: number): Buffer {
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
export const restBody: fc.Arbitrary<Buffer> = fc
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

export const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  fc.constantFrom(...CONTENT_TYPES),
  fc.constant(undefined),
  fc.string({ unit: "binary-ascii", maxLength: 60 }).map(headerSafe),
);

/** Values for ce-* headers: percent-encoding edge cases, controls, Latin-1, long values. */
export const ceHeaderValue: fc.Arbitrary<string> = fc.oneof(
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

export const ceHeaderName: fc.Arbitrary<string> = fc.oneof(
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

/** Buffers print as a short preview in fast-check's counterexamples. */
export function shown(bytes: Buffer): Buffer {
  const preview = JSON.stringify(bytes.subarray(0, 160).toString("latin1"));
  return Object.defineProperty(bytes, fc.toStringMethod, {
    value: () => `<${bytes.length} bytes ${preview}${bytes.length > 160 ? "…" : ""}>`,
  });
}

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
export const queryString: fc.Arbitrary<string> = fc.oneof(
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
