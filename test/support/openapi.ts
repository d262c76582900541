import { readFileSync } from "node:fs";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsPlugin from "ajv-formats";
import { parse } from "yaml";

/**
 * The contract of openapi.yaml, checked against real responses: `expectMatches` finds the response
 * object documented for (path, method, status) and checks the Content-Type, the documented headers
 * and the body against its schema (JSON Schema 2020-12, the document's `jsonSchemaDialect`).
 *
 * An undocumented status fails; `default` is deliberately not a fallback, since it documents the
 * shape of unexpected errors, not statuses a client may rely on. Every match is recorded, so a test
 * can assert that each documented operation and status was exercised.
 */

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"] as const;
/** The base URI under which the component schemas are registered in Ajv. */
const BASE = "https://eventsdb.invalid/openapi.json";

type Json = Record<string, unknown>;

interface MediaTypeObject {
  readonly schema?: unknown;
}

interface HeaderObject {
  readonly required?: boolean;
  readonly schema?: unknown;
}

interface ResponseObject {
  readonly description: string;
  readonly headers?: Record<string, unknown>;
  readonly content?: Record<string, MediaTypeObject>;
}

/** A parsed media type: `text/plain; version=0.0.4` → type `text/plain`, params {version: "0.0.4"}. */
interface MediaType {
  readonly type: string;
  readonly params: ReadonlyMap<string, string>;
}

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function parseMediaType(value: string): MediaType {
  const [type = "", ...rest] = value.split(";");
  const params = new Map<string, string>();
  for (const part of rest) {
    const eq = part.indexOf("=");
    if (eq === -1) continue;
    const name = part.slice(0, eq).trim().toLowerCase();
    const raw = part.slice(eq + 1).trim();
    params.set(name, raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw);
  }
  return { type: type.trim().toLowerCase(), params };
}

/** True when `actual` is covered by the documented key: same type (or wildcard), key's params present. */
function mediaTypeMatches(documented: string, actual: MediaType): boolean {
  const doc = parseMediaType(documented);
  const [docMain, docSub] = doc.type.split("/");
  const [main, sub] = actual.type.split("/");
  const typeOk =
    doc.type === "*/*" || (docSub === "*" && docMain === main) || (docMain === main && docSub === sub);
  if (!typeOk) return false;
  for (const [name, value] of doc.params) {
    if (actual.params.get(name)?.toLowerCase() !== value.toLowerCase()) return false;
  }
  return true;
}

/** Rewrites `#/components/schemas/X` to the absolute URI of the registered component. */
function absolutizeRefs(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(absolutizeRefs);
  if (!isObject(value)) return value;
  const out: Json = {};
  for (const [key, child] of Object.entries(value)) {
    if (key === "$ref" && typeof child === "string" && child.startsWith("#/components/schemas/")) {
      out[key] = `${BASE}#/$defs/${child.slice("#/components/schemas/".length)}`;
    } else {
      out[key] = absolutizeRefs(child);
    }
  }
  return out;
}

/** `X-Next-From-Id: 5` → 5 for an integer schema; header values are strings on the wire. */
function coerceHeader(value: string, schema: unknown): unknown {
  const type = isObject(schema) ? schema.type : undefined;
  if ((type === "integer" || type === "number") && /^-?\d+(\.\d+)?$/.test(value)) return Number(value);
  if (type === "boolean" && (value === "true" || value === "false")) return value === "true";
  return value;
}

