import type { IncomingHttpHeaders } from "node:http";
import proxyAddr from "@fastify/proxy-addr";

/**
 * --trust-proxy: which peers' X-Forwarded-For is believed. `true` trusts every peer, a list
 * trusts those addresses, CIDR ranges and proxy-addr's names (loopback, linklocal, uniquelocal).
 */
export type TrustProxy = boolean | readonly string[];

/** Whether a hop of X-Forwarded-For (0 = the socket's peer) is a trusted proxy. */
export type TrustFunction = (address: string, hop: number) => boolean;

/**
 * The trust rule as a function, given to Fastify as its `trustProxy` and used by the gRPC unary
 * fast path, so both derive the same client address; undefined when no proxy is trusted. Throws on
 * an address or range that cannot be parsed (a configuration error).
 */
export function trustFunction(trust: TrustProxy): TrustFunction | undefined {
  if (trust === false || (Array.isArray(trust) && trust.length === 0)) return undefined;
  if (trust === true) return () => true;
  return proxyAddr.compile([...(trust as readonly string[])]);
}

/**
 * The client's address: the socket's peer, or, when it is a trusted proxy, the nearest address in
 * X-Forwarded-For that is not itself a trusted proxy (Fastify's `request.ip` with `trustProxy`,
 * computed the same way by @fastify/proxy-addr).
 */
export function clientAddress(
  socketAddress: string | undefined,
  headers: IncomingHttpHeaders,
  trust: TrustFunction | undefined,
): string {
  if (trust === undefined) return socketAddress ?? "";
  const request = { headers, socket: { remoteAddress: socketAddress } };
  const all = proxyAddr.all(request as unknown as Parameters<typeof proxyAddr.all>[0], trust);
  return all.at(-1) ?? socketAddress ?? "";
}

/**
 * The request's own origin, `scheme://host`, for the same-origin rules (csrf.ts): the scheme of
 * the connection and the Host (HTTP/2: `:authority`), or, when the peer is a trusted proxy, its
 * X-Forwarded-Proto and X-Forwarded-Host (the last entry of each, as Fastify's request.protocol
 * and request.host take them).
 */
export function ownOrigin(
  socket: { readonly remoteAddress?: string | undefined; readonly encrypted?: boolean } | undefined,
  headers: IncomingHttpHeaders,
  trust: TrustFunction | undefined,
): string {
  const trusted = trust !== undefined && socket !== undefined && trust(socket.remoteAddress ?? "", 0);
  const forwarded = (name: "x-forwarded-proto" | "x-forwarded-host") => {
    const value = trusted ? headers[name] : undefined;
    return typeof value === "string" && value !== "" ? (value.split(",").at(-1) as string).trim() : undefined;
  };
  const scheme = forwarded("x-forwarded-proto") ?? (socket?.encrypted === true ? "https" : "http");
  const host = forwarded("x-forwarded-host") ?? headers.host ?? headers[":authority"] ?? "";
  return `${scheme}://${host}`;
}
