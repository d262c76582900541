import fs from "node:fs";
import path from "node:path";
import { createConnection } from "mysql2/promise";
import { afterAll, describe, expect, it } from "vitest";
import { loadMigrations } from "../src/storage/migrate.js";
import { freshMysqlDatabase, selected } from "./support/dialects.js";
import { cleanEnv, removeTempDirs, runCli, startServerProcess, tempDir } from "./support/process.js";

/** The CLI in a fresh temporary directory, or in `cwd`. */
const run = (args: string[], env = cleanEnv(), cwd = tempDir("eventsdb-cli-")) => runCli(args, { env, cwd });

afterAll(removeTempDirs);

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

  it.each([
    [{ REST_PORT: "abc" }, [], 'REST_PORT must be a whole number, got "abc"'],
    [{ PROTECT_METRICS: "maybe" }, ["serve"], 'PROTECT_METRICS must be true or false, got "maybe"'],
    [
      { DATABASE_URL: "postgres://db/x" },
      ["migrate"],
      "DATABASE_URL scheme postgres: is not supported; use mysql:// or sqlite:",
    ],
  ])(
    "names the environment variable the user set, not a flag nobody gave: %j",
    async (env, args, message) => {
      const result = await run(args, cleanEnv(env));
      expect(result.code).toBe(2);
      expect(result.stderr.trim()).toBe(`eventsdb: invalid configuration: ${message}`);
    },
  );

  it("still names each option's environment variable in --help", async () => {
    const result = await run(["serve", "--help"]);
    expect(result.code).toBe(0);
    expect(result.out.replace(/\s+/g, " ")).toContain("(default: 8080, env: REST_PORT)");
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
    expect(first.out).toContain("applied 001_events, 002_event_sequence, 003_sessions");
    expect(fs.existsSync(path.join(cwd, "data", "events.db"))).toBe(true);
    const second = await run(["migrate"], cleanEnv(), cwd);
    expect(second.out).toContain("is up to date");
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
    const server = await startServerProcess({ command: [], cwd });
    try {
      const startLines = server.logLines().filter((l) => l.includes("listening"));
      expect(startLines).toHaveLength(1);
      expect(startLines[0]).toContain(
        `embedded SQLite file ${path.join(fs.realpathSync(cwd), "data", "events.db")}`,
      );
      // What `curl -d '{…}' localhost:8080/events` sends.
      const res = await fetch(`${server.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: '{"source":"s","type":"t","subject":"a/b","data":"aGk="}',
      });
      expect(await res.json()).toEqual({ id: 1 });
      expect(server.log()).toContain("AUTH_TOKEN is not set");
    } finally {
      server.signal("SIGTERM");
    }
    expect((await server.exited).code).toBe(0);
    expect(fs.existsSync(path.join(cwd, "data", "events.db"))).toBe(true);
  });
});
