import { describe, expect, it } from "vitest";
import { SseParser, SseTooLarge } from "../../../src/client/lib/sse.js";

/** Feeds the chunks one after the other; returns every event they completed. */
function parse(...chunks: string[]) {
  const parser = new SseParser();
  const events = chunks.flatMap((chunk) => parser.push(chunk));
  return { events, retry: parser.retry };
}

describe("SseParser (HTML §9.2.6)", () => {
  it("dispatches an event on an empty line, with its id, event name and data", () => {
    expect(parse("id: 7\nevent: ping\ndata: hello\n\n").events).toEqual([
      { id: "7", event: "ping", data: "hello" },
    ]);
  });

  it("joins data lines with LF and drops only one space after the colon", () => {
    expect(parse("data:a\ndata:  b\ndata\n\n").events).toEqual([{ id: "", event: "", data: "a\n b\n" }]);
  });

  it("accepts CRLF, LF and CR line ends, also a CRLF split across chunks", () => {
    expect(parse("id: 1\r", "\ndata: x\r", "\n\r", "\ndata: y\r\rdata: z\n\n").events).toEqual([
      { id: "1", event: "", data: "x" },
      { id: "1", event: "", data: "y" },
      { id: "1", event: "", data: "z" },
    ]);
  });

  it("keeps a line split in the middle until its end arrives", () => {
    expect(parse("da", 'ta: {"id":', "3}", "\n", "\n").events).toEqual([
      { id: "", event: "", data: '{"id":3}' },
    ]);
  });

  it("ignores comments (heartbeats) and unknown fields; an event without data is not dispatched", () => {
    expect(parse(": heartbeat\n\nfoo: bar\nid: 4\n\n: closed\n\n").events).toEqual([]);
  });

  it("carries the last id over to later events; an id with NUL is ignored", () => {
    expect(parse("id: 5\ndata: a\n\ndata: b\n\nid: 6\0\ndata: c\n\n").events.map((e) => e.id)).toEqual([
      "5",
      "5",
      "5",
    ]);
  });

  it("reads retry: when it is all digits", () => {
    expect(parse("retry: 2000\n\n").retry).toBe(2000);
    expect(parse("retry: 2000\n\nretry: soon\n\n").retry).toBe(2000);
  });

  it("caps what it holds: an unfinished line or event beyond maxChars throws", () => {
    const parser = new SseParser(10);
    expect(parser.push("data: 12345\n\n")).toHaveLength(1);
    expect(() => parser.push("data: 123456789")).toThrow(SseTooLarge);
    const events = new SseParser(10);
    events.push("data: 1234\n");
    expect(() => events.push("data: 12345\n")).toThrow(SseTooLarge);
  });
});
