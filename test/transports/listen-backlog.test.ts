import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LISTEN_BACKLOG } from "../../src/front.js";
import { DIALECTS } from "../support/dialects.js";
import { startTestServer, type TestServer } from "../support/server.js";

/** The accept-queue length a listening TCP socket on 127.0.0.1:port was given (ss: Send-Q). */
async function backlogOf(port: number): Promise<number> {
  const { stdout } = await promisify(execFile)("ss", ["-ltnH", `sport = :${port}`]);
  const fields = stdout.trim().split(/\s+/);
  // State Recv-Q Send-Q Local Peer; for a listener Send-Q is its backlog.
  return Number(fields[2]);
}

const sqlite = DIALECTS.find((dialect) => dialect.name === "sqlite");

describe("listeners", () => {
  let t: TestServer;
  beforeAll(async () => {
    if (sqlite === undefined) throw new Error("no sqlite dialect");
    t = await startTestServer(await sqlite.url());
  });
  afterAll(() => t.close());

  it("ask the kernel for an accept queue of LISTEN_BACKLOG (capped by net.core.somaxconn), not node's 511", async () => {
    const somaxconn = Number(readFileSync("/proc/sys/net/core/somaxconn", "utf8").trim());
    const expected = Math.min(LISTEN_BACKLOG, somaxconn);
    expect(LISTEN_BACKLOG).toBeGreaterThan(511);
    expect(await backlogOf(t.server.restPort)).toBe(expected);
    expect(await backlogOf(t.server.grpcPort)).toBe(expected);
  });
});
