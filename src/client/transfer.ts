import { once } from "node:events";
import fs from "node:fs";
import type { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { arrayElements, objectMembers } from "../events/json-text.js";
import { CHAIN_ATTRIBUTES } from "../events/validate.js";
import { ClientError, EXIT_USAGE, refusedWith, usageError } from "./http.js";
import { finish, write } from "./io.js";
import type { EventsDbClient } from "./lib/client.js";
import { EventsDbError } from "./lib/errors.js";
import type { EventQuery } from "./lib/types.js";
import { progress } from "./progress.js";

/** The server's page limit: one page is all the export holds in memory. */
const PAGE_LIMIT = 1000;

export interface ExportOptions {
  readonly filter: EventQuery;
  readonly fromId: number;
  /** A file; undefined = stdout. */
  readonly output: string | undefined;
  /** The whole hash chain as ChainLinkJson lines (what `verify --file` reads), not CloudEvents. */
  readonly chain?: boolean;
}

/**
 * `eventsdb export`: NDJSON of structured CloudEvents, one page of `GET /events` at a time
 * (`Accept: application/cloudevents-batch+json`, cursor in `X-Next-From-Id` while `X-Has-More`),
 * waiting for the output to drain. With `chain`, the whole chain instead, tombstones included, one
 * ChainLinkJson per line from `GET /events/chain`: a chain is only verifiable from its first link,
 * so filters are refused. Returns the number of events (links) written.
 */
export async function exportEvents(client: EventsDbClient, options: ExportOptions): Promise<number> {
  const chain = options.chain === true;
  if (chain) refuseFilters(options);
  const out = options.output === undefined ? process.stdout : await openOutput(options.output);
  let failure: Error | undefined;
  const onError = (error: Error) => {
    failure ??= error;
  };
  out.on("error", onError);
  const check = () => {
    if (failure !== undefined) {
      const reason = (failure as NodeJS.ErrnoException).code ?? failure.message;
      throw new ClientError(`cannot write ${options.output ?? "stdout"}: ${reason}`);
    }
  };
  // A bar needs a total: the newest matching id (a few small requests, only at a terminal).
  const total = process.stderr.isTTY ? (await client.newestId(options.filter)) - options.fromId : 0;
  const bar = progress("exporting", total);
  let count = 0;
  try {
    for await (const page of chain ? chainLines(client) : eventLines(client, options)) {
      for (const line of page.lines) {
        check();
        await write(out, Buffer.concat([line, NEWLINE])).catch((error: Error) => onError(error));
      }
      count += page.lines.length;
      bar.update(page.position - options.fromId, count);
    }
    await finish(out);
    check();
  } finally {
    bar.stop();
    // The error listener stays: a late EPIPE must not become an uncaught 'error' event.
    if (out !== process.stdout) out.destroy();
  }
  return count;
}

/** Lines to write and the id they reach. */
interface ExportPage {
  readonly lines: readonly Buffer[];
  readonly position: number;
}

async function* eventLines(client: EventsDbClient, options: ExportOptions): AsyncGenerator<ExportPage> {
  const pages = client.cloudEventPages({ ...options.filter, fromId: options.fromId, limit: PAGE_LIMIT });
  for await (const page of pages) {
    yield { lines: batchElements(Buffer.from(page.json, "utf8")).map(oneLine), position: page.nextFromId };
  }
}

async function* chainLines(client: EventsDbClient): AsyncGenerator<ExportPage> {
  // JSON.stringify escapes line breaks: every link is one line.
  for await (const page of client.chainPages({ fromId: 0, limit: PAGE_LIMIT })) {
    yield {
      lines: page.links.map((link) => Buffer.from(JSON.stringify(link), "utf8")),
      position: page.nextFromId,
    };
  }
}

function refuseFilters(options: ExportOptions): void {
  const { subject, recursive, type } = options.filter;
  const subjects = subject === undefined ? [] : typeof subject === "string" ? [subject] : subject;
  if (subjects.length > 0 || recursive === true || type !== undefined || options.fromId !== 0) {
    throw usageError(
      "--chain exports the whole chain (it verifies only from its first event): drop --subject, --recursive, --type and --from-id",
    );
  }
}

const NEWLINE = Buffer.from("\n");

/**
 * The events of a CloudEvents batch as the server wrote them, each its own JSON text: JSON data
 * sits in them as the stored text, and parsing and writing them again would change it (`1.0`,
 * `-0`, big integers, spacing).
 */
export function batchElements(body: Buffer): Buffer[] {
  let events: unknown;
  try {
    events = JSON.parse(body.toString("utf8"));
  } catch {
    throw new ClientError("the server answered a page that is not valid JSON");
  }
  if (!Array.isArray(events)) throw new ClientError("the server answered a page that is not a JSON array");
  return arrayElements(body).map((span) => body.subarray(span.start, span.end));
}

/**
 * One NDJSON line for an event. A line break can only be JSON whitespace inside embedded data (the
 * rest is written by JSON.stringify, which escapes them); such data goes as `data_base64` of the
 * same bytes, which import stores unchanged.
 */
export function oneLine(event: Buffer): Buffer {
  if (!event.includes(0x0a) && !event.includes(0x0d)) return event;
  const data = objectMembers(event).findLast((member) => member.name === "data");
  if (data === undefined)
    throw new ClientError("the server sent an event with a line break outside its data");
  const base64 = event.subarray(data.value.start, data.value.end).toString("base64");
  const line = Buffer.concat([
    event.subarray(0, data.nameStart),
    Buffer.from(`"data_base64":"${base64}"`),
    event.subarray(data.value.end),
  ]);
  if (line.includes(0x0a) || line.includes(0x0d)) {
    throw new ClientError("the server sent an event with a line break outside its data");
  }
  return line;
}

async function openOutput(file: string): Promise<fs.WriteStream> {
  const stream = fs.createWriteStream(file);
  try {
    await once(stream, "open");
  } catch (error) {
    throw usageError(`cannot write ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  return stream;
}

export interface ImportOptions {
  /** A file; undefined (or `-` on the command line) = stdin. */
  readonly input: string | undefined;
  /** Events per POST (1…1000). */
  readonly batch: number;
}

export interface ImportResult {
  readonly imported: number;
  /** How many were stored anew; undefined when the store's newest id could not be read. */
  readonly fresh: number | undefined;
}

/** A batch is also sent early once its JSON reaches this size (the server's body limit is 16 MiB). */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * `eventsdb import`: NDJSON of structured CloudEvents → batched `POST /events`
 * (`application/cloudevents-batch+json`). Idempotent: the server stores an event whose (source, id)
 * it has already once. Each line is checked before its batch goes out; a bad line stops the import
 * with its number (earlier batches are stored; a re-run skips them).
 *
 * New ids are larger than every id that existed before their commit, and a repeat answers the
 * stored id: with the newest id before the import (and the ids answered so far) as a watermark,
 * an answered id above it is new.
 */
export async function importEvents(client: EventsDbClient, options: ImportOptions): Promise<ImportResult> {
  let input: Readable;
  let size = 0;
  if (options.input === undefined) {
    if (process.stdin.isTTY) throw usageError("no input: give a FILE or pipe NDJSON on stdin");
    input = process.stdin;
  } else {
    try {
      size = (await fs.promises.stat(options.input)).size;
    } catch (error) {
      throw usageError(
        `cannot read ${options.input}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      );
    }
    input = fs.createReadStream(options.input);
  }
  let watermark: number | undefined;
  try {
    watermark = await client.newestId();
  } catch (error) {
    // A token without read access can still import; it just cannot tell new from repeated.
    if (!refusedWith(error, 403)) throw error;
  }

  const bar = progress("importing", size);
  let imported = 0;
  let fresh = 0;
  let bytesRead = 0;
  let lineNumber = 0;
  let batch: string[] = [];
  let batchLines: number[] = [];
  let batchBytes = 0;

  const flush = async () => {
    if (batch.length === 0) return;
    const ids = await postBatch(client, `[${batch.join(",")}]`, batchLines);
    imported += ids.length;
    if (watermark !== undefined) {
      const bound = watermark;
      fresh += new Set(ids.filter((id) => id > bound)).size;
      watermark = Math.max(bound, ...ids);
    }
    batch = [];
    batchLines = [];
    batchBytes = 0;
    bar.update(bytesRead, imported);
  };

  const add = async (line: string) => {
    lineNumber++;
    const text = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (text.trim() === "") return;
    const event = withoutChainAttributes(text, checkLine(text, lineNumber));
    batch.push(event);
    batchLines.push(lineNumber);
    batchBytes += event.length + 1;
    if (batch.length >= options.batch || batchBytes >= MAX_BATCH_BYTES) await flush();
  };

  try {
    const decoder = new StringDecoder("utf8");
    let rest = "";
    try {
      for await (const chunk of input) {
        const bytes = chunk as Buffer;
        bytesRead += bytes.length;
        rest += decoder.write(bytes);
        let start = 0;
        for (let end = rest.indexOf("\n"); end !== -1; end = rest.indexOf("\n", start)) {
          const line = rest.slice(start, end);
          start = end + 1;
          await add(line);
        }
        rest = rest.slice(start);
      }
    } catch (error) {
      if (error instanceof ClientError) throw error;
      throw new ClientError(`cannot read ${options.input ?? "stdin"}: ${(error as Error).message}`);
    }
    rest += decoder.end();
    if (rest !== "") await add(rest);
    await flush();
  } finally {
    bar.stop();
    if (input !== process.stdin) input.destroy();
  }
  return { imported, fresh: watermark === undefined ? undefined : fresh };
}

