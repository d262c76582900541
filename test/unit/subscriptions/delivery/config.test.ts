import os from "node:os";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../../src/config.js";

/** The --webhook-* and --subscription* flags: defaults, env twins and bounds. */

describe("push delivery configuration", () => {
  it("has safe defaults: private sinks refused, bounded timeout, attempts, time and response bytes", () => {
    expect(loadConfig({}).webhooks).toEqual({
      allowPrivate: false,
      origin: os.hostname(),
      timeoutMs: 10_000,
      responseBytes: 65_536,
      maxAttempts: 10,
      maxRetryMs: 3_600_000,
      backoffMs: 1000,
      backoffMaxMs: 300_000,
      leaseMs: 10_000,
      subscriptionsPerProcess: 1000,
    });
  });

  it("takes flags and their env twins", () => {
    const config = loadConfig(
      { WEBHOOK_ALLOW_PRIVATE: "true", SUBSCRIPTION_LEASE_SECONDS: "3" },
      { "webhook-origin": "events.example", "webhook-max-attempts": "4", "subscriptions-per-process": "0" },
    );
    expect(config.webhooks).toMatchObject({
      allowPrivate: true,
      leaseMs: 3000,
      origin: "events.example",
      maxAttempts: 4,
      subscriptionsPerProcess: 0,
    });
  });

  it.each([
    ["subscription-lease-seconds", "0", "--subscription-lease-seconds must be between 1 and 3600"],
    ["subscription-lease-seconds", "3601", "--subscription-lease-seconds must be between 1 and 3600"],
    ["webhook-timeout-seconds", "0", "--webhook-timeout-seconds must be between 1 and 3600"],
    ["webhook-response-bytes", String(16 * 1024 * 1024 + 1), "--webhook-response-bytes must be between 1"],
    ["webhook-max-attempts", "0", "--webhook-max-attempts must be between 1"],
    ["webhook-max-retry-seconds", "x", "--webhook-max-retry-seconds must be a whole number"],
    ["webhook-allow-private", "maybe", "--webhook-allow-private must be true or false"],
  ])("refuses --%s %s", (flag, value, message) => {
    expect(() => loadConfig({}, { [flag]: value })).toThrow(ConfigError);
    expect(() => loadConfig({}, { [flag]: value })).toThrow(message);
  });
});
