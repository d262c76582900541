import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";

/** Called for each SSE event frame: its `id:` (NaN when absent), its `data:` text and the receive time. */
export type OnEvent = (id: number, data: string, receivedAtMs: number) => void;

/** Wall-clock milliseconds with fractions; the publishers stamp `sentAt` with the same clock. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * A minimal SSE parser for one stream: frames are split on the blank line, `id:`, `data:` and
 * `retry:` are read, `:` comments are counted as heartbeats. `feed` gets the body text of one
 * socket read; its receive time is taken once, for every frame in it.
 */
export class SseStream {
  /** The `retry:` value once it arrived. */
  retryMs: number | undefined;
  heartbeats = 0;
  /** Frames with neither data, retry nor a comment. */
  oddFrames = 0;
  /** Set when the connection failed or the server ended it. */
  ended: string | undefined;
  readonly #socket: Socket;
  readonly #onEvent: OnEvent | undefined;
  #pending = "";

  constructor(socket: Socket, onEvent: OnEvent | undefined) {
    this.#socket = socket;
    this.#onEvent = onEvent;
  }

  close(): void {
    this.#socket.destroy();
  }

  feed(text: string, receivedAt: number): void {
    const all = this.#pending === "" ? text : this.#pending + text;
    let start = 0;
    for (;;) {
      const end = all.indexOf("\n\n", start);
      if (end === -1) break;
      this.#frame(all, start, end, receivedAt);
      start = end + 2;
    }
    this.#pending = start === 0 ? all : all.slice(start);
  }

  #frame(text: string, start: number, end: number, receivedAt: number): void {
    let id = Number.NaN;
    let data: string | undefined;
    let known = false;
    let pos = start;
    while (pos < end) {
      let eol = text.indexOf("\n", pos);
      if (eol === -1 || eol > end) eol = end;
      if (text.startsWith("data:", pos)) {
        const value = fieldValue(text, pos + 5, eol);
        data = data === undefined ? value : `${data}\n${value}`;
      } else if (text.startsWith("id:", pos)) {
        id = Number(fieldValue(text, pos + 3, eol));
      } else if (text.startsWith(":", pos)) {
        this.heartbeats++;
        known = true;
      } else if (text.startsWith("retry:", pos)) {
        this.retryMs = Number(fieldValue(text, pos + 6, eol));
        known = true;
      }
      pos = eol + 1;
    }
    if (data !== undefined) this.#onEvent?.(id, data, receivedAt);
    else if (!known) this.oddFrames++;
  }
}

/** A field's value: the rest of the line after `name:`, without one leading space (HTML §9.2.6). */
function fieldValue(text: string, from: number, eol: number): string {
  return text.slice(text.charCodeAt(from) === 0x20 ? from + 1 : from, eol);
}

/**
 * The HTTP/1.1 response of one GET: the head, then the body, de-chunked when the server uses
 * `transfer-encoding: chunked` (it does: no content-length on a stream). Socket text is latin1,
 * one char per byte, so chunk sizes count chars; SSE frames here are ASCII.
 */
class ResponseReader {
  status: number | undefined;
  done = false;
  #head = "";
  #chunked = false;
  #buffer = "";
  /** Bytes left in the current chunk; -1 = expecting a size line; -2 = expecting the CRLF after data. */
  #remaining = -1;

  /** Returns the body text in this read ("" for none); throws on a malformed response. */
  read(text: string): string {
    if (this.status === undefined) {
      this.#head += text;
      const end = this.#head.indexOf("\r\n\r\n");
      if (end === -1) return "";
      const head = this.#head.slice(0, end);
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (match === null) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify(head.slice(0, 40))}`);
      this.status = Number(match[1]);
      this.#chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head);
      text = this.#head.slice(end + 4);
      this.#head = "";
    }
    if (!this.#chunked) return text;
    this.#buffer = this.#buffer === "" ? text : this.#buffer + text;
    let out = "";
    let pos = 0;
    const buffer = this.#buffer;
    while (pos < buffer.length && !this.done) {
      if (this.#remaining === -1) {
        const eol = buffer.indexOf("\r\n", pos);
        if (eol === -1) break;
        const size = Number.parseInt(buffer.slice(pos, eol), 16);
        if (!Number.isFinite(size)) throw new Error("bad chunk size");
        pos = eol + 2;
        if (size === 0) this.done = true;
        else this.#remaining = size;
      } else if (this.#remaining === -2) {
        if (buffer.length - pos < 2) break;
        pos += 2;
        this.#remaining = -1;
      } else {
        const take = Math.min(this.#remaining, buffer.length - pos);
        out += buffer.slice(pos, pos + take);
        pos += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#remaining = -2;
      }
    }
    this.#buffer = pos >= buffer.length ? "" : buffer.slice(pos);
    return out;
  }
}

export interface OpenOptions {
  /** Give up (and close the socket) when the 200 + `retry:` line did not come within this. */
  readonly timeoutMs: number;
  readonly onEvent?: OnEvent;
}

/**
 * SSE streams over raw TCP sockets with a hand-written HTTP/1.1 GET (cheaper per read than
 * node:http's parser and streams, which matters with 1000 clients × 200 events/s in one
 * process); tracks them, so that all can be closed at once.
 */
export class SseClients {
  readonly #open = new Set<SseStream>();
  readonly #host: string;
  readonly #port: number;

  constructor(baseUrl: string) {
    const url = new URL(baseUrl);
    this.#host = url.hostname;
    this.#port = Number(url.port);
  }

  get size(): number {
    return this.#open.size;
  }

  /** Resolves once the response is 200 and the `retry:` line arrived; rejects otherwise. */
  open(path: string, options: OpenOptions): Promise<SseStream> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.#host, port: this.#port });
      const stream = new SseStream(socket, options.onEvent);
      const response = new ResponseReader();
      this.#open.add(stream);
      let settled = false;
      const fail = (reason: string) => {
        stream.ended ??= reason;
        this.#open.delete(stream);
        socket.destroy();
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          reject(new Error(reason));
        }
      };
      const timer = setTimeout(
        () => fail(`no 200 + retry: within ${options.timeoutMs} ms`),
        options.timeoutMs,
      );
      socket.setNoDelay(true);
      socket.setEncoding("latin1");
      socket.once("connect", () => {
        socket.write(
          `GET ${path} HTTP/1.1\r\nhost: ${this.#host}:${this.#port}\r\naccept: text/event-stream\r\n\r\n`,
        );
      });
      socket.on("data", (chunk: string) => {
        const receivedAt = nowMs();
        let body: string;
        try {
          body = response.read(chunk);
        } catch (error) {
          fail(error instanceof Error ? error.message : String(error));
          return;
        }
        if (response.status !== undefined && response.status !== 200) {
          fail(`HTTP ${response.status}`);
          return;
        }
        if (body !== "") stream.feed(body, receivedAt);
        if (response.done) stream.ended ??= "ended by the server";
        if (!settled && stream.retryMs !== undefined) {
          settled = true;
          clearTimeout(timer);
          resolve(stream);
        }
      });
      socket.once("error", (error) => fail(`connection error: ${error.message}`));
      socket.once("close", () => {
        this.#open.delete(stream);
        stream.ended ??= "closed";
        if (!settled) fail("closed before the retry: line");
      });
    });
  }

  /** Closes every open stream. */
  closeAll(): void {
    for (const stream of this.#open) stream.close();
    this.#open.clear();
  }
}
