import { describe, expect, it } from "vitest";
import { parseResult } from "../../../bench/h2load.js";

// The summary h2load (nghttp2 1.52) prints for a timing-based run, and its per-request log.
const OUTPUT = `starting benchmark...
spawning thread #0: 1 total client(s). Timing-based test with 1s of warm-up time and 2s of main duration for measurements.
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 3.00s, 4720.00 req/s, 184.66KB/s
requests: 9440 total, 9443 started, 9440 done, 9437 succeeded, 2 failed, 1 errored, 0 timeout
status codes: 9437 2xx, 0 3xx, 0 4xx, 2 5xx
`;
const LOG = "1795447575087451\t200\t814\n1795447575087453\t200\t1864\n1795447575087453\t503\t12000\n";

describe("the bench's h2load reader", () => {
  it("takes successes, HTTP-level failures and per-request latencies", () => {
    const result = parseResult(OUTPUT, LOG);
    expect(result.succeeded).toBe(9437);
    expect(result.failed).toBe(3);
    expect(result.latenciesMs).toEqual([0.814, 1.864, 12]);
  });

  it("fails loudly when h2load printed no summary (it could not connect, say)", () => {
    expect(() => parseResult("connect() failed: Connection refused\n", "")).toThrow(/no request summary/);
  });
});