/** A line must be a structured CloudEvent the server can take; anything else is a usage error. */
function checkLine(text: string, lineNumber: number): Record<string, unknown> {
  const bad = (why: string) => usageError(`line ${lineNumber}: ${why}`);
  let event: unknown;
  try {
    event = JSON.parse(text);
  } catch {
    throw bad("not valid JSON");
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) throw bad("not a JSON object");
  const fields = event as Record<string, unknown>;
  if (fields.specversion !== "1.0") throw bad('specversion must be "1.0" (a structured CloudEvent)');
  for (const name of ["id", "source", "type", "subject"]) {
    const value = fields[name];
    if (name === "subject" && (value === undefined || value === null)) continue; // optional (no subject)
    if (typeof value !== "string" || value === "") throw bad(`${name} must be a non-empty string`);
  }
  const hasData = fields.data !== undefined && fields.data !== null;
  const hasBase64 = fields.data_base64 !== undefined && fields.data_base64 !== null;
  if (hasData && hasBase64) throw bad("data and data_base64 must not both be present");
  if (hasBase64 && typeof fields.data_base64 !== "string") throw bad("data_base64 must be a string");
  return fields;
}

const CHAIN_NAMES: ReadonlySet<string> = new Set(Object.values(CHAIN_ATTRIBUTES));

