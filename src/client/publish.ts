import { randomUUID } from "node:crypto";
import { embeddableJson } from "../events/formats.js";
import { isJsonContentType } from "../events/validate.js";
import { usageError } from "./http.js";
import { readData } from "./io.js";
import type { EventsDbClient } from "./lib/client.js";
import type { AppendOptions, Precondition } from "./lib/types.js";

export interface PublishOptions {
  readonly subject: string;
  readonly type: string;
  readonly source: string;
  readonly file?: string;
  readonly ce?: boolean;
  readonly id?: string;
  readonly contentType?: string;
  readonly ifPristine?: boolean;
  readonly ifPopulated?: boolean;
  readonly ifOnEvent?: number;
}

/**
 * `eventsdb publish`: without `--ce` the simple JSON of Events DB (no CloudEvents id, no
 * datacontenttype); with `--ce` a structured CloudEvent whose (source, id) makes a retry store
 * nothing new. --if-pristine, --if-populated, --if-on-event make it conditional on the subject
 * (a failed condition is the server's 409, exit code 1). Returns the server id (the stored event's
 * id for a repeat).
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
  const call: AppendOptions = { preconditions: preconditionsOf(options) };
  if (!options.ce) {
    return client.append(
      { source: options.source, type: options.type, subject: options.subject, data: bytes },
      call,
    );
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
    return client.appendCloudEvent(`${JSON.stringify(body).slice(0, -1)},"data":${json}}`, call);
  if (bytes.length > 0) body.data_base64 = bytes.toString("base64");
  return client.appendCloudEvent(JSON.stringify(body), call);
}

/** The preconditions the --if-… flags ask for, on the published subject. */
function preconditionsOf(options: PublishOptions): Precondition[] {
  const { subject } = options;
  if (options.ifPristine) return [{ kind: "pristine", subject }];
  if (options.ifPopulated) return [{ kind: "populated", subject }];
  if (options.ifOnEvent !== undefined) return [{ kind: "on_event", subject, id: options.ifOnEvent }];
  return [];
}
