import { describe, expect, it } from "vitest";
import { SlidingWindow } from "../../../src/auth/sliding-window.js";

/** The limiter of --rate-limit and the failed-authentication throttle, on a stepped clock. */
describe("SlidingWindow", () => {
  const window = (limit: number, maxKeys = 10) => {
    const clock = { now: 0 };
    return {
      clock,
      limiter: new SlidingWindow({ limit, windowMs: 60_000, maxKeys, clock: () => clock.now }),
    };
  };

  it("never lets more than the limit into any 60 s, wherever demand starts, and keeps the rate", () => {
    for (const step of [100, 1000, 2999, 7000]) {
      for (const start of [0, 1234, 30_000, 57_000]) {
        const { clock, limiter } = window(10);
        const accepted: number[] = [];
        for (clock.now = start; clock.now < start + 600_000; clock.now += step) {
          if (limiter.take("k") === 0) accepted.push(clock.now);
        }
        let most = 0;
        for (const [i, at] of accepted.entries()) {
          let n = 0;
          for (let j = i; j < accepted.length && (accepted[j] as number) <= at + 60_000; j++) n++;
          most = Math.max(most, n);
        }
        expect(most, `every ${step} ms from ${start}`).toBeLessThanOrEqual(10);
        // …while letting through nearly the limit per minute under steady demand (a 21st of the
        // window late at most).
        expect(accepted.length, `every ${step} ms from ${start}`).toBeGreaterThanOrEqual(
          step > 6000 ? 80 : 90,
        );
      }
    }
  });

  it("says exactly how long to wait", () => {
    let seed = 7;
    const random = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };
    const { clock, limiter } = window(7);
    for (let i = 0; i < 3000; i++) {
      clock.now += Math.floor(random() * 5000);
      const wait = limiter.take("k");
      if (wait === 0) continue;
      clock.now += wait - 1;
      expect(limiter.wait("k"), "a millisecond early").toBeGreaterThan(0);
      clock.now += 1;
      expect(limiter.wait("k"), "on time").toBe(0);
    }
  });

  it("keeps keys apart and bounds them: beyond maxKeys new keys go uncounted until old ones go idle", () => {
    const { clock, limiter } = window(1, 2);
    expect([limiter.take("a"), limiter.take("b")]).toEqual([0, 0]);
    expect(limiter.take("a")).toBeGreaterThan(0);
    expect([limiter.take("c"), limiter.take("c")]).toEqual([0, 0]); // not remembered: map full
    clock.now += 63_000;
    expect([limiter.take("c"), limiter.take("c") > 0]).toEqual([0, true]);
  });
});
