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
import type { ConnectionConfig } from "./config.js";

export type Handler = (
  req: IncomingMessage | Http2ServerRequest,
  res: ServerResponse | Http2ServerResponse,
) => void;

// RFC 9113 §3.4: a prior-knowledge HTTP/2 client starts with this preface; HTTP/1.x never does.
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/**
 * How often HTTP/1.1 connections are checked against the header and request timeouts: node checks
 * them on an interval (30 s by default), so a timeout is enforced to within this.
 */
const CONNECTIONS_CHECK_MS = 1000;

/**
 * Connections the kernel may hold accepted-but-not-yet-taken per listener (it caps this at
 * net.core.somaxconn). Node asks for 511; a burst of new connections while the loop is busy for a
 * moment (a thousand streams opening, publishers opening connections while their POSTs wait for a
 * slow commit) overflowed that, and a dropped SYN is retried by the client only after 1 s, then
 * 3 s, 7 s: seconds of a POST's time spent before the server ever saw it.
 */
export const LISTEN_BACKLOG = 4096;

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
 *
 * Silent and slow clients are cut (ConnectionConfig): a connection that has not shown its protocol
 * (first bytes, TLS handshake) and sent its first request's headers within the header timeout; an
 * HTTP/1.1 request that has not arrived whole within the request timeout; a connection with nothing
 * in flight for the idle timeout (HTTP/1.1 keep-alive; an HTTP/2 session without an open stream
 * gets GOAWAY). An open stream, however quiet, keeps its connection.
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
  readonly #limits: ConnectionConfig;

  /** The app's handler (Fastify's), set by {@link attach} before anything listens. */
  #handler: Handler | undefined;

  /**
   * @param shortcut takes a raw HTTP/2 stream before the compatibility layer and the app when it
   *   returns true (the unary gRPC append path, see transports/grpc/fast-path.ts)
   * @param limits timeouts and the HTTP/2 stream limit of every connection
   */
  constructor(tls: FrontTls | undefined, shortcut: StreamShortcut | undefined, limits: ConnectionConfig) {
    this.#limits = limits;
    const tracked: Handler = (req, res) => {
      this.#inFlight++;
      const socket = "stream" in req ? undefined : (req.socket as Socket);
      if (socket !== undefined) this.#busy.set(socket, (this.#busy.get(socket) ?? 0) + 1);
      res.once("close", () => {
        this.#inFlight--;
        if (socket === undefined) return;
        const count = this.#busy.get(socket);
        // Gone with its socket: responses queued behind a closed connection close after it.
        if (count === undefined) return;
        if (count > 1) this.#busy.set(socket, count - 1);
        else {
          this.#busy.delete(socket);
          if (this.#closing && !socket.destroyed) socket.destroySoon();
        }
      });
      this.#handler?.(req, res); // set before listen(): see attach()
    };
    // RFC 9113 §5.1.2: a peer that opens more streams than this gets them refused (RST_STREAM).
    const settings = { maxConcurrentStreams: limits.maxConcurrentStreams };
    this.http1 = http.createServer(tracked as (req: IncomingMessage, res: ServerResponse) => void);
    applyHttp1Timeouts(this.http1, limits);
    this.http2 = http2.createServer(
      { settings },
      tracked as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
    );
    const trackSession = (session: Http2Session) => {
      this.#sessions.add(session);
      session.once("close", () => this.#sessions.delete(session));
      this.#closeWhenIdle(session);
    };
    this.http2.on("session", trackSession);
    if (shortcut !== undefined) this.#shortcut(this.http2, shortcut);
    if (tls !== undefined) {
      const secure = http2.createSecureServer(
        {
          ...tls,
          allowHTTP1: true,
          rejectUnauthorized: tls.requestCert,
          settings,
          // A client that does not finish the handshake in time gets 'tlsClientError' (below).
          handshakeTimeout: limits.headerTimeoutMs,
        },
        tracked as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
      );
      // HTTP/1.1 over TLS (ALPN http/1.1) is served by this server's own copy of node's HTTP/1.1.
      applyHttp1Timeouts(secure, limits);
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
   * Closes an HTTP/2 session (GOAWAY) while it has no open stream: at first for the header timeout
   * (a client that sent the preface must open a stream, as an HTTP/1.1 client must send a request),
   * then for the idle timeout after its last stream closed. A stream of any age keeps it open.
   */
  #closeWhenIdle(session: Http2Session): void {
    let open = 0;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number) => {
      timer = setTimeout(() => {
        if (open === 0) session.close();
      }, ms);
      timer.unref();
    };
    arm(this.#limits.headerTimeoutMs);
    session.on("stream", (stream: ServerHttp2Stream) => {
      open++;
      clearTimeout(timer);
      this.#boundRequestBody(stream);
      stream.once("close", () => {
        open--;
        if (open === 0 && !session.closed) arm(this.#limits.idleTimeoutMs);
      });
    });
    session.once("close", () => clearTimeout(timer));
  }

  /**
   * An HTTP/2 request must arrive whole within --request-timeout, as an HTTP/1.1 one must (node
   * applies requestTimeout to HTTP/1.1 only): a stream whose body still trickles in then is
   * cancelled. What counts is the peer's END_STREAM (the stream's state), not whether the app read
   * the body; a request without a body (GET) ends with its headers and is never timed.
   */
  #boundRequestBody(stream: ServerHttp2Stream): void {
    if (stream.endAfterHeaders) return;
    const timer = setTimeout(() => {
      if (stream.destroyed || stream.closed) return;
      const state = stream.state.state;
      if (state === http2.constants.NGHTTP2_STREAM_STATE_OPEN) {
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }
    }, this.#limits.requestTimeoutMs);
    timer.unref();
    stream.once("close", () => clearTimeout(timer));
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

  /**
   * Serves the app: `handler` gets every request that no shortcut took, HTTP/1.1 and HTTP/2 alike.
   * Returns the HTTP/1.1 server, which Fastify's serverFactory wants (Fastify never listens on it:
   * {@link listen} does).
   */
  attach(handler: Handler): http.Server {
    this.#handler = handler;
    return this.http1;
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
    if (this.#handler === undefined) throw new Error("Front.listen before attach: no app to serve");
    // noDelay: small responses (an ack is ~10 bytes) must not wait for Nagle and delayed ACKs.
    const listener = net.createServer({ noDelay: true, keepAlive: true }, (socket) => this.#dispatch(socket));
    this.#listeners.push(listener);
    await new Promise<void>((resolve, reject) => {
      listener.once("error", reject);
      listener.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
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
    // Nothing, or not enough to tell HTTP/2's preface from HTTP/1.1, within the header timeout: cut.
    const silent = setTimeout(() => socket.destroy(), this.#limits.headerTimeoutMs);
    socket.once("close", () => clearTimeout(silent));
    let head: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, H2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && head.length < H2_PREFACE.length) return; // need more bytes to decide
      clearTimeout(silent);
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
    // Stops node's HTTP/1.1 connection checks (see applyHttp1Timeouts); they never listened.
    this.http1.close();
    this.#secure?.close();
    await Promise.all(
      this.#listeners.map(
        (listener) =>
          new Promise<void>((resolve) => (listener.listening ? listener.close(() => resolve()) : resolve())),
      ),
    );
  }
}

/**
 * Node's HTTP/1.1 timeouts: headers (a slowloris sending a header line now and then), the whole
 * request, and keep-alive. Node enforces the first two from a timer it starts only when the server
 * itself listens; these servers never do (the front's listeners hand them sockets), so the timer
 * is started here the same way.
 */
function applyHttp1Timeouts(server: http.Server | http2.Http2SecureServer, limits: ConnectionConfig): void {
  const target = server as unknown as {
    headersTimeout: number;
    requestTimeout: number;
    keepAliveTimeout: number;
    connectionsCheckingInterval: number;
  };
  target.headersTimeout = limits.headerTimeoutMs;
  target.requestTimeout = limits.requestTimeoutMs;
  // Beyond common proxies' 60 s idle timeout by default, so the proxy closes first.
  target.keepAliveTimeout = limits.idleTimeoutMs;
  target.connectionsCheckingInterval = Math.min(CONNECTIONS_CHECK_MS, limits.headerTimeoutMs);
  server.emit("listening");
}
