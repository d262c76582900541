import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { CLI } from "../support/process.js";
import { systemTool } from "../support/tools.js";

/**
 * examples/systemd/eventsdb.service: systemd's own checker accepts it (systemd-analyze, Debian
 * package `systemd`, installed by .ci/run), and its stop, reload and restart rules agree with the
 * server's (SIGTERM drains within --shutdown-timeout, SIGHUP reloads).
 */

const run = promisify(execFile);
const UNIT = fileURLToPath(new URL("../../examples/systemd/eventsdb.service", import.meta.url));
const ENV = fileURLToPath(new URL("../../examples/systemd/eventsdb.env", import.meta.url));
const INSTALLED_BINARY = "/usr/local/bin/eventsdb";

/** The values of `key=` in the unit or environment file text (comments skipped). */
function values(text: string, key: string): string[] {
  return text
    .split("\n")
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

function single(text: string, key: string): string {
  const found = values(text, key);
  if (found.length !== 1) throw new Error(`expected one ${key}=, found ${found.length}`);
  return found[0] as string;
}

describe("examples/systemd/eventsdb.service", () => {
  const unit = readFileSync(UNIT, "utf8");
  const env = readFileSync(ENV, "utf8");
  const dir = mkdtempSync(path.join(tmpdir(), "eventsdb-systemd-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("passes systemd-analyze verify without a warning", async () => {
    // verify checks that ExecStart's binary exists: point it at this checkout's build instead of
    // the installed path.
    const execStart = single(unit, "ExecStart");
    expect(execStart).toBe(`${INSTALLED_BINARY} serve`);
    const copy = path.join(dir, "eventsdb.service");
    writeFileSync(copy, unit.replace(`ExecStart=${execStart}`, `ExecStart=${process.execPath} ${CLI} serve`));
    const { stdout, stderr } = await run(systemTool("systemd-analyze", "systemd"), ["verify", copy]);
    expect(stdout).toBe("");
    expect(stderr).toBe("");
  });

  it("stops with SIGTERM after the server's drain, reloads with SIGHUP, restarts on failure", () => {
    expect(single(unit, "KillSignal")).toBe("SIGTERM");
    expect(single(unit, "ExecReload")).toBe("/bin/kill -HUP $MAINPID");
    expect(single(unit, "Restart")).toBe("on-failure");
    // A configuration error (exit 2) is not retried in a loop.
    expect(single(unit, "RestartPreventExitStatus")).toBe("2");
    expect(values(unit, "EnvironmentFile")).toEqual(["-/etc/eventsdb/eventsdb.env"]);
  });

  it("gives the server longer than its default --shutdown-timeout, and the example file's", () => {
    const unitTimeout = Number(single(unit, "TimeoutStopSec"));
    const byDefault = loadConfig({}, { "database-url": "sqlite::memory:" }).shutdownTimeoutSeconds;
    const fromFile = loadConfig(
      { SHUTDOWN_TIMEOUT: single(env, "SHUTDOWN_TIMEOUT") },
      {},
    ).shutdownTimeoutSeconds;
    expect(unitTimeout).toBeGreaterThan(byDefault);
    expect(unitTimeout).toBeGreaterThan(fromFile);
  });
});