function describeErrors(errors: readonly ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || "(root)"} ${e.message ?? e.keyword}`).join("; ");
}

export class OpenApiContract {
  readonly document: Json;
  /** `GET /events` for each operation matched at least once. */
  readonly coveredOperations = new Set<string>();
  /** `GET /events 200` for each documented response matched at least once. */
  readonly coveredResponses = new Set<string>();
  readonly #ajv: Ajv2020;
  readonly #validators = new Map<string, ValidateFunction>();

  constructor(file: string | URL = new URL("../../openapi.yaml", import.meta.url)) {
    const document: unknown = parse(readFileSync(file, "utf8"));
    if (!isObject(document) || !isObject(document.paths)) throw new Error(`${String(file)}: no paths`);
    this.document = document;
    // Strict about keywords and formats; `not: {required: [...]}` (valid 2020-12) trips the type and
    // required checks, so those two stay off.
    this.#ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false, allErrors: true });
    addFormatsPlugin.default(this.#ajv);
    const components = isObject(document.components) ? document.components : {};
    const schemas = isObject(components.schemas) ? components.schemas : {};
    this.#ajv.addSchema({ $id: BASE, $defs: absolutizeRefs(schemas) });
  }

  /** Every documented operation as `METHOD /path`. */
  operations(): string[] {
    const out: string[] = [];
    for (const [path, item] of Object.entries(this.#paths())) {
      if (!isObject(item)) continue;
      for (const method of METHODS) if (isObject(item[method])) out.push(`${method.toUpperCase()} ${path}`);
    }
    return out;
  }

  /** Every documented response as `METHOD /path STATUS` (`default` included). */
  responses(): string[] {
    const out: string[] = [];
    for (const operation of this.operations()) {
      const [method = "", path = ""] = operation.split(" ");
      for (const status of Object.keys(this.#responsesOf(path, method))) out.push(`${operation} ${status}`);
    }
    return out;
  }

  /**
   * Asserts the response is documented for (path template, method): its status is listed, its
   * Content-Type is one of the documented media types, documented headers that are present (and
   * required ones) match their schemas, and `body` (parsed JSON, or the text for non-JSON types)
   * matches the media type's schema. Throws an Error describing the first mismatch.
   */
  expectMatches(path: string, method: string, response: Response, body: unknown): void {
    const where = `${method.toUpperCase()} ${path} → ${response.status}`;
    const responses = this.#responsesOf(path, method);
    const status = String(response.status);
    const rangeKey = `${status[0]}XX`;
    const key = status in responses ? status : rangeKey in responses ? rangeKey : undefined;
    if (key === undefined) {
      throw new Error(
        `${where}: status ${status} is not documented (documented: ${Object.keys(responses).join(", ")}); body: ${JSON.stringify(body)}`,
      );
    }
    const documented = this.#resolve(responses[key], "responses");
    if (!isObject(documented) || typeof documented.description !== "string") {
      throw new Error(`${where}: the response object is malformed`);
    }
    const responseObject = documented as unknown as ResponseObject;

    for (const [name, raw] of Object.entries(responseObject.headers ?? {})) {
      const header = this.#resolve(raw, "headers") as HeaderObject;
      const value = response.headers.get(name);
      if (value === null) {
        if (header.required === true) throw new Error(`${where}: required header ${name} is missing`);
        continue;
      }
      if (header.schema !== undefined) {
        const validate = this.#validator(`${where} header ${name}`, header.schema);
        if (!validate(coerceHeader(value, header.schema))) {
          throw new Error(
            `${where}: header ${name}: ${JSON.stringify(value)} ${describeErrors(validate.errors)}`,
          );
        }
      }
    }

    const contentType = response.headers.get("content-type");
    const content = responseObject.content;
    if (content === undefined || Object.keys(content).length === 0) {
      if (body !== undefined && body !== "") {
        throw new Error(`${where}: no content is documented, got ${contentType ?? "a body"}`);
      }
    } else {
      if (contentType === null) throw new Error(`${where}: the response has no Content-Type`);
      const actual = parseMediaType(contentType);
      const candidates = Object.keys(content).filter((documentedType) =>
        mediaTypeMatches(documentedType, actual),
      );
      // The most specific documented type wins: exact over `type/*` over `*/*`, parameters count.
      candidates.sort((a, b) => specificity(b) - specificity(a));
      const mediaKey = candidates[0];
      if (mediaKey === undefined) {
        throw new Error(
          `${where}: Content-Type ${contentType} is not documented (documented: ${Object.keys(content).join(", ")})`,
        );
      }
      const schema = content[mediaKey]?.schema;
      // A response to HEAD has the headers of the GET but no content (RFC 9110 §9.3.2).
      if (schema !== undefined && method.toUpperCase() !== "HEAD") {
        const validate = this.#validator(`${where} ${mediaKey}`, schema);
        if (!validate(body)) {
          throw new Error(
            `${where} (${mediaKey}): body does not match the schema: ${describeErrors(validate.errors)}; body: ${JSON.stringify(body)}`,
          );
        }
      }
    }
    const operation = `${method.toUpperCase()} ${path}`;
    this.coveredOperations.add(operation);
    this.coveredResponses.add(`${operation} ${key}`);
  }

  /**
   * Errors of a request body against the documented schema of its media type, or undefined. A string
   * schema with `contentMediaType: application/json` also has its `contentSchema` checked on the
   * parsed text (Ajv treats both as annotations).
   */
  requestBodyErrors(path: string, method: string, mediaType: string, body: unknown): string | undefined {
    const operation = this.#operation(path, method);
    const requestBody = this.#resolve(operation.requestBody, "requestBodies");
    const content = isObject(requestBody) && isObject(requestBody.content) ? requestBody.content : {};
    const media = content[mediaType];
    if (!isObject(media)) return `${mediaType} is not a documented request body type`;
    const schema = media.schema ?? {};
    const where = `${method.toUpperCase()} ${path} request ${mediaType}`;
    const validate = this.#validator(where, schema);
    if (!validate(body)) return describeErrors(validate.errors);
    if (
      isObject(schema) &&
      schema.contentMediaType === "application/json" &&
      schema.contentSchema !== undefined &&
      typeof body === "string"
    ) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        return "the text is not JSON (contentMediaType: application/json)";
      }
      const validateContent = this.#validator(`${where} contentSchema`, schema.contentSchema);
      if (!validateContent(parsed)) return `contentSchema: ${describeErrors(validateContent.errors)}`;
    }
    return undefined;
  }

  #paths(): Json {
    return this.document.paths as Json;
  }

  #operation(path: string, method: string): Json {
    const item = this.#paths()[path];
    if (!isObject(item)) throw new Error(`path ${path} is not documented`);
    const operation = item[method.toLowerCase()];
    if (!isObject(operation)) throw new Error(`${method.toUpperCase()} ${path} is not documented`);
    return operation;
  }

  #responsesOf(path: string, method: string): Json {
    const responses = this.#operation(path, method).responses;
    if (!isObject(responses)) throw new Error(`${method.toUpperCase()} ${path} documents no responses`);
    return responses;
  }

  /** Follows a `$ref` to `#/components/<section>/<name>` (chains too). */
  #resolve(value: unknown, section: string): unknown {
    let current = value;
    for (let depth = 0; isObject(current) && typeof current.$ref === "string"; depth++) {
      const ref = current.$ref;
      const prefix = `#/components/${section}/`;
      if (depth > 10 || !ref.startsWith(prefix)) throw new Error(`cannot resolve ${ref}`);
      const components = this.document.components;
      const group = isObject(components) ? components[section] : undefined;
      current = isObject(group) ? group[ref.slice(prefix.length)] : undefined;
      if (current === undefined) throw new Error(`${ref} does not exist`);
    }
    return current;
  }

  #validator(key: string, schema: unknown): ValidateFunction {
    let validate = this.#validators.get(key);
    if (validate === undefined) {
      const rewritten = absolutizeRefs(schema);
      validate = this.#ajv.compile(isObject(rewritten) ? rewritten : {});
      this.#validators.set(key, validate);
    }
    return validate;
  }
}

function specificity(documented: string): number {
  const { type, params } = parseMediaType(documented);
  const base = type === "*/*" ? 0 : type.endsWith("/*") ? 1 : 2;
  return base * 100 + params.size;
}
