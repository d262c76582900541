import fc from "fast-check";
import { objectText, utf8 } from "./arbitraries.js";
import { MAX_EVENT_BYTES } from "./settings.js";

/**
 * Oracle material: CloudEvents attributes as choices that know whether they are valid, so that
 * a property can say which events must be accepted and which rejected, and what an accepted one
 * reads back as.
 */

export type Validity = "valid" | "invalid" | "either";
export const ABSENT = Symbol("absent");

export interface Choice {
  /** The JSON value, ABSENT for a missing member, or a function of the run's serial (unique ids). */
  readonly value: unknown;
  readonly validity: Validity;
  /** For valid times: how the server shows them. */
  readonly display?: string;
}

export interface StoredJson {
  id: number;
  source: string;
  type: string;
  /** Absent for an event without a subject. */
  subject?: string;
  time: string;
  data: string;
  ce_id?: string;
  datacontenttype?: string;
  dataschema?: string;
  extensions?: Record<string, unknown>;
}

export function combine(verdicts: readonly Validity[]): Validity {
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

export function isJsonMedia(type: string): boolean {
  const media = type.split(";")[0]?.trim().toLowerCase() ?? "";
  return media === "application/json" || media === "text/json" || media.endsWith("+json");
}

/** Values of a string attribute: limits count code points. */
const ATTRIBUTE_VALUES: readonly unknown[] = [
  "s",
  "fuzz/a b",
  "%25_\\",
  "ünïcödé/ß",
  "x".repeat(255),
  "😀".repeat(255),
  "__proto__",
  " ",
];
/** Never valid in a string attribute, required or not. */
const BAD_ATTRIBUTE_VALUES: readonly unknown[] = [
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
  "\u0085",
  "\ud800",
  "a\udfffb",
];

/** A required string attribute (source, type). */
const requiredAttribute = pick([
  ...valid(...ATTRIBUTE_VALUES),
  ...invalid(ABSENT, null, ...BAD_ATTRIBUTE_VALUES),
]);

/** The subject: optional in CloudEvents (absent or JSON null = none), but never empty. */
const optionalAttribute = pick([
  ...valid(...ATTRIBUTE_VALUES, ABSENT, null),
  ...invalid(...BAD_ATTRIBUTE_VALUES),
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

/** 0.3 is read and stored as 1.0 (see {@link structuredExpectation} for what it changes). */
const specversion = pick([
  ...valid("1.0", "0.3"),
  ...invalid(ABSENT, null, "1", "1.0 ", " 1.0", "1.00", "v1.0", "0.3 ", "0.2", "", 1, 1.0, 0.3),
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

/** Set by the server on CloudEvents reads (the event's chain fields), so never valid on append. */
const CHAIN_NAMES = ["eventsdbhash", "eventsdbprevhash", "eventsdbsignature"] as const;

const RESERVED = new Set<string>([
  "specversion",
  "id",
  "source",
  "type",
  "subject",
  "time",
  "datacontenttype",
  "dataschema",
  "data",
  // 0.3's own attributes: never generated as extensions, since a 0.3 event reads them otherwise.
  "schemaurl",
  "datacontentencoding",
  // The chain's attributes on reads: refused on append (below, as invalid names).
  ...CHAIN_NAMES,
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
      ...CHAIN_NAMES,
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

export type StructuredCase = typeof structuredCase extends fc.Arbitrary<infer T> ? T : never;

export const structuredCase = fc.record({
  specversion,
  id: ceId,
  source: requiredAttribute,
  type: requiredAttribute,
  subject: optionalAttribute,
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

const headerValues: HeaderChoice[] = [
  hv("s", "s", "valid"),
  hv("a%2Fb%20c", "a/b c", "valid"),
  hv("%E2%82%AC", "€", "valid"),
  hv("%F0%9F%98%80", "😀", "valid"),
  hv("\u00e9", "\u00e9", "valid"), // a Latin-1 byte, as it arrives
  hv("%25", "%", "valid"),
  hv("x".repeat(255), "x".repeat(255), "valid"),
  hv("%E2%82%AC".repeat(255), "€".repeat(255), "valid"),
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
];

/** ce-source, ce-type: required. */
const requiredHeader = pick<HeaderChoice>([...headerValues, { header: undefined, validity: "invalid" }]);

/** ce-subject: optional (no header = no subject), but never empty. */
const optionalHeader = pick<HeaderChoice>([...headerValues, { header: undefined, validity: "valid" }]);

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

/** 0.3: its dataschema header is ce-schemaurl (the property test sends it so). */
const binarySpecversion = pick<HeaderChoice>([
  hv("1.0", undefined, "valid"),
  hv("1%2E0", undefined, "valid"),
  hv("0.3", undefined, "valid"),
  hv("0.2", undefined, "invalid"),
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
        .constantFrom("a".repeat(21), "a_b", "a.b", "a-b", "", "__proto__", "datacontenttype", ...CHAIN_NAMES)
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

export const binaryCase = fc.record({
  attributes: fc.record({
    specversion: binarySpecversion,
    id: binaryId,
    source: requiredHeader,
    type: requiredHeader,
    subject: optionalHeader,
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

/** What a structured case sends, and what the store must make of it. */
export interface StructuredExpectation {
  /** The event's JSON text. */
  readonly text: string;
  readonly verdict: Validity;
  /** When it is accepted: the attributes as read back (undefined = absent), data, extensions. */
  readonly expected: {
    readonly id: unknown;
    readonly source: unknown;
    readonly type: unknown;
    readonly subject: unknown;
    readonly datacontenttype: unknown;
    readonly dataschema: unknown;
    /** How the time reads back, for the cases that know it (absent: the server's clock). */
    readonly time: string | undefined;
    readonly data: Buffer;
    /** Through JSON, as the server saw them (-0 is 0). */
    readonly extensions: unknown;
  };
}

/** The JSON of a structured case (`n` makes its id unique) and its verdict. */
export function structuredExpectation(c: StructuredCase, n: number): StructuredExpectation {
  const sent = (choice: Choice) => (typeof choice.value === "function" ? choice.value(n) : choice.value);
  const entries: [string, unknown][] = [];
  const put = (name: string, choice: Choice) => {
    if (choice.value !== ABSENT) entries.push([name, sent(choice)]);
  };
  // CloudEvents 0.3 names dataschema `schemaurl` and has no data_base64 (which it refuses).
  const v03 = c.specversion.value === "0.3";
  put("specversion", c.specversion);
  put("id", c.id);
  put("source", c.source);
  put("type", c.type);
  put("subject", c.subject);
  put("time", c.time);
  put("datacontenttype", c.datacontenttype);
  put(v03 ? "schemaurl" : "dataschema", c.dataschema);
  for (const [name, value] of c.data.entries) entries.push([name, value]);
  const base64In03: Validity =
    v03 && c.data.entries.some(([name]) => name === "data_base64") ? "invalid" : "valid";
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
    base64In03,
    ...c.extensions.map((e) => e.validity),
  ]);
  const readBack = (choice: Choice) => {
    const value = sent(choice);
    return value === ABSENT || value === null ? undefined : value;
  };
  return {
    text: objectText(entries),
    verdict,
    expected: {
      id: readBack(c.id),
      source: readBack(c.source),
      type: readBack(c.type),
      subject: readBack(c.subject),
      datacontenttype: readBack(c.datacontenttype),
      dataschema: readBack(c.dataschema),
      time: c.time.display,
      data: data.bytes,
      extensions: JSON.parse(
        JSON.stringify(
          Object.fromEntries(c.extensions.filter((e) => e.value !== null).map((e) => [e.name, e.value])),
        ),
      ),
    },
  };
}
