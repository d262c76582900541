import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { NewEvent } from "../../src/events/event.js";
import type { RunningServer } from "../../src/server.js";
import { SubscriptionStore } from "../../src/subscriptions/store.js";
import type { SubscriptionRecord, SubscriptionSpec } from "../../src/subscriptions/types.js";

/** A request a sink received. */
export interface Received {
  readonly method: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  /** The CloudEvents id: from the structured body, or ce-id in binary mode. */
  readonly id: string | undefined;
}

/** What a sink answers to one delivery (POST/PUT): a status, or `hang` (never answers). */
export interface Answer {
  readonly status?: number;
  readonly headers?: Record<string, string>;
  readonly body?: string;
  readonly hang?: boolean;
  /** Answers only after this long. */
  readonly delayMs?: number;
  /** Writes body bytes until the client goes away. */
  readonly endless?: boolean;
}

/**
 * A web hook sink on 127.0.0.1 (port 0, or a given port to come back on): consents to the
 * handshake unless told not to, records every request, answers deliveries by `answer`.
 */
export class Sink {
  readonly received: Received[] = [];
  /** OPTIONS requests (handshakes). */
  readonly handshakes: Received[] = [];
  consent: "accept" | "refuse" = "accept";
  allowedRate: string | undefined;
  answer: (request: Received, index: number) => Answer = () => ({ status: 204 });
  /** Fires when a response stream (endless) was closed by the client. */
  responseClosed = 0;
  #server: http.Server | undefined;
  readonly #sockets = new Set<Socket>();
  port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** Delivered event ids, in arrival order (duplicates included). */
  get ids(): string[] {
    return this.received.map((r) => r.id ?? "?");
  }

  async start(port = this.port): Promise<this> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        let id =
          typeof req.headers["ce-id"] === "string" ? decodeURIComponent(req.headers["ce-id"]) : undefined;
        if (
          id === undefined &&
          body.length > 0 &&
          String(req.headers["content-type"]).includes("cloudevents")
        ) {
          id = (JSON.parse(body.toString("utf8")) as { id: string }).id;
        }
        const request = { method: req.method ?? "", headers: req.headers, body, id };
        if (req.method === "OPTIONS") {
          this.handshakes.push(request);
          if (this.consent === "accept") {
            res.setHeader("WebHook-Allowed-Origin", String(req.headers["webhook-request-origin"]));
            if (this.allowedRate !== undefined) res.setHeader("WebHook-Allowed-Rate", this.allowedRate);
          }
          res.writeHead(200, { Allow: "POST" }).end();
          return;
        }
        this.received.push(request);
        const answer = this.answer(request, this.received.length - 1);
        if (answer.hang) return;
        if (answer.delayMs !== undefined) {
          const { delayMs, ...rest } = answer;
          setTimeout(() => {
            if (!res.destroyed) res.writeHead(rest.status ?? 204, rest.headers).end(rest.body);
          }, delayMs);
          return;
        }
        res.writeHead(answer.status ?? 204, answer.headers);
        if (answer.endless) {
          res.on("close", () => this.responseClosed++);
          const chunk = Buffer.alloc(16 * 1024, 0x61);
          const pump = () => {
            while (!res.destroyed && res.write(chunk)) {}
            if (!res.destroyed) res.once("drain", pump);
          };
          pump();
          return;
        }
        res.end(answer.body);
      });
    });
    server.on("connection", (socket) => {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", resolve);
    });
    this.#server = server;
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  /** Stops at once: open connections (requests in flight included) are cut. */
  async close(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Waits until `check` holds (polling), failing with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A subscription spec to `sink`, everything else default, then `overrides`. */
export function subscriptionSpec(sink: string, overrides: Partial<SubscriptionSpec> = {}): SubscriptionSpec {
  return {
    source: undefined,
    types: undefined,
    config: { subject: undefined, recursive: false, type: undefined, window: 1 },
    filters: [],
    sink,
    sinkcredential: undefined,
    protocol: "HTTP",
    protocolsettings: { method: "POST", headers: {}, contentmode: "structured" },
    description: undefined,
    ...overrides,
  };
}

let subscriptions = 0;

/** Creates a subscription straight in the store (as the API would) and lets the manager claim it now. */
export async function subscribe(
  server: RunningServer,
  spec: SubscriptionSpec,
  options: { owner?: string; ownerScopes?: string[]; position?: number } = {},
): Promise<SubscriptionRecord> {
  const store = new SubscriptionStore(server.eventLog.dialect);
  const record = await store.create({
    id: `sub-${process.pid}-${subscriptions++}`,
    spec,
    owner: options.owner ?? "anonymous",
    ownerScopes: options.ownerScopes ?? ["*"],
    position: options.position ?? 0,
  });
  await server.delivery.poke();
  return record;
}

/** Appends events with CloudEvents ids `prefix-1`…`prefix-n` on `subject`; returns the ids. */
export async function append(
  server: RunningServer,
  count: number,
  prefix: string,
  overrides: Partial<NewEvent> = {},
): Promise<string[]> {
  const ids: string[] = [];
  const events: NewEvent[] = [];
  for (let i = 1; i <= count; i++) {
    const id = `${prefix}-${i}`;
    ids.push(id);
    events.push({
      source: "test",
      type: "test.created",
      subject: "orders/1",
      ceId: id,
      time: undefined,
      datacontenttype: "application/json",
      dataschema: undefined,
      extensions: undefined,
      data: Buffer.from(JSON.stringify({ n: i })),
      ...overrides,
    });
  }
  await server.eventLog.append(events);
  return ids;
}

/** The ids with consecutive repeats removed: a redelivery of what was in flight shows as a repeat. */
export function withoutRepeats(ids: readonly string[]): string[] {
  return ids.filter((id, i) => i === 0 || ids[i - 1] !== id);
}
