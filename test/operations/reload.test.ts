import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { freePort } from "../support/ports.js";
import {
  killServerProcesses,
  removeTempDirs,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from "../support/process.js";

afterEach(killServerProcesses);
afterAll(removeTempDirs);

const sha256 = (token: string) => createHash("sha256").update(token).digest("hex");

/** Resolves once `predicate` holds; fails after `ms` with what was awaited and the log. */
async function until(
  server: ServerProcess,
  predicate: () => boolean,
  what: string,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${ms} ms:\n${server.log()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The status of GET /events with this bearer token. */
async function status(server: ServerProcess, token: string): Promise<number> {
  const response = await fetch(`${server.url}/events`, { headers: { authorization: `Bearer ${token}` } });
  await response.arrayBuffer();
  return response.status;
}

const requestLines = (server: ServerProcess) =>
  server.logLines().filter((l) => l.includes('"msg":"request"')).length;

describe("SIGHUP reloads the config files", () => {
  it("applies new tokens and the log level at once and names the changes that need a restart", async () => {
    const cwd = tempDir();
    const file = path.join(cwd, "eventsdb.yaml");
    const write = (text: string) => fs.writeFileSync(file, text);
    write(`log-level: warn\ntokens:\n  - name: first\n    sha256: ${sha256("token-one")}\n    read: ["*"]\n`);
    const server = await startServerProcess({
      cwd,
      // LOG_LEVEL (set by the spawner) would win over the file: unset it.
      env: { LOG_LEVEL: "" },
      args: ["--config", file],
      ports: { rest: await freePort(), grpc: await freePort() },
    });

    expect(await status(server, "token-one")).toBe(200);
    expect(await status(server, "token-two")).toBe(401);
    expect(requestLines(server)).toBe(0); // warn: no request lines

    write(
      `log-level: info\nmax-total-clients: 5\ntokens:\n  - name: first\n    sha256: ${sha256("token-one")}\n    read: ["*"]\n` +
        `  - name: second\n    sha256: ${sha256("token-two")}\n    read: ["*"]\n`,
    );
    server.signal("SIGHUP");
    await until(server, () => server.log().includes("need a restart"), "restart line");

    expect(await status(server, "token-two")).toBe(200);
    const restart = server.logLines().find((l) => l.includes("need a restart")) ?? "";
    expect(JSON.parse(restart)).toMatchObject({ keys: ["max-total-clients"] });
    expect(server.log()).toContain('"msg":"log level changed"');
    await until(server, () => requestLines(server) > 0, "request line at info");

    // A broken file changes nothing: the second token still works, and the log says why.
    write("log-level: loud\n");
    server.signal("SIGHUP");
    await until(server, () => server.log().includes("reload failed"), "reload failure line");
    expect(server.log()).toContain("log-level in config file");
    expect(await status(server, "token-two")).toBe(200);

    // Tokens removed from the file stop working.
    write(`log-level: info\ntokens:\n  - name: first\n    sha256: ${sha256("token-one")}\n    read: ["*"]\n`);
    const reloads = server.logLines().filter((l) => l.includes("auth tokens reloaded")).length;
    server.signal("SIGHUP");
    await until(
      server,
      () => server.logLines().filter((l) => l.includes("auth tokens reloaded")).length > reloads,
      "second token reload",
    );
    expect(await status(server, "token-two")).toBe(401);
    expect(await status(server, "token-one")).toBe(200);

    expect((await server.stop()).code).toBe(0);
  });
});
