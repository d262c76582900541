import type { Writable } from "node:stream";
import { memberValue } from "../events/json-text.js";
import { write } from "./io.js";
import type { EventsDbClient } from "./lib/client.js";

export interface GetOptions {
  /** Only the decoded data bytes. */
  readonly raw?: boolean;
  /** The structured CloudEvent instead of the simple JSON. */
  readonly ce?: boolean;
}

/** `eventsdb get <id>`: the event as pretty JSON, or with `--raw` its data bytes exactly. */
export async function get(
  client: EventsDbClient,
  id: number,
  options: GetOptions,
  out: Writable,
): Promise<void> {
  if (options.ce) {
    await write(out, `${prettyCloudEvent(Buffer.from(await client.getCloudEvent(id), "utf8"))}\n`);
    return;
  }
  const event = await client.get(id);
  if (options.raw) await write(out, Buffer.from(event.data, "base64"));
  else await write(out, `${JSON.stringify(event, null, 2)}\n`);
}

/**
 * A structured CloudEvent indented for reading, its JSON `data` as the server sent it: the stored
 * text, which parsing and writing it again would change (`1.0`, big integers).
 */
export function prettyCloudEvent(text: Buffer): string {
  const event = JSON.parse(text.toString("utf8")) as Record<string, unknown>;
  const data = memberValue(text, "data");
  if (event.data_base64 !== undefined || data === undefined) return JSON.stringify(event, null, 2);
  delete event.data;
  const attributes = JSON.stringify(event, null, 2);
  return `${attributes.slice(0, -2)},\n  "data": ${text.toString("utf8", data.start, data.end)}\n}`;
}

/** `eventsdb subjects`: one subject per line, read a page at a time (printed as each page comes). */
export async function subjects(
  client: EventsDbClient,
  prefix: string | undefined,
  out: Writable,
): Promise<void> {
  for await (const page of client.subjectPages({ prefix })) {
    if (page.subjects.length > 0) await write(out, page.subjects.map((subject) => `${subject}\n`).join(""));
  }
}
