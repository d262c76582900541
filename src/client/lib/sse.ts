/** One Server-Sent Event as the client dispatches it. */
export interface SseMessage {
  /** The last event id seen on the stream (HTML §9.2.6: it carries over to later events). */
  readonly id: string;
  readonly event: string;
  readonly data: string;
}

/**
 * An incremental Server-Sent Events parser (HTML Living Standard §9.2.6): lines end in CRLF, LF or
 * CR (also split across chunks), `:` starts a comment, one space after the colon is dropped,
 * `data` lines join with LF, an empty line dispatches, an event without data is not dispatched.
 * An event (or line) longer than `maxChars` throws a {@link SseTooLarge}: its buffer has a cap.
 */
export class SseParser {
  /** The `retry:` reconnection time the server asked for, in milliseconds. */
  retry: number | undefined;
  readonly #maxChars: number;
  #rest = "";
  #data: string[] = [];
  #dataChars = 0;
  #event = "";
  #lastId = "";

  constructor(maxChars = Number.POSITIVE_INFINITY) {
    this.#maxChars = maxChars;
  }

  /** Feeds decoded text; returns the events it completed. */
  push(text: string): SseMessage[] {
    const out: SseMessage[] = [];
    this.#rest += text;
    let start = 0;
    for (;;) {
      let end = start;
      while (end < this.#rest.length) {
        const c = this.#rest.charCodeAt(end);
        if (c === 0x0a || c === 0x0d) break;
        end++;
      }
      if (end >= this.#rest.length) break;
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (this.#rest.charCodeAt(end) === 0x0d && end + 1 === this.#rest.length) break;
      const line = this.#rest.slice(start, end);
      const crlf = this.#rest.charCodeAt(end) === 0x0d && this.#rest.charCodeAt(end + 1) === 0x0a;
      start = end + (crlf ? 2 : 1);
      const message = this.#line(line);
      if (message !== undefined) out.push(message);
    }
    this.#rest = this.#rest.slice(start);
    if (this.#rest.length + this.#dataChars > this.#maxChars) throw new SseTooLarge(this.#maxChars);
    return out;
  }

  #line(line: string): SseMessage | undefined {
    if (line === "") {
      const data = this.#data;
      const event = this.#event;
      this.#data = [];
      this.#dataChars = 0;
      this.#event = "";
      return data.length === 0 ? undefined : { id: this.#lastId, event, data: data.join("\n") };
    }
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        this.#data.push(value);
        this.#dataChars += value.length + 1;
        break;
      case "id":
        if (!value.includes("\0")) this.#lastId = value;
        break;
      case "event":
        this.#event = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
    }
    return undefined;
  }
}

/** An event bigger than the parser's cap. */
export class SseTooLarge extends Error {
  override readonly name = "SseTooLarge";
  constructor(maxChars: number) {
    super(`an event is longer than ${maxChars} characters`);
  }
}
