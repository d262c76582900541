import { isUtf8 } from "node:buffer";
import fs from "node:fs";
import type { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ClientError,
  type Connection,
  type Filter,
  filterParams,
  lastMatchingId,
  networkReason,
  requestHeaders,
  requestUrl,
  responseError,
  type SimpleEvent,
  unreachable,
  usageError,
} from "./http.js";
import { interruptSignal, write } from "./io.js";
import { SseParser } from "./sse.js";

export interface TailOptions {
  readonly filter: Filter;
  /** Start after this id; undefined = live only (after the newest matching event). */
  readonly fromId: number | undefined;
  /** Print each event's JSON instead of a summary line. */
  readonly json: boolean;
  /** Keeps the last printed id; an existing file wins over fromId. */
  readonly stateFile: string | undefined;
  /** Reconnect when nothing (not even a heartbeat) arrived for this long; 0 = never. */
  readonly idleTimeoutMs: number;
}

/** Reconnection delays: 250 ms, doubling, at most 10 s, ±20 % jitter. */
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 10_000;
/** A connection that lasted this long (or delivered events) resets the delay. */
const HEALTHY_MS = 5_000;
/** The state file is rewritten at most this often (and on exit). */
const STATE_INTERVAL_MS = 200;
/** Statuses worth retrying: the server is busy, restarting or behind a failing proxy. */
const RETRYABLE = new Set([408, 425, 429, 500, 502, 503, 504]);

/**
 * `eventsdb tail`: follows `GET /events/stream`, one line per event, in id order. After a drop it
 * reconnects with `Last-Event-ID` (the server resumes after it: no gap, no repeat) and says so on
 * stderr. SIGINT/SIGTERM and a closed stdout end it normally; the state file is flushed on the way.
 */
export async function tail(
  conn: Connection,
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
    let cursor = state?.read() ?? options.fromId ?? (await lastMatchingId(conn, options.filter, stop));
    state?.save(cursor);
    state?.flush();
    let connected = false;
    let delivered = 0;

    const deliver = async (id: string, data: string) => {
      state?.check();
      const n = /^\d{1,16}$/.test(id) ? Number(id) : Number.NaN;
      if (n <= cursor) return; // already printed before a reconnect
      await write(out, `${options.json ? data : summary(id, data)}\n`, stop);
      if (Number.isSafeInteger(n)) {
        cursor = n;
        state?.save(n);
      }
      delivered++;
    };

    /** One connection; resolves with why it ended (to reconnect), rejects when retrying is pointless. */
    const receive = async (): Promise<string> => {
      const connection = new AbortController();
      const signal = AbortSignal.any([stop, connection.signal]);
      const idleReason = `nothing received for ${options.idleTimeoutMs / 1000} s`;
      let idle: NodeJS.Timeout | undefined;
      const arm = () => {
        clearTimeout(idle);
        if (options.idleTimeoutMs > 0) idle = setTimeout(() => connection.abort(), options.idleTimeoutMs);
      };
      arm();
      try {
        const params = filterParams(options.filter);
        params.set("from_id", String(cursor));
        const headers: Record<string, string> = { accept: "text/event-stream" };
        if (cursor > 0) headers["last-event-id"] = String(cursor);
        let response: Response;
        try {
          response = await fetch(requestUrl(conn, "/events/stream", params), {
            headers: requestHeaders(conn, headers),
            signal,
          });
        } catch (error) {
          if (stop.aborted) return "";
          if (connection.signal.aborted) return idleReason;
          if (!connected) throw unreachable(conn, error);
          return `cannot reach ${conn.url} (${networkReason(error)})`;
        }
        if (!response.ok || response.body === null) {
          const failure = await responseError(response);
          if (RETRYABLE.has(response.status)) return `the server refused the stream: ${failure.message}`;
          throw failure;
        }
        connected = true;
        const parser = new SseParser();
        const decoder = new TextDecoder();
        const reader = response.body.getReader();
        for (;;) {
          let chunk: Awaited<ReturnType<typeof reader.read>>;
          try {
            chunk = await reader.read();
          } catch (error) {
            if (stop.aborted) return "";
            if (connection.signal.aborted) return idleReason;
            return `the stream broke (${networkReason(error)})`;
          }
          if (chunk.done) return "the server ended the stream";
          clearTimeout(idle); // a slow stdout is not an idle server
          for (const message of parser.push(decoder.decode(chunk.value, { stream: true }))) {
            await deliver(message.id, message.data);
          }
          arm();
        }
      } finally {
        clearTimeout(idle);
        connection.abort();
      }
    };

    for (let failures = 0; !stop.aborted; failures++) {
      const started = Date.now();
      delivered = 0;
      const reason = await receive();
      if (stop.aborted) break;
      if (delivered > 0 || Date.now() - started >= HEALTHY_MS) failures = 0;
      const delay = Math.round(
        Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** failures * (0.8 + Math.random() * 0.4)),
      );
      err.write(`eventsdb: ${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s after id ${cursor}\n`);
      await sleep(delay, undefined, { signal: stop });
    }
  } catch (error) {
    if (!stop.aborted) throw error;
  } finally {
    interrupt.dispose(); // the output's error listener stays: a late EPIPE must not crash the exit
    state?.flush();
  }
}

/** `<id> <time> <subject> <type> <data preview>` */
function summary(id: string, data: string): string {
  let event: SimpleEvent;
  try {
    event = JSON.parse(data) as SimpleEvent;
  } catch {
    return `${id} ${data}`;
  }
  return `${id} ${event.time} ${event.subject} ${event.type} ${preview(event.data)}`.trimEnd();
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
