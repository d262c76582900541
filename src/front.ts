import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, {
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import net, { type AddressInfo, type Socket } from "node:net";
import type { SecureContextOptions, TLSSocket } from "node:tls";

export type Handler = (
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
) => void;

// RFC 9113 §3.4: a prior-knowledge HTTP/2 client starts with this preface; HTTP/1.x never does.
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Takes an HTTP/2 stream before the compatibility layer and the app when it returns true. */
export type StreamShortcut = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => boolean;

/** Certificates for TLS; `ca` + requestCert for mutual TLS. */
export interface FrontTls extends SecureContextOptions {
  readonly requestCert: boolean;
}

/**
 * One port for HTTP/1.1 and HTTP/2. Cleartext (gRPC needs h2c with prior knowledge): a plain TCP
 * listener peeks at the first bytes and hands the socket to an `http` or an `http2` server that
 * share the app's handler. With TLS: one HTTP/2 secure server with `allowHTTP1`, ALPN choosing
 * h2 or http/1.1 per connection; its certificates can be replaced live (setSecureContext), which
 * touches no open connection. Several ports share one Front (REST and gRPC ports serve the same
 * app). It tracks sockets, h2 sessions and in-flight requests so shutdown can drain, then close.
 */
export class Front {
  readonly http1: http.Server;
  readonly http2: http2.Http2Server;
  readonly #secure: http2.Http2SecureServer | undefined;
  readonly #listeners: net.Server[] = [];
  /** Every accepted TCP socket (closed at the end). */
  readonly #raw = new Set<Socket>();
  /** Sockets carrying HTTP: the plain ones, or the TLS sockets above the raw ones. */
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Set<Http2Session>();
  /** Sockets of HTTP/2 sessions: they close through session.close() (GOAWAY), not by the socket. */
  readonly #h2 = new WeakSet<Socket>();
  /** In-flight HTTP/1.1 requests per socket, to close idle keep-alive sockets at shutdown. */
  readonly #busy = new Map<Socket, number>();
  #inFlight = 0;
  #closing = false;

  /**
   * @param shortcut takes a raw HTTP/2 stream before the compatibility layer and the app when it
   *   returns true (the unary gRPC append path, see transports/grpc-unary.ts)
   */
  constructor(handler: Handler, tls?: FrontTls, shortcut?: StreamShortcut) {
    const tracked: Handler = (req, res) => {
      this.#inFlight++;
      const socket = "stream" in req ? undefined : (req.socket as Socket);
      if (socket !== undefined) this.#busy.set(socket, (this.#busy.get(socket) ?? 0) + 1);
      res.once("close", () => {
        this.#inFlight--;
        if (socket === undefined) return;
        const left = (this.#busy.get(socket) ?? 1) - 1;
        if (left > 0) this.#busy.set(socket, left);
        else {
          this.#busy.delete(socket);
          if (this.#closing) socket.destroySoon();
        }
      });
      handler(req, res);
    };
    this.http1 = http.createServer(tracked as (req: IncomingMessage, res: ServerResponse) => void);
    this.http1.keepAliveTimeout = 65_000; // beyond common proxies' 60 s idle timeout
    this.http2 = http2.createServer(tracked as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
    const trackSession = (session: Http2Session) => {
      this.#sessions.add(session);
      session.once("close", () => this.#sessions.delete(session));
    };
    this.http2.on("session", trackSession);
    if (shortcut !== undefined) this.#shortcut(this.http2, shortcut);
    if (tls !== undefined) {
      const secure = http2.createSecureServer(
        { ...tls, allowHTTP1: true, rejectUnauthorized: tls.requestCert },
        tracked as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
      );
      secure.on("session", trackSession);
      if (shortcut !== undefined) this.#shortcut(secure, shortcut);
      secure.on("secureConnection", (socket: TLSSocket) => {
        this.#sockets.add(socket);
        if (socket.alpnProtocol === "h2") this.#h2.add(socket);
        socket.once("close", () => {
          this.#sockets.delete(socket);
          this.#busy.delete(socket);
        });
      });
      // A failed handshake (wrong CA, no client certificate) only ends that connection.
      secure.on("tlsClientError", (_error, socket) => socket.destroy());
      this.#secure = secure;
    }
  }

  /**
   * Puts `shortcut` in front of the server's compatibility layer (the 'stream' listener that
   * node:http2 adds for a 'request' handler): a stream it takes never becomes a request object.
   */
  #shortcut(server: http2.Http2Server | http2.Http2SecureServer, shortcut: StreamShortcut): void {
    const compat = server.listeners("stream") as ((...args: unknown[]) => void)[];
    server.removeAllListeners("stream");
    server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      if (shortcut(stream, headers)) {
        this.#inFlight++;
        stream.once("close", () => this.#inFlight--);
        return;
      }
      for (const listener of compat) listener.call(server, stream, headers, ...rest);
    });
  }

  /** Replaces the certificates for new connections; open ones keep theirs. */
  setSecureContext(tls: SecureContextOptions): void {
    this.#secure?.setSecureContext(tls);
  }

  /** In-flight requests (HTTP/1.1 and HTTP/2 streams). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Listens on host:port (0 = any free port); resolves with the bound port. */
  async listen(port: number, host: string): Promise<number> {
    // noDelay: small responses (an ack is ~10 bytes) must not wait for Nagle and delayed ACKs.
    const listener = net.createServer({ noDelay: true, keepAlive: true }, (socket) => this.#dispatch(socket));
    this.#listeners.push(listener);
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(port, host, () => {
        listener.off("error", reject);
        resolve();
      });
    });
    return (listener.address() as AddressInfo).port;
  }

  #dispatch(socket: Socket): void {
    this.#raw.add(socket);
    socket.once("close", () => this.#raw.delete(socket));
    socket.on("error", () => socket.destroy());
    if (this.#secure !== undefined) {
      this.#secure.emit("connection", socket);
      return;
    }
    this.#sockets.add(socket);
    socket.once("close", () => {
      this.#sockets.delete(socket);
      this.#busy.delete(socket);
    });
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, H2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && head.length < H2_PREFACE.length) return; // need more bytes to decide
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      if (isH2) {
        this.#h2.add(socket);
        // The h2 session drains what is buffered on its next tick; resuming here would race it.
        this.http2.emit("connection", socket);
      } else {
        this.http1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  }

  /** Stops accepting connections on every port. */
  stopAccepting(): void {
    this.#closing = true;
    for (const listener of this.#listeners) listener.close();
    // Idle HTTP/1.1 keep-alive sockets would otherwise carry new requests during the drain; an
    // HTTP/2 session gets GOAWAY instead and ends once its open streams (calls) have finished.
    for (const socket of this.#sockets)
      if (!this.#busy.has(socket) && !this.#h2.has(socket)) socket.destroySoon();
    for (const session of this.#sessions) session.close();
  }

  /** Waits until no request is in flight, at most `ms`. */
  async drain(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.#inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /** Destroys whatever is left and waits for the listeners to close. */
  async close(): Promise<void> {
    this.stopAccepting();
    for (const session of this.#sessions) session.destroy();
    for (const socket of this.#raw) socket.destroy();
    await Promise.all(
      this.#listeners.map(
        (listener) =>
          new Promise<void>((resolve) => (listener.listening ? listener.close(() => resolve()) : resolve())),
      ),
    );
  }
}