/**
 * The event without the chain attributes an export carries (eventsdbhash, eventsdbprevhash,
 * eventsdbsignature): the server sets them, refuses them on append, and the imported event gets
 * its own place in the target's chain. The other members keep their text (JSON data as stored).
 */
export function withoutChainAttributes(text: string, fields: Record<string, unknown>): string {
  if (!Object.keys(fields).some((name) => CHAIN_NAMES.has(name))) return text;
  const bytes = Buffer.from(text, "utf8");
  const kept = objectMembers(bytes)
    .filter((member) => !CHAIN_NAMES.has(member.name))
    .map((member) => bytes.subarray(member.nameStart, member.value.end).toString("utf8"));
  return `{${kept.join(",")}}`;
}

/** Appends one batch (the library retries 429/5xx: batches are idempotent); a refused event is reported by its line. */
async function postBatch(client: EventsDbClient, body: string, lines: readonly number[]): Promise<number[]> {
  try {
    return await client.appendBatch(body);
  } catch (error) {
    // "event 3: type is required" → the line it came from; nothing of this batch was stored.
    if (!(error instanceof EventsDbError) || error.status !== 400 || error.error === undefined) throw error;
    const at = /^event (\d+): /.exec(error.error.message);
    const line = at === null ? undefined : lines[Number(at[1])];
    if (at === null || line === undefined) throw error;
    throw new ClientError(`line ${line}: ${error.message.slice(at[0].length)}`, EXIT_USAGE);
  }
}
