import { describe, expect, it } from "vitest";
import {
  checkSinkUrl,
  embeddedIpv4,
  guardedLookup,
  isForbiddenAddress,
  SinkRefused,
} from "../../../../src/subscriptions/delivery/sink-guard.js";

/** Sinks on the server's own networks are refused, by the address connected to. */

describe("forbidden sink addresses", () => {
  it.each([
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "::127.0.0.1",
    "not-an-address",
  ])("refuses %s", (address) => {
    expect(isForbiddenAddress(address)).toBe(true);
  });

  it.each(["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])(
    "allows %s",
    (address) => {
      expect(isForbiddenAddress(address)).toBe(false);
    },
  );

  it("reads the IPv4 address inside mapped, NAT64 and 6to4 addresses", () => {
    expect(embeddedIpv4("::ffff:1.2.3.4")).toBe("1.2.3.4");
    expect(embeddedIpv4("64:ff9b::102:304")).toBe("1.2.3.4");
    expect(embeddedIpv4("2002:102:304::1")).toBe("1.2.3.4");
    expect(embeddedIpv4("2606:4700::1111")).toBeUndefined();
  });
});

describe("sink URLs", () => {
  it("refuses literal private addresses (which Node connects to without a lookup) unless allowed", () => {
    for (const url of [
      "http://127.0.0.1:8080/",
      "http://10.1.2.3/",
      "http://169.254.169.254/latest/meta-data",
      "http://[::1]/",
      "http://[::ffff:127.0.0.1]/",
      "http://0x7f.1/",
    ]) {
      expect(() => checkSinkUrl(new URL(url), false), url).toThrow(SinkRefused);
      expect(() => checkSinkUrl(new URL(url), true), url).not.toThrow();
    }
  });
  it("refuses schemes other than http and https", () => {
    expect(() => checkSinkUrl(new URL("ftp://example.com/"), true)).toThrow(/scheme/);
  });
});

describe("the guarded lookup", () => {
  const lookup = (allow: boolean, host: string) =>
    new Promise<{ error: Error | null; address?: string }>((resolve) => {
      guardedLookup(allow)(host, {}, (error, address) => resolve({ error, address: address as string }));
    });

  it("refuses a name that resolves to loopback, and passes it with --webhook-allow-private", async () => {
    const refused = await lookup(false, "localhost");
    expect(refused.error).toBeInstanceOf(SinkRefused);
    const allowed = await lookup(true, "localhost");
    expect(allowed.error).toBeNull();
    expect(isForbiddenAddress(allowed.address as string)).toBe(true);
  });
});
