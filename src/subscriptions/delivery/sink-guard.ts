import dns from "node:dns";
import type { LookupFunction } from "node:net";
import net from "node:net";

/**
 * Refuses web hook sinks inside the server's own network: a subscription must not make the server
 * an open proxy to its loopback, its private networks or the cloud metadata service (169.254.169.254).
 * The check runs on the address actually connected to — as the `lookup` of every request, so a
 * name that resolves to a public address for the check and a private one for the connection (DNS
 * rebinding) cannot slip past — and on literal addresses, which Node connects to without a lookup.
 */

/** IPv4 ranges no sink may be in (RFC 6890 special-purpose registry, the ones that are not global). */
const V4_BLOCKED: readonly (readonly [string, number])[] = [
  ["0.0.0.0", 8], // "this network", unspecified
  ["10.0.0.0", 8], // RFC 1918
  ["100.64.0.0", 10], // carrier-grade NAT (RFC 6598)
  ["127.0.0.0", 8], // loopback
  ["169.254.0.0", 16], // link-local (cloud metadata services)
  ["172.16.0.0", 12], // RFC 1918
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.168.0.0", 16], // RFC 1918
  ["198.18.0.0", 15], // benchmarking
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, and the broadcast address
];

/** IPv6 ranges no sink may be in; the IPv4-embedding ones are checked by their IPv4 address instead. */
const V6_BLOCKED: readonly (readonly [string, number])[] = [
  ["::", 128], // unspecified
  ["::1", 128], // loopback
  ["fc00::", 7], // unique local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated, still routed by some stacks)
  ["ff00::", 8], // multicast
  ["100::", 64], // discard-only
];

const blocked = new net.BlockList();
for (const [address, prefix] of V4_BLOCKED) blocked.addSubnet(address, prefix, "ipv4");
for (const [address, prefix] of V6_BLOCKED) blocked.addSubnet(address, prefix, "ipv6");

/**
 * The IPv4 address an IPv6 address carries, when it is one of the forms that reach an IPv4 host:
 * IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4
 * (2002:AABB:CCDD::/48). Undefined otherwise.
 */
export function embeddedIpv4(address: string): string | undefined {
  const words = ipv6Words(address);
  if (words === undefined) return undefined;
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  const zero = (from: number, to: number) => words.slice(from, to).every((w) => w === 0);
  if (zero(0, 5) && words[5] === 0xffff) return v4(words[6] as number, words[7] as number);
  if (zero(0, 6) && !(words[6] === 0 && (words[7] as number) <= 1)) {
    return v4(words[6] as number, words[7] as number);
  }
  if (words[0] === 0x64 && words[1] === 0xff9b && zero(2, 6))
    return v4(words[6] as number, words[7] as number);
  if (words[0] === 0x2002) return v4(words[1] as number, words[2] as number);
  return undefined;
}

/** An IPv6 address as its eight 16-bit words (a trailing dotted IPv4 part included), or undefined. */
function ipv6Words(address: string): number[] | undefined {
  if (net.isIPv6(address) === false) return undefined;
  let text = address.split("%")[0] as string; // a zone id names an interface, not an address
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted !== null) {
    const [a, b, c, d] = (dotted[1] as string).split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const part = (s: string | undefined) => (s === undefined || s === "" ? [] : s.split(":"));
  const left = part(head);
  const right = part(tail);
  const fill = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill("0");
  const words = [...left, ...fill, ...right].map((w) => Number.parseInt(w, 16));
  return words.length === 8 ? words : undefined;
}

/** True when a sink may not be at this IP address (loopback, private, link-local, multicast…). */
export function isForbiddenAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 4) return blocked.check(address, "ipv4");
  if (family !== 6) return true; // not an address at all: nothing to connect to safely
  const v4 = embeddedIpv4(address);
  if (v4 !== undefined) return blocked.check(v4, "ipv4");
  return blocked.check(address.split("%")[0] as string, "ipv6");
}

/** A sink was refused: it resolves to an address the server does not deliver to. */
export class SinkRefused extends Error {
  override readonly name = "SinkRefused";
  readonly code = "ESINKREFUSED";
}

/**
 * The `lookup` for node:http(s) requests to sinks: resolves like the default, then refuses
 * (ESINKREFUSED) when any address it would connect to is forbidden, unless private sinks are allowed.
 */
export function guardedLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error !== null) {
        (callback as (e: Error) => void)(error);
        return;
      }
      const list = addresses as dns.LookupAddress[];
      const bad = allowPrivate ? undefined : list.find((entry) => isForbiddenAddress(entry.address));
      if (bad !== undefined) {
        (callback as (e: Error) => void)(
          new SinkRefused(`sink host ${hostname} resolves to ${bad.address}, a private or local address`),
        );
        return;
      }
      if (options.all === true) {
        (callback as (e: null, a: dns.LookupAddress[]) => void)(null, list);
        return;
      }
      const first = list[0];
      if (first === undefined) {
        (callback as (e: Error) => void)(new SinkRefused(`sink host ${hostname} has no address`));
        return;
      }
      (callback as (e: null, a: string, f: number) => void)(null, first.address, first.family);
    });
  };
}

/**
 * Refuses a sink URL before any connection: only http and https, and a literal address (which
 * Node connects to without calling `lookup`) must be allowed. Names are checked when they resolve.
 */
export function checkSinkUrl(sink: URL, allowPrivate: boolean): void {
  if (sink.protocol !== "http:" && sink.protocol !== "https:") {
    throw new SinkRefused(`sink scheme ${sink.protocol} is not http or https`);
  }
  const host = sink.hostname.startsWith("[") ? sink.hostname.slice(1, -1) : sink.hostname;
  if (!allowPrivate && net.isIP(host) !== 0 && isForbiddenAddress(host)) {
    throw new SinkRefused(`sink address ${host} is a private or local address`);
  }
}
