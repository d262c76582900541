import { describe, expect, it } from "vitest";
import { FailureLog } from "../../src/failure-log.js";
import type { Logger } from "../../src/log.js";

function recorder() {
  const lines: { level: string; message: string; bindings: Record<string, unknown> }[] = [];
  const log: Logger = {
    error: (bindings, message) =>
      lines.push({ level: "error", message, bindings: bindings as Record<string, unknown> }),
    warn: (bindings, message) =>
      lines.push({ level: "warn", message, bindings: bindings as Record<string, unknown> }),
    info: (bindings, message) =>
      lines.push({ level: "info", message, bindings: bindings as Record<string, unknown> }),
    child: () => log,
  };
  return { log, lines };
}

describe("the log rule for a failing dependency", () => {
  const setup = () => {
    const { log, lines } = recorder();
    let now = 0;
    const counted: string[] = [];
    const rule = new FailureLog(log, (operation) => counted.push(operation), {
      intervalMs: 30_000,
      now: () => now,
    });
    return { rule, lines, counted, advance: (ms: number) => (now += ms) };
  };

  it("says when it fails, again every interval while it goes on, and when it works again; counts every failure", () => {
    const { rule, lines, counted, advance } = setup();
    rule.succeeded();
    for (let i = 0; i < 1000; i++) {
      rule.failed(
        i % 2 === 0 ? "get" : "append",
        Object.assign(new Error("refused"), { code: "ECONNREFUSED" }),
      );
      advance(50);
    }
    rule.succeeded();
    rule.succeeded();
    expect(counted).toHaveLength(1000);
    expect(lines.map((l) => `${l.level} ${l.message}`)).toEqual([
      "error store failing",
      "warn store still failing",
      "info store works again",
    ]);
    expect(lines[1]?.bindings).toMatchObject({ reason: "ECONNREFUSED", failures: 600, failingSeconds: 30 });
    expect(lines[2]?.bindings).toMatchObject({ failures: 1000, failingSeconds: 50 });
  });

  it("damps a flapping dependency to one failing line per interval", () => {
    const { rule, lines, advance } = setup();
    for (let i = 0; i < 100; i++) {
      rule.failed("get", new Error("bad"));
      rule.succeeded();
      advance(100);
    }
    expect(lines.map((l) => l.message)).toEqual(["store failing", "store works again"]);
    advance(30_000);
    rule.failed("get", new Error("bad"));
    expect(lines.map((l) => l.message)).toEqual(["store failing", "store works again", "store failing"]);
  });

  it("counts an error once when a layer above reports what was thrown on it again", () => {
    const { rule, counted } = setup();
    const cause = new Error("timeout");
    const wrapped = new Error("unavailable");
    rule.failed("page", cause, wrapped);
    rule.failed("stream", wrapped);
    rule.failed("stream", cause);
    expect(counted).toEqual(["page"]);
  });
});
