import { randomUUID } from "node:crypto";
import { embeddableJson } from "../events/formats.js";
import { isJsonContentType } from "../events/validate.js";
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

/**
 * `eventsdb publish`: without `--ce` the simple JSON of Events DB (no CloudEvents id, no
 * datacontenttype); with `--ce` a structured CloudEvent whose (source, id) makes a retry store
 * nothing new. Returns the server id (the stored event's id for a repeat).
 */
export async function publish(
  conn: Connection,
  argument: string | undefined,
  options: PublishOptions,
): Promise<number> {
  if (!options.ce && options.id !== undefined) throw usageError("--id needs --ce");
  if (!options.ce && options.contentType !== undefined) {
    throw usageError("--content-type needs --ce (the simple format carries no datacontenttype)");
  }
  const bytes = await readData(argument, options.file);
  let contentType: string;
  let body: Record<string, unknown>;
  /** The `data` member's JSON text, added to the body as it is. */
  let data = "";
  if (options.ce) {
    const datacontenttype =
      options.contentType ?? (argument === undefined ? "application/octet-stream" : "text/plain");
    body = {
      specversion: "1.0",
      id: options.id ?? randomUUID(),
      source: options.source,
      type: options.type,
      subject: options.subject,
      datacontenttype,
    };
    // JSON data goes as its own text, so the server stores these very bytes (a parsed and
    // re-serialized value would turn `1.0` into `1`); what cannot be embedded goes as base64.
    const json = isJsonContentType(datacontenttype) ? embeddableJson(bytes) : undefined;
    if (json !== undefined) data = `"data":${json}`;
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
    body: data === "" ? JSON.stringify(body) : `${JSON.stringify(body).slice(0, -1)},${data}}`,
  });
  const { id } = (await response.json()) as { id: number };
  return id;
}
