import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect } from "vitest";
import { type ConnectPeer, connectPeer } from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { LIMIT_FLAGS } from "./settings.js";

/**
 * The invariant checked after every hostile request, on one real server (SQLite, small limits):
 * no 5xx, /healthz answers, and the store holds exactly the events that were acknowledged.
 */

export interface Answer {
  readonly status: number;
  readonly text: string;
}

/** Header values fetch refuses (controls but HTAB): such requests go over a raw socket. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: detecting control characters is the point.
const FETCH_REFUSES = /[\u0000-\u0008\u000a-\u001f\u007f]/;

export const describeAnswer = (what: string, answer: Answer) =>
  `${what} → ${answer.status} ${answer.text.slice(0, 300)}`;

/** Ids a create answered with: REST `{id}` / `{ids}`, Connect JSON `{"id":"7"}` / `{"ids":[…]}`. */
export function claimedIds(text: string): number[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return [];
  }
  const { id, ids } = (body ?? {}) as { id?: unknown; ids?: unknown };
  if (Array.isArray(ids)) return ids.map(Number);
  return id === undefined ? [] : [Number(id)];
}

/**
 * One server for the tests of a describe block and the bookkeeping of what it acknowledged.
 * `Hostile.server(flags)` starts it before the block's tests and closes it after them.
 */
export class Hostile {
  #t: TestServer | undefined;
  #peers: ConnectPeer[] = [];
  /** Every id up to here is accounted for: acknowledged by a response seen by this harness. */
  #known = 0;
  #serial = 0;
  readonly acknowledged = new Set<number>();

  /** A harness whose server (the limits of settings.ts plus `flags`) lives as long as the describe block. */
  static server(flags: Record<string, string> = {}): Hostile {
    const h = new Hostile();
    let dir: string | undefined;
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), "eventsdb-hostile-"));
      h.#t = await startTestServer(`sqlite:${join(dir, "events.db")}`, { ...LIMIT_FLAGS, ...flags });
      h.#peers = [connectPeer("connect (HTTP/1.1)", h.#t), connectPeer("grpc (HTTP/2)", h.#t)];
    });
    afterAll(async () => {
      for (const peer of h.#peers) peer.close();
      await h.#t?.close();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });
    return h;
  }

  get server(): TestServer {
    if (this.#t === undefined) throw new Error("the hostile server is not started yet (beforeAll)");
    return this.#t;
  }

  get url(): string {
    return this.server.url;
  }

  /** connect-node clients: Connect over HTTP/1.1 (0) and gRPC over HTTP/2 (1). */
  get peers(): readonly ConnectPeer[] {
    return this.#peers;
  }

  /** A number no other request of this harness had, for unique ids. */
  serial(): number {
    return this.#serial++;
  }

  async send(path: string, init: RequestInit = {}): Promise<Answer> {
    const res = await fetch(`${this.url}${path}`, init);
    return { status: res.status, text: await res.text() };
  }

  /** POST with fetch, or over a raw socket when a header value holds a control character. */
  post(path: string, headers: [string, string][], body: Buffer): Promise<Answer> {
    if (headers.some(([, value]) => FETCH_REFUSES.test(value)))
      return this.rawRequest("POST", path, headers, body);
    return this.send(path, { method: "POST", headers, body });
  }

  /**
   * One HTTP/1.1 request written by hand on its own connection (Connection: close), so header
   * values can carry control characters that fetch and node:http refuse to send.
   */
  rawRequest(
    method: string,
    path: string,
    headers: Headers | [string, string][],
    body: Buffer,
  ): Promise<Answer> {
    const lines = [
      `${method} ${path} HTTP/1.1`,
      `host: 127.0.0.1`,
      "connection: close",
      `content-length: ${body.length}`,
    ];
    for (const [name, value] of headers) lines.push(`${name}: ${value}`);
    const head = Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
    return new Promise((resolve, reject) => {
      const socket = net.connect(this.server.server.restPort, "127.0.0.1");
      const chunks: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.on("error", reject);
      socket.on("end", () => {
        const response = Buffer.concat(chunks).toString("utf8");
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? "NaN");
        const split = response.indexOf("\r\n\r\n");
        let text = split === -1 ? "" : response.slice(split + 4);
        if (/^transfer-encoding: chunked/im.test(response.slice(0, split))) text = unchunk(text);
        resolve({ status, text });
      });
      socket.end(Buffer.concat([head, body]));
    });
  }

  /**
   * No 5xx, /healthz answers, and the events stored since the last check are exactly those this
   * request acknowledged (`claimed`; none when it was rejected or is no create).
   */
  async settle(label: string, status: number, claimed: readonly number[] = []): Promise<void> {
    expect(status, label).toBeLessThan(500);
    const health = await fetch(`${this.url}/healthz`);
    expect(health.status, `/healthz after ${label}`).toBe(200);
    await health.arrayBuffer();
    const page = (await (await fetch(`${this.url}/events?from_id=${this.#known}&limit=1000`)).json()) as {
      events: { id: number }[];
    };
    const fresh = page.events.map((e) => e.id);
    expect(
      fresh.filter((id) => !claimed.includes(id)),
      `stored without being acknowledged (${label})`,
    ).toEqual([]);
    expect(
      claimed.filter((id) => id > this.#known && !fresh.includes(id)),
      `acknowledged but not stored (${label})`,
    ).toEqual([]);
    for (const id of claimed) this.acknowledged.add(id);
    this.#known = Math.max(this.#known, ...fresh, ...claimed);
  }

  /** A REST or Connect-JSON request; creates name the ids they acknowledged. */
  async sendAndSettle(what: string, path: string, init: RequestInit, creates: boolean): Promise<Answer> {
    const answer = await this.send(path, init);
    await this.settle(
      describeAnswer(what, answer),
      answer.status,
      creates && answer.status === 200 ? claimedIds(answer.text) : [],
    );
    return answer;
  }
}

function unchunk(text: string): string {
  let out = "";
  let rest = text;
  for (;;) {
    const eol = rest.indexOf("\r\n");
    const size = Number.parseInt(rest.slice(0, eol), 16);
    if (eol === -1 || !(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}
