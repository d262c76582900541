import { invalidArgument } from "../../errors.js";
import type { EventFilter } from "../../events/event.js";

/** Query string values as Fastify parses them (a repeated key gives an array). */
export type Query = Record<string, string | string[] | undefined>;

/** The value of a parameter that may appear once. */
export function single(value: string | string[] | undefined, name: string): string | undefined {
  if (Array.isArray(value)) throw invalidArgument(`${name} may be given once`);
  return value;
}

/** A positive event id from a path or query parameter. */
export function parseId(value: unknown, name: string): number {
  if (typeof value !== "string" || !/^\d{1,16}$/.test(value))
    throw invalidArgument(`${name} must be a positive integer`);
  const n = Number(value);
  if (n < 1 || !Number.isSafeInteger(n)) throw invalidArgument(`${name} must be a positive integer`);
  return n;
}

/** A non-negative integer parameter, `fallback` when absent or empty. */
export function parseInteger(value: string | string[] | undefined, name: string, fallback: number): number {
  const text = single(value, name);
  if (text === undefined || text === "") return fallback;
  if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw invalidArgument(`${name} must be a non-negative integer`);
  }
  return Number(text);
}

/** `recursive`, `recursive=true` and `=1` are true; `false`, `0` false. */
export function parseBoolean(value: string | string[] | undefined, name: string): boolean {
  const text = single(value, name);
  if (text === undefined || text === "false" || text === "0") return false;
  if (text === "" || text === "true" || text === "1") return true;
  throw invalidArgument(`${name} must be true or false`);
}

/** `subject` (may repeat: events of any of them), `recursive`, `type`. */
export function parseFilter(query: Query): EventFilter {
  const subject = query.subject;
  const type = single(query.type, "type");
  return {
    subjects: subject === undefined ? [] : Array.isArray(subject) ? subject : subject === "" ? [] : [subject],
    recursive: parseBoolean(query.recursive, "recursive"),
    type: type === "" ? undefined : type,
  };
}
