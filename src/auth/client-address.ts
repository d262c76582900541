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
