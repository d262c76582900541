import { describe, expect, it, vi } from "vitest";
import {
  backoffMs,
  Pacer,
  type RetryPolicy,
  retryAfterMs,
} from "../../../../src/subscriptions/delivery/retry.js";

const policy: RetryPolicy = { baseMs: 100, maxMs: 5000, maxAttempts: 10, maxRetryMs: 60_000 };

describe("backoff", () => {
  it("doubles its ceiling per attempt, capped, with full jitter", () => {
    expect(backoffMs(policy, 1, () => 0.999999)).toBe(99);
    expect(backoffMs(policy, 3, () => 0.999999)).toBe(399);
    expect(backoffMs(policy, 20, () => 0.999999)).toBe(4999);
    expect(backoffMs(policy, 5, () => 0)).toBe(0);
    expect(backoffMs(policy, 2, () => 0.5)).toBe(100);
  });
  it("stays finite for huge attempt counts", () => {
    expect(backoffMs(policy, 10_000, () => 0.5)).toBe(2500);
  });
});

describe("Retry-After", () => {
  const now = Date.parse("2026-12-02T10:00:00Z");
  it("reads delay-seconds and HTTP dates, capped", () => {
    expect(retryAfterMs("3", 5000, now)).toBe(3000);
    expect(retryAfterMs(" 0 ", 5000, now)).toBe(0);
    expect(retryAfterMs("120", 5000, now)).toBe(5000);
    expect(retryAfterMs("Wed, 02 Dec 2026 10:00:02 GMT", 5000, now)).toBe(2000);
    expect(retryAfterMs("Wed, 02 Dec 2026 09:00:00 GMT", 5000, now)).toBe(0);
  });
  it("ignores what it cannot read (the backoff applies)", () => {
    expect(retryAfterMs(undefined, 5000, now)).toBeUndefined();
    expect(retryAfterMs("soon", 5000, now)).toBeUndefined();
    expect(retryAfterMs("-1", 5000, now)).toBeUndefined();
  });
});

describe("the granted rate", () => {
  it("starts each request 60/rate seconds after the one before", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    try {
      const pacer = new Pacer(600); // one request per 100 ms
      const signal = new AbortController().signal;
      const started: number[] = [];
      const turns = [0, 1, 2].map((i) => pacer.turn(signal).then(() => started.push(i)));
      await vi.advanceTimersByTimeAsync(0);
      expect(started).toEqual([0]);
      await vi.advanceTimersByTimeAsync(99);
      expect(started).toEqual([0]);
      await vi.advanceTimersByTimeAsync(1);
      expect(started).toEqual([0, 1]);
      await vi.advanceTimersByTimeAsync(100);
      expect(started).toEqual([0, 1, 2]);
      await Promise.all(turns);
    } finally {
      vi.useRealTimers();
    }
  });

  it("does not wait without a limit", async () => {
    const pacer = new Pacer(undefined);
    const signal = new AbortController().signal;
    await Promise.all([pacer.turn(signal), pacer.turn(signal), pacer.turn(signal)]);
  });
});
