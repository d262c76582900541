import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createConnection } from "mysql2/promise";
import { afterAll, describe, expect, it } from "vitest";
import { loadMigrations } from "../src/storage/migrate.js";
import { freshMysqlDatabase, selected } from "./support/dialects.js";

const CLI = path.resolve("dist/cli.js");
const dirs: string[] = [];

/** The environment of a fresh shell: no store settings inherited from the developer's. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith("MYSQL_") || key === "DATABASE_URL" || key === "AUTH_TOKEN") delete env[key];
  }
  return { ...env, ...extra };
}

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-cli-"));
  dirs.push(dir);
  return dir;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env = cleanEnv(), cwd = tempDir()): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, cwd });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => {
      stdout += c;
    });
    child.stderr.on("data", (c) => {
      stderr += c;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe("eventsdb command line", () => {
  it.each([
    [["serve", "--rest-port", "abc"], "--rest-port must be a whole number"],
    [["--client-buffer-size", "-1"], "--client-buffer-size must be a whole number"],
    [["migrate", "--database-url", "postgres://db/x"], "scheme postgres: is not supported"],
  ])("exits 2 with one clear line on invalid configuration: %j", async (args, message) => {
    const result = await run(args);
    expect(result.code).toBe(2);
    const lines = result.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^eventsdb: invalid configuration: /);
    expect(lines[0]).toContain(message);
  });

  it("exits 2 on an unknown option", async () => {
    const result = await run(["serve", "--no-such-flag"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("unknown option");
  });

  it("migrates SQLite once and then reports it up to date", async () => {
    const cwd = tempDir();
    const first = await run(["migrate"], cleanEnv(), cwd);
    expect(first).toMatchObject({ code: 0 });
    expect(first.stdout).toContain("applied 001_events, 002_event_sequence, 003_sessions");
    expect(fs.existsSync(path.join(cwd, "data", "events.db"))).toBe(true);
    const second = await run(["migrate"], cleanEnv(), cwd);
    expect(second.stdout).toContain("is up to date");
  });

  it.runIf(selected("mysql"))("migrates MariaDB from two processes at once", async () => {
    const url = await freshMysqlDatabase();
    const env = cleanEnv({ DATABASE_URL: url });
    const results = await Promise.all([run(["migrate"], env), run(["migrate"], env)]);
    expect(results.map((r) => r.code)).toEqual([0, 0]);
    const connection = await createConnection(url);
    try {
      const [rows] = await connection.query("SELECT version FROM eventsdb_migrations ORDER BY version");
      // Every migration once (the list from sql/mysql/, so new migrations need no edit here).
      const versions = (await loadMigrations("mysql")).map((m) => ({ version: m.version }));
      expect(versions.length).toBeGreaterThanOrEqual(3);
      expect(rows).toEqual(versions);
    } finally {
      await connection.end();
    }
  });

  it("serves on the embedded SQLite by default, says so in its start log, and stops cleanly on SIGTERM", async () => {
    const cwd = tempDir();
    const child = spawn(
      process.execPath,
      [CLI, "--rest-port", "0", "--grpc-port", "0", "--host", "127.0.0.1"],
      {
        cwd,
        env: cleanEnv(),
      },
    );
    let log = "";
    child.stdout.on("data", (c) => {
      log += c;
    });
    child.stderr.on("data", (c) => {
      log += c;
    });
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no start line in: ${log}`)), 15_000);
        child.stdout.on("data", () => {
          const m = /listening on ports (\d+)/.exec(log);
          if (m) {
            clearTimeout(timer);
            resolve(Number(m[1]));
          }
        });
      });
      const startLines = log.split("\n").filter((l) => l.includes("listening"));
      expect(startLines).toHaveLength(1);
      expect(startLines[0]).toContain(
        `embedded SQLite file ${path.join(fs.realpathSync(cwd), "data", "events.db")}`,
      );
      // What `curl -d '{…}' localhost:8080/events` sends.
      const res = await fetch(`http://127.0.0.1:${port}/events`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: '{"source":"s","type":"t","subject":"a/b","data":"aGk="}',
      });
      expect(await res.json()).toEqual({ id: 1 });
      expect(log).toContain("AUTH_TOKEN is not set");
    } finally {
      child.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    expect(fs.existsSync(path.join(cwd, "data", "events.db"))).toBe(true);
  });
});
