/**
 * Where things are in a JSON text, without parsing it: the byte range of each element of an array
 * and of each member of an object. Event data travels as the text it was sent in, so that numbers
 * like `12345678901234567890`, `1E400`, `-0` or `1.0` and the sender's spacing survive byte for
 * byte; `JSON.parse` + `JSON.stringify` would change all of them.
 *
 * Every function here expects a text that `JSON.parse` has already accepted (RFC 8259); on other
 * input the ranges are meaningless, but every loop still ends at the end of the buffer. Nothing
 * recurses, so depth costs no stack. JSON's structural characters are ASCII, and no byte of a
 * multi-byte UTF-8 sequence is ASCII, so scanning the UTF-8 bytes is safe.
 */

/** A byte range [start, end) of a JSON text. */
export interface Span {
  readonly start: number;
  readonly end: number;
}

/** One member of an object: its name (escapes decoded, as `JSON.parse` reads it) and where it lies. */
export interface Member {
  readonly name: string;
  /** The offset of the name's opening quote. */
  readonly nameStart: number;
  readonly value: Span;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/** RFC 8259 §2: the four whitespace characters (space, tab, line feed, carriage return). */
export function isJsonWhitespace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

/** The offset of the first non-whitespace byte at or after `i` (or the end). */
export function skipWhitespace(text: Buffer, i: number, end = text.length): number {
  while (i < end && isJsonWhitespace(text[i])) i++;
  return i;
}

/** The whole text's value without the whitespace around it. */
export function valueSpan(text: Buffer): Span {
  let end = text.length;
  while (end > 0 && isJsonWhitespace(text[end - 1])) end--;
  return { start: skipWhitespace(text, 0, end), end };
}

/** The offset just past the string whose opening quote is at `start`. */
function stringEnd(text: Buffer, start: number): number {
  // Short strings (names, most attributes) byte by byte: cheaper than a native call each.
  const short = Math.min(text.length, start + 64);
  let i = start + 1;
  for (; i < short; i++) {
    const c = text[i];
    if (c === BACKSLASH) i++;
    else if (c === QUOTE) return i + 1;
  }
  // Long ones (base64 data) natively: the next quote not preceded by an odd run of backslashes.
  while (i < text.length) {
    const quote = text.indexOf(QUOTE, i);
    if (quote === -1) return text.length;
    let backslashes = 0;
    while (text[quote - 1 - backslashes] === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    i = quote + 1;
  }
  return text.length;
}

/** The offset just past the value that starts at `start` (no whitespace before it). */
export function valueEnd(text: Buffer, start: number): number {
  const first = text[start];
  if (first === QUOTE) return stringEnd(text, start);
  if (first === OPEN_ARRAY || first === OPEN_OBJECT) {
    let depth = 0;
    for (let i = start; i < text.length; ) {
      const c = text[i];
      if (c === QUOTE) {
        i = stringEnd(text, i);
        continue;
      }
      if (c === OPEN_ARRAY || c === OPEN_OBJECT) depth++;
      else if ((c === CLOSE_ARRAY || c === CLOSE_OBJECT) && --depth === 0) return i + 1;
      i++;
    }
    return text.length;
  }
  // A number, true, false or null: up to the next delimiter.
  let i = start;
  while (i < text.length) {
    const c = text[i];
    if (c === COMMA || c === CLOSE_ARRAY || c === CLOSE_OBJECT || isJsonWhitespace(c)) break;
    i++;
  }
  return i;
}

/** The elements of the array at `span` (default: the whole text), in order. */
export function arrayElements(text: Buffer, span: Span = valueSpan(text)): Span[] {
  const out: Span[] = [];
  let i = skipWhitespace(text, span.start + 1, span.end); // past `[`
  if (text[i] === CLOSE_ARRAY) return out;
  while (i < span.end) {
    const end = valueEnd(text, i);
    out.push({ start: i, end });
    i = skipWhitespace(text, end, span.end);
    if (text[i] !== COMMA) break; // `]`
    i = skipWhitespace(text, i + 1, span.end);
  }
  return out;
}

/** The members of the object at `span` (default: the whole text), in order, repeats included. */
export function objectMembers(text: Buffer, span: Span = valueSpan(text)): Member[] {
  const out: Member[] = [];
  eachMember(text, span, (nameStart, nameEnd, value) => {
    out.push({ name: memberName(text, nameStart, nameEnd), nameStart, value });
  });
  return out;
}

/**
 * The value of member `name` of the object at `span`: the last one when the name repeats, which
 * is the one `JSON.parse` keeps (ECMA-262 §25.5.1, NOTE: "lexically preceding values for the same
 * key shall be overwritten"). Undefined when absent.
 */
export function memberValue(text: Buffer, name: string, span: Span = valueSpan(text)): Span | undefined {
  const wanted = Buffer.from(name, "utf8");
  let found: Span | undefined;
  eachMember(text, span, (nameStart, nameEnd, value) => {
    if (sameName(text, nameStart, nameEnd, wanted, name)) found = value;
  });
  return found;
}

/**
 * Whether the name at [start, end) (quotes included) is `name`. Names without escapes are compared
 * as bytes in place: no string or slice per member on the ingest path.
 */
function sameName(text: Buffer, start: number, end: number, wanted: Buffer, name: string): boolean {
  const length = end - start - 2;
  let escaped = false;
  let equal = length === wanted.length;
  for (let k = 0; k < length; k++) {
    const c = text[start + 1 + k];
    if (c === BACKSLASH) {
      escaped = true;
      break;
    }
    if (equal && c !== wanted[k]) equal = false;
  }
  return escaped ? memberName(text, start, end) === name : equal;
}

/** Calls `fn` with each member's name range (quotes included) and value range, in order. */
function eachMember(
  text: Buffer,
  span: Span,
  fn: (nameStart: number, nameEnd: number, value: Span) => void,
): void {
  let i = skipWhitespace(text, span.start + 1, span.end); // past `{`
  if (text[i] === CLOSE_OBJECT) return;
  while (i < span.end) {
    const nameStart = i;
    const nameEnd = stringEnd(text, nameStart);
    i = skipWhitespace(text, nameEnd, span.end);
    if (text[i] !== COLON) return;
    const start = skipWhitespace(text, i + 1, span.end);
    const end = valueEnd(text, start);
    fn(nameStart, nameEnd, { start, end });
    i = skipWhitespace(text, end, span.end);
    if (text[i] !== COMMA) return; // `}`
    i = skipWhitespace(text, i + 1, span.end);
  }
}

function memberName(text: Buffer, start: number, end: number): string {
  const raw = text.subarray(start, end);
  // Names with escapes (`"d\u0061ta"`) are decoded the way JSON.parse decodes them.
  return raw.includes(BACKSLASH)
    ? (JSON.parse(raw.toString("utf8")) as string)
    : raw.toString("utf8", 1, raw.length - 1);
}
