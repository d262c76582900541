import http from "node:http";
import https from "node:https";
import { checkSinkUrl, guardedLookup, SinkRefused } from "./sink-guard.js";

/** Connections kept per sink host (and scheme); a window never needs more (deliverer.ts MAX_WINDOW). */
export const SINK_CONNECTIONS = 64;

/** How requests to sinks are made: the safety limits of --webhook-* in one place. */
export interface SinkClientOptions {
  /** --webhook-allow-private: deliver to loopback, private and link-local addresses too. */
  readonly allowPrivate: boolean;
  /** --webhook-timeout-seconds, in ms: the whole exchange, connect to the end of the response. */
  readonly timeoutMs: number;
  /** --webhook-response-bytes: response body bytes read; beyond it the connection is cut. */
  readonly responseBytes: number;
}

export interface SinkRequest {
  readonly url: string;
  readonly method: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Buffer | string;
  readonly signal?: AbortSignal;
}

export interface SinkResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** At most `responseBytes` of the body. */
  readonly body: Buffer;
  /** The body was longer than `responseBytes`: the rest was not read (the connection was cut). */
  readonly truncated: boolean;
}

/**
 * Why a request produced no response, as a metric label and the start of a park reason:
 * `refused` (the sink guard), `timeout`, `connection` (refused, reset, DNS), `aborted` (the
 * deliverer stopped).
 */
export type TransportFailure = "refused" | "timeout" | "connection" | "aborted";

export class SinkRequestError extends Error {
  override readonly name = "SinkRequestError";
  constructor(
    readonly reason: TransportFailure,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Makes requests to web hook sinks: never follows redirects (node:http does not), refuses forbidden
 * addresses on the connection itself (sink-guard.ts), bounds each exchange by a timeout and each
 * response body by a byte cap. Keeps connections alive per sink (one agent per scheme).
 */
export class SinkClient {
  readonly options: SinkClientOptions;
  readonly #lookup: ReturnType<typeof guardedLookup>;
  readonly #http: http.Agent;
  readonly #https: https.Agent;

  constructor(options: SinkClientOptions) {
    this.options = options;
    this.#lookup = guardedLookup(options.allowPrivate);
    // keepAlive: a subscription sends one request after another to the same sink.
    this.#http = new http.Agent({
      keepAlive: true,
      maxSockets: SINK_CONNECTIONS,
      lookup: this.#lookup,
    } as http.AgentOptions);
    this.#https = new https.Agent({
      keepAlive: true,
      maxSockets: SINK_CONNECTIONS,
      lookup: this.#lookup,
    } as https.AgentOptions);
  }

  send(request: SinkRequest): Promise<SinkResponse> {
    let url: URL;
    try {
      url = new URL(request.url);
      checkSinkUrl(url, this.options.allowPrivate);
    } catch (error) {
      const message = error instanceof SinkRefused ? error.message : `sink ${request.url} is not a URL`;
      return Promise.reject(new SinkRequestError("refused", message));
    }
    const secure = url.protocol === "https:";
    const { responseBytes, timeoutMs } = this.options;
    return new Promise<SinkResponse>((resolve, reject) => {
      let settled = false;
      const fail = (error: SinkRequestError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        request.signal?.removeEventListener("abort", onAbort);
        req.destroy();
        reject(error);
      };
      const done = (response: SinkResponse) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        request.signal?.removeEventListener("abort", onAbort);
        resolve(response);
      };
      const req = (secure ? https : http).request(url, {
        method: request.method,
        headers: {
          ...request.headers,
          ...(request.body === undefined
            ? {}
            : { "content-length": String(Buffer.byteLength(request.body)) }),
        },
        agent: secure ? this.#https : this.#http,
        lookup: this.#lookup,
      });
      const timer = setTimeout(
        () => fail(new SinkRequestError("timeout", `no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onAbort = () => fail(new SinkRequestError("aborted", "delivery stopped"));
      if (request.signal?.aborted) {
        onAbort();
        return;
      }
      request.signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (error: NodeJS.ErrnoException) => {
        const refused = error instanceof SinkRefused || error.code === "ESINKREFUSED";
        fail(new SinkRequestError(refused ? "refused" : "connection", error.message || String(error.code)));
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          if (size >= responseBytes) return;
          const room = responseBytes - size;
          chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
          size += Math.min(room, chunk.length);
          if (size >= responseBytes) {
            // The cap is reached: the rest is never read, and the connection cannot be reused.
            // (Settled first: destroying emits "aborted" at once.)
            done({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
              truncated: true,
            });
            res.destroy();
          }
        });
        res.on("end", () =>
          done({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            truncated: false,
          }),
        );
        res.on("error", (error) => fail(new SinkRequestError("connection", error.message)));
        res.on("aborted", () => fail(new SinkRequestError("connection", "the response was cut off")));
      });
      req.end(request.body);
    });
  }

  /** Closes idle kept-alive connections (shutdown). */
  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}
