import { Agent, type ClientRequest, request } from "node:http";
import { performance } from "node:perf_hooks";

/** Called for each SSE event frame: its `id:` (NaN when absent), its `data:` text and the receive time. */
export type OnEvent = (id: number, data: string, receivedAtMs: number) => void;

/** Wall-clock milliseconds with fractions; the publishers stamp `sentAt` with the same clock. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * One raw HTTP/1.1 `GET /events/stream` with a minimal SSE parser: frames are split on the blank
 * line, `id:`, `data:` and `retry:` are read, `:` comments are counted as heartbeats. The receive
 * time is taken once per socket read, for every frame in it.
 */
export class SseStream {
  /** The `retry:` value once it arrived. */
  retryMs: number | undefined;
  heartbeats = 0;
  /** Frames with neither data, retry nor a comment. */
  oddFrames = 0;
  /** Set when the connection failed or the server ended it. */
  ended: string | undefined;
  readonly #request: ClientRequest;
  readonly #onEvent: OnEvent | undefined;
  #pending = "";

  constructor(req: ClientRequest, onEvent: OnEvent | undefined) {
    this.#request = req;
    this.#onEvent = onEvent;
  }

  close(): void {
    this.#request.destroy();
  }

  /** Parses one chunk of the body (internal; called by SseClients). */
  feed(chunk: string): void {
    const receivedAt = nowMs();
    const text = this.#pending === "" ? chunk : this.#pending + chunk;
    let start = 0;
    for (;;) {
      const end = text.indexOf("\n\n", start);
      if (end === -1) break;
      this.#frame(text, start, end, receivedAt);
      start = end + 2;
    }
    this.#pending = start === 0 ? text : text.slice(start);
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

export interface OpenOptions {
  /** Give up (and destroy the request) when the 200 + `retry:` line did not come within this. */
  readonly timeoutMs: number;
  readonly onEvent?: OnEvent;
}

/** Opens SSE streams on one keep-alive agent and tracks them, so that all can be destroyed at once. */
export class SseClients {
  readonly #agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
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
      const req = request({
        host: this.#host,
        port: this.#port,
        path,
        method: "GET",
        agent: this.#agent,
        headers: { accept: "text/event-stream" },
      });
      const stream = new SseStream(req, options.onEvent);
      this.#open.add(stream);
      let settled = false;
      const fail = (reason: string) => {
        stream.ended ??= reason;
        this.#open.delete(stream);
        req.destroy();
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          reject(new Error(reason));
        }
      };
      const timer = setTimeout(() => fail(`no 200 + retry: within ${options.timeoutMs} ms`), options.timeoutMs);
      req.once("error", (error) => fail(`connection error: ${error.message}`));
      req.once("close", () => {
        this.#open.delete(stream);
        stream.ended ??= "closed";
        if (!settled) fail("closed before the retry: line");
      });
      req.once("response", (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          fail(`HTTP ${res.statusCode}`);
          return;
        }
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          stream.feed(chunk);
          if (!settled && stream.retryMs !== undefined) {
            settled = true;
            clearTimeout(timer);
            resolve(stream);
          }
        });
        res.once("end", () => {
          stream.ended ??= "ended by the server";
        });
      });
      req.end();
    });
  }

  /** Destroys every open stream and the agent's sockets. */
  closeAll(): void {
    for (const stream of this.#open) stream.close();
    this.#open.clear();
    this.#agent.destroy();
  }
}
