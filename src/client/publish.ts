import { randomUUID } from "node:crypto";
import { embeddableJson } from "../events/formats.js";
import { isJsonContentType } from "../events/validate.js";
import { usageError } from "./http.js";
import { readData } from "./io.js";
import type { EventsDbClient } from "./lib/client.js";

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
  client: EventsDbClient,
  argument: string | undefined,
  options: PublishOptions,
): Promise<number> {
  if (!options.ce && options.id !== undefined) throw usageError("--id needs --ce");
  if (!options.ce && options.contentType !== undefined) {
    throw usageError("--content-type needs --ce (the simple format carries no datacontenttype)");
  }
  const bytes = await readData(argument, options.file);
  if (!options.ce) {
    return client.append({
      source: options.source,
      type: options.type,
      subject: options.subject,
      data: bytes,
    });
  }
  const datacontenttype =
    options.contentType ?? (argument === undefined ? "application/octet-stream" : "text/plain");
  const body: Record<string, unknown> = {
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
  if (json !== undefined)
    return client.appendCloudEvent(`${JSON.stringify(body).slice(0, -1)},"data":${json}}`);
  if (bytes.length > 0) body.data_base64 = bytes.toString("base64");
  return client.appendCloudEvent(JSON.stringify(body));
}
