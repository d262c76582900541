import { randomUUID } from "node:crypto";
import { type Connection, request, usageError } from "./http.js";
import { readData } from "./io.js";

export interface PublishOptions {
  readonly subject: string;
  readonly type: string;
  readonly source: string;
  readonly file?: string;
  readonly ce?: boolean;
  readonly id?: string;
  readonly contentType?: string;
}

/** application/json, text/json and every `+json` type (as the server decides it). */
export function isJsonContentType(contentType: string): boolean {
  const semi = contentType.indexOf(";");
  const media = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  return media === "application/json" || media === "text/json" || media.endsWith("+json");
}

/**
 * `eventsdb publish`: without `--ce` the simple JSON of Events DB (no CloudEvents id, no
 * datacontenttype); with `--ce` a structured CloudEvent whose (source, id) makes a retry store
 * nothing new. Returns the server id (the stored event's id for a repeat).
 */
export async function publish(
  conn: Connection,
  data: string | undefined,
  options: PublishOptions,
): Promise<number> {
  if (!options.ce && options.id !== undefined) throw usageError("--id needs --ce");
  if (!options.ce && options.contentType !== undefined) {
    throw usageError("--content-type needs --ce (the simple format carries no datacontenttype)");
  }
  const bytes = await readData(data, options.file);
  let contentType: string;
  let body: Record<string, unknown>;
  if (options.ce) {
    const datacontenttype =
      options.contentType ?? (data === undefined ? "application/octet-stream" : "text/plain");
    body = {
      specversion: "1.0",
      id: options.id ?? randomUUID(),
      source: options.source,
      type: options.type,
      subject: options.subject,
      datacontenttype,
    };
    const json = isJsonContentType(datacontenttype) ? parseJson(bytes) : undefined;
    if (json !== undefined && json.value !== null) body.data = json.value;
    else if (bytes.length > 0) body.data_base64 = bytes.toString("base64");
    contentType = "application/cloudevents+json";
  } else {
    body = {
      source: options.source,
      type: options.type,
      subject: options.subject,
      data: bytes.toString("base64"),
    };
    contentType = "application/json";
  }
  const response = await request(conn, "/events", {
    method: "POST",
    headers: { "content-type": contentType },
    body: JSON.stringify(body),
  });
  const { id } = (await response.json()) as { id: number };
  return id;
}

/** The JSON value of UTF-8 bytes, or undefined when they are not JSON (then sent as data_base64). */
function parseJson(bytes: Buffer): { value: unknown } | undefined {
  if (bytes.length === 0) return undefined;
  try {
    return { value: JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) };
  } catch {
    return undefined;
  }
}
