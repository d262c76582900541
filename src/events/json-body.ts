import { isUtf8 } from "node:buffer";
import { invalidArgument } from "../errors.js";
import { MAX_JSON_DEPTH, nestedDeeperThan } from "./formats.js";

/**
 * The one check of a JSON request body, whatever carries it (REST, Connect, gRPC-Web JSON): valid
 * UTF-8 — a lenient decoder would store U+FFFD where the client sent something else (RFC 8259 §8.1
 * requires UTF-8) — and nested at most MAX_JSON_DEPTH deep. Returns the text to parse.
 */
export function jsonBodyText(body: Uint8Array): string {
  if (!isUtf8(body)) throw invalidArgument("the request body is not valid UTF-8");
  if (nestedDeeperThan(body, MAX_JSON_DEPTH)) {
    throw invalidArgument(`the request body nests JSON deeper than ${MAX_JSON_DEPTH} levels`);
  }
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8");
}

/** A JSON request body, checked and parsed (REST). */
export function parseJsonBody(body: Uint8Array): unknown {
  if (body.length === 0) throw invalidArgument("the request body is empty");
  const text = jsonBodyText(body);
  try {
    return JSON.parse(text);
  } catch {
    throw invalidArgument("the request body is not valid JSON");
  }
}

/**
 * The text of a JSON protobuf message (Connect, gRPC-Web and gRPC JSON), for protobuf-es to parse:
 * the checks of every JSON body, and no `__proto__` key. Empty is the empty message, as in binary.
 */
export function jsonMessageText(bytes?: Uint8Array): string {
  if (bytes === undefined || bytes.length === 0) return "{}";
  const text = jsonBodyText(bytes);
  refuseProtoKeys(text);
  return text;
}

/**
 * Refuses a `__proto__` member anywhere in JSON text meant for protobuf-es: it reads a JSON map
 * (`extensions`) into a plain object, where that key sets the prototype, so the entry would vanish
 * without a word instead of meeting the attribute-name check. The key can only be spelled plainly
 * or with \u escapes, so only texts holding either are parsed here.
 */
function refuseProtoKeys(text: string): void {
  if (!text.includes("__proto__") && !text.includes("\\u")) return;
  try {
    JSON.parse(text, (key, value: unknown) => {
      if (key === "__proto__") throw invalidArgument('"__proto__" is not a valid field or attribute name');
      return value;
    });
  } catch (error) {
    // Not JSON at all: the protobuf JSON reader says so in its own words.
    if (!(error instanceof SyntaxError)) throw error;
  }
}
