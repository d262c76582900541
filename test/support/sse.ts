import net from "node:net";

/** One Server-Sent Event as a client sees it. */
export interface SseEvent {
  readonly id: string;
  readonly data: string;
}

/** Parses SSE text (HTML §9.2.6) incrementally: events, comments and retry lines. */
export class SseParser {
  readonly events: SseEvent[] = [];
  readonly comments: string[] = [];
  retry: number | undefined;
  #rest = "";

  push(text: string): void {
    this.#rest += text;
    for (;;) {
      const end = this.#rest.indexOf("\n\n");
      if (end === -1) return;
      const block = this.#rest.slice(0, end);
      this.#rest = this.#rest.slice(end + 2);
      let id: string | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) this.comments.push(line.slice(1).trim());
        else if (line.startsWith("id: ")) id = line.slice(4);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
        else if (line.startsWith("retry: ")) this.retry = Number(line.slice(7));
        else if (line.startsWith("event:")) throw new Error(`unexpected event field: ${line}`);
      }
      if (id !== undefined || data.length > 0) this.events.push({ id: id ?? "", data: data.join("\n") });
    }
  }

  /** Event ids as numbers. */
  ids(): number[] {
    return this.events.map((e) => Number(e.id));
  }
}

/** A stream read with fetch: headers, parsed events, close. */
export interface FetchStream {
  readonly response: Response;
  readonly parser: SseParser;
  /** Resolves when the server ends the stream (or it is closed). */
  readonly ended: Promise<void>;
  close(): void;
}

export async function openStream(url: string, headers: Record<string, string> = {}): Promise<FetchStream> {
  const controller = new AbortController();
  const response = await fetch(url, { headers, signal: controller.signal });
  const parser = new SseParser();
  const ended = (async () => {
    if (response.body === null) return;
    const decoder = new TextDecoder();
    try {
      for await (const chunk of response.body) parser.push(decoder.decode(chunk, { stream: true }));
    } catch (error) {
      if (!controller.signal.aborted) throw error;
    }
  })();
  return { response, parser, ended, close: () => controller.abort() };
}

/**
 * A raw HTTP/1.1 stream reader on a plain socket, which can stop reading (pause) to play a
 * stalled client whose TCP window fills up.
 */
export class RawStream {
  readonly parser = new SseParser();
  readonly socket: net.Socket;
  #head = "";
  #headersDone = false;
  #chunked = "";
  status = 0;
  /** Bytes of the largest HTTP/1.1 chunk received: what the server wrote at once. */
  largestChunk = 0;
  readonly closed: Promise<void>;

  constructor(port: number, path: string, headers: Record<string, string> = {}) {
    this.socket = net.connect(port, "127.0.0.1");
    this.socket.setEncoding("latin1");
    const lines = [
      `GET ${path} HTTP/1.1`,
      "Host: 127.0.0.1",
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    this.socket.write(`${lines.join("\r\n")}\r\n\r\n`);
    this.socket.on("data", (chunk: string) => this.#onData(chunk));
    this.closed = new Promise((resolve) => this.socket.once("close", () => resolve()));
    this.socket.on("error", () => {});
  }

  #onData(chunk: string): void {
    if (!this.#headersDone) {
      this.#head += chunk;
      const end = this.#head.indexOf("\r\n\r\n");
      if (end === -1) return;
      this.status = Number(this.#head.slice(9, 12));
      chunk = this.#head.slice(end + 4);
      this.#headersDone = true;
    }
    // Transfer-Encoding: chunked — strip the size lines.
    this.#chunked += chunk;
    for (;;) {
      const lineEnd = this.#chunked.indexOf("\r\n");
      if (lineEnd === -1) return;
      const size = Number.parseInt(this.#chunked.slice(0, lineEnd), 16);
      if (this.#chunked.length < lineEnd + 2 + size + 2) return;
      const body = this.#chunked.slice(lineEnd + 2, lineEnd + 2 + size);
      this.largestChunk = Math.max(this.largestChunk, size);
      this.#chunked = this.#chunked.slice(lineEnd + 2 + size + 2);
      this.parser.push(Buffer.from(body, "latin1").toString("utf8"));
    }
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Polls `check` until it returns true, at most `ms`; fails with `what` otherwise. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  ms = 15_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
