import { isUtf8 } from "node:buffer";
import fs from "node:fs";
import type { Writable } from "node:stream";
import { ClientError, usageError } from "./http.js";
import { interruptSignal, write } from "./io.js";
import type { EventsDbClient } from "./lib/client.js";
import type { EventQuery, StoredEvent } from "./lib/types.js";

export interface TailOptions {
  readonly filter: EventQuery;
  /** Start after this id; undefined = live only (after the newest matching event). */
  readonly fromId: number | undefined;
  /** Print each event's JSON instead of a summary line. */
  readonly json: boolean;
  /** Keeps the last printed id; an existing file wins over fromId. */
  readonly stateFile: string | undefined;
  /** Reconnect when nothing (not even a heartbeat) arrived for this long; 0 = never. */
  readonly idleTimeoutMs: number;
}

/** The state file is rewritten at most this often (and on exit). */
const STATE_INTERVAL_MS = 200;

/**
 * `eventsdb tail`: the library's live stream (`GET /events/stream`), one line per event, in id
 * order. After a drop the library reconnects with `Last-Event-ID` (no gap, no repeat); each
 * reconnection is one notice on stderr. SIGINT/SIGTERM and a closed stdout end it normally; the
 * state file is flushed on the way.
 */
export async function tail(
  client: EventsDbClient,
  options: TailOptions,
  out: Writable,
  err: Writable,
): Promise<void> {
  const interrupt = interruptSignal();
  // A closed pipe (`| head`) ends the tail as quietly as Ctrl-C.
  const outputGone = new AbortController();
  const onOutputError = () => outputGone.abort();
  out.on("error", onOutputError);
  const stop = AbortSignal.any([interrupt.signal, outputGone.signal]);
  const state = options.stateFile === undefined ? undefined : new StateFile(options.stateFile);
  try {
    const cursor =
      state?.read() ?? options.fromId ?? (await client.newestId(options.filter, { signal: stop }));
    state?.save(cursor);
    state?.flush();
    const stream = client.stream({
      ...options.filter,
      fromId: cursor,
      signal: stop,
      idleTimeoutMs: options.idleTimeoutMs,
      onReconnect: ({ reason, delayMs, lastId }) => {
        err.write(
          `eventsdb: ${reason}; reconnecting in ${(delayMs / 1000).toFixed(1)} s after id ${lastId}\n`,
        );
      },
    });
    for await (const message of stream) {
      state?.check();
      await write(out, `${options.json ? message.data : summary(message.id, message.event)}\n`, stop);
      state?.save(message.id);
    }
  } catch (error) {
    if (!stop.aborted) throw error;
  } finally {
    interrupt.dispose(); // the output's error listener stays: a late EPIPE must not crash the exit
    state?.flush();
  }
}

/** `<id> <time> <subject> <type> <data preview>`; `-` for an event without a subject. */
function summary(id: number, event: StoredEvent): string {
  return `${id} ${event.time} ${event.subject ?? "-"} ${event.type} ${preview(event.data)}`.trimEnd();
}

const PREVIEW_CHARS = 80;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters make data binary here.
const BINARY = /[\u0000-\u0008\u000e-\u001f\u007f-\u009f]/;

/** Text data on one line, cut at 80 characters; binary data as its size. */
export function preview(base64: string | undefined): string {
  const bytes = Buffer.from(base64 ?? "", "base64");
  if (bytes.length === 0) return "";
  const text = bytes.toString("utf8");
  if (!isUtf8(bytes) || BINARY.test(text)) return `<${bytes.length} bytes>`;
  const chars = [...text.replace(/\s+/g, " ").trim()];
  return chars.length > PREVIEW_CHARS ? `${chars.slice(0, PREVIEW_CHARS - 1).join("")}…` : chars.join("");
}

/**
 * The last printed id in a file, replaced atomically (temp file + rename) at most every 200 ms
 * and on flush(), so a crash leaves either the old or the new id, never a torn one.
 */
class StateFile {
  readonly #path: string;
  readonly #temp: string;
  #pending: number | undefined;
  #written: number | undefined;
  #lastWrite = 0;
  #timer: NodeJS.Timeout | undefined;
  #error: unknown;

  constructor(path: string) {
    this.#path = path;
    this.#temp = `${path}.${process.pid}.tmp`;
  }

  /** The saved id, or undefined when the file does not exist or is empty. */
  read(): number | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.#path, "utf8").trim();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new ClientError(`cannot read the state file ${this.#path}: ${(error as Error).message}`);
    }
    if (text === "") return undefined;
    if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(Number(text))) {
      throw usageError(`the state file ${this.#path} does not hold an event id`);
    }
    return Number(text);
  }

  save(id: number): void {
    this.#pending = id;
    if (this.#timer !== undefined) return;
    const wait = Math.max(0, this.#lastWrite + STATE_INTERVAL_MS - Date.now());
    this.#timer = setTimeout(() => {
      try {
        this.flush();
      } catch (error) {
        this.#error = error;
      }
    }, wait);
    this.#timer.unref();
  }

  /** Throws when a background write failed. */
  check(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const id = this.#pending;
    if (id === undefined || id === this.#written) return;
    try {
      fs.writeFileSync(this.#temp, `${id}\n`);
      fs.renameSync(this.#temp, this.#path);
    } catch (error) {
      throw new ClientError(`cannot write the state file ${this.#path}: ${(error as Error).message}`);
    }
    this.#written = id;
    this.#lastWrite = Date.now();
  }
}
