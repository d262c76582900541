import fc from "fast-check";

/**
 * Arbitrary JSON texts (RFC 8259) as a sender might write them, not as JSON.stringify would: numbers
 * beyond double precision, exponents, `-0`, `1.0`; strings with every kind of escape and non-ASCII;
 * whitespace (space, tab, LF, CR) between tokens; objects with escaped and repeated member names.
 */

const ws = fc.array(fc.constantFrom(" ", "\t", "\n", "\r"), { maxLength: 3 }).map((chars) => chars.join(""));

const digits = (min: number, max: number) =>
  fc.array(fc.constantFrom(..."0123456789"), { minLength: min, maxLength: max }).map((d) => d.join(""));

export const jsonNumber: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "0",
    "-0",
    "1.0",
    "-0.0",
    "12345678901234567890",
    "-98765432109876543210987654321",
    "1E400",
    "-1e-400",
    "0.1000000000000000055511151231257827",
    "9007199254740993",
    "1e+2",
    "2E-0",
  ),
  fc
    .tuple(
      fc.boolean(),
      fc.oneof(
        fc.constant("0"),
        fc.tuple(fc.constantFrom(..."123456789"), digits(0, 25)).map(([a, b]) => a + b),
      ),
      fc.option(
        digits(1, 20).map((d) => `.${d}`),
        { nil: "" },
      ),
      fc.option(
        fc
          .tuple(fc.constantFrom("e", "E"), fc.constantFrom("", "+", "-"), digits(1, 4))
          .map((p) => p.join("")),
        { nil: "" },
      ),
    )
    .map(([negative, int, frac, exp]) => `${negative ? "-" : ""}${int}${frac}${exp}`),
);

const stringPart = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 4 }).map((s) => JSON.stringify(s).slice(1, -1)),
  fc.constantFrom(
    '\\"',
    "\\\\",
    "\\/",
    "\\b",
    "\\f",
    "\\n",
    "\\r",
    "\\t",
    "\\u0000",
    "\\u00e9",
    "\\uD83D\\uDE00",
  ),
  fc.constantFrom("\\ud800", "😀", "é", "\u2028", "𝄞", "\u007f"),
  fc.integer({ min: 0, max: 0xffff }).map((n) => `\\u${n.toString(16).padStart(4, "0")}`),
);

export const jsonString: fc.Arbitrary<string> = fc
  .array(stringPart, { maxLength: 6 })
  .map((parts) => `"${parts.join("")}"`);

const memberName = fc.oneof(
  { weight: 3, arbitrary: jsonString },
  { weight: 1, arbitrary: fc.constantFrom('"data"', '"d\\u0061ta"', '"a"', '"\\u0061"', '"specversion"') },
);

export const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    jsonNumber,
    jsonString,
    fc.constantFrom("true", "false", "null"),
    fc
      .tuple(ws, fc.array(fc.tuple(ws, tie("value"), ws), { maxLength: 4 }))
      .map(([empty, items]) =>
        items.length === 0 ? `[${empty}]` : `[${items.map(([a, v, b]) => a + v + b).join(",")}]`,
      ),
    fc
      .tuple(ws, fc.array(fc.tuple(ws, memberName, ws, ws, tie("value"), ws), { maxLength: 4 }))
      .map(([empty, members]) =>
        members.length === 0
          ? `{${empty}}`
          : `{${members.map(([a, k, b, c, v, d]) => `${a}${k}${b}:${c}${v}${d}`).join(",")}}`,
      ),
  ),
})).value;

/** A JSON text with whitespace around it too. */
export const paddedJsonText: fc.Arbitrary<string> = fc
  .tuple(ws, jsonText, ws)
  .map(([a, text, b]) => a + text + b);
