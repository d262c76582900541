import type { Writable } from "node:stream";
import { type Connection, request, type SimpleEvent } from "./http.js";
import { write } from "./io.js";

export interface GetOptions {
  /** Only the decoded data bytes. */
  readonly raw?: boolean;
  /** The structured CloudEvent instead of the simple JSON. */
  readonly ce?: boolean;
}

/** `eventsdb get <id>`: the event as pretty JSON, or with `--raw` its data bytes exactly. */
export async function get(conn: Connection, id: number, options: GetOptions, out: Writable): Promise<void> {
  const response = await request(conn, `/events/${id}`, {
    headers: { accept: options.ce ? "application/cloudevents+json" : "application/json" },
  });
  const event = (await response.json()) as SimpleEvent;
  if (options.raw) await write(out, Buffer.from(event.data, "base64"));
  else await write(out, `${JSON.stringify(event, null, 2)}\n`);
}

/** `eventsdb subjects`: one subject per line. */
export async function subjects(conn: Connection, prefix: string | undefined, out: Writable): Promise<void> {
  const params = new URLSearchParams();
  if (prefix !== undefined) params.set("prefix", prefix);
  const response = await request(conn, "/subjects", { params });
  for (const subject of (await response.json()) as string[]) await write(out, `${subject}\n`);
}
