import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { createConnection } from "mysql2/promise";
import { afterAll, describe, expect, it } from "vitest";
import { envName, SERVE_OPTIONS } from "../src/config.js";
import { loadMigrations } from "../src/storage/migrate.js";
import { freshMysqlDatabase, selected } from "./support/dialects.js";
import { cleanEnv, removeTempDirs, runCli, startServerProcess, tempDir } from "./support/process.js";

/** The CLI in a fresh temporary directory, or in `cwd`. */
const run = (args: string[], env = cleanEnv(), cwd = tempDir("eventsdb-cli-")) => runCli(args, { env, cwd });

afterAll(removeTempDirs);

const PACKAGE_VERSION: string = JSON.parse(
  fs.readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;

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

  it.each([
    [["publsh", "--subject", "x"], "eventsdb: unknown command 'publsh' (did you mean publish?)"],
    [["srve"], "eventsdb: unknown command 'srve' (did you mean serve?)"],
    [["frobnicate"], "eventsdb: unknown command 'frobnicate'"],
  ])("refuses a first word that is no command, with exit 2: %j", async (args, line) => {
    const result = await run(args);
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(line);
    expect(result.out).toBe("");
  });

  it.each([["--version"], ["-V"]])("prints package.json's version for %s", async (flag) => {
    const result = await run([flag]);
    expect(result.code).toBe(0);
    expect(result.out).toBe(`${PACKAGE_VERSION}\n`);
  });

  it("migrate --help lists only what migrate uses; serve --help every option, AUTH_TOKEN and every log level", async () => {
    const migrateHelp = (await run(["migrate", "--help"])).out;
    expect(migrateHelp).toContain("--database-url");
    expect(migrateHelp).toContain("--config");
    expect(migrateHelp).not.toContain("--rest-port");
    expect(migrateHelp).not.toContain("--log-level");
    const serveHelp = (await run(["serve", "--help"])).out.replace(/\s+/g, " ");
    for (const spec of SERVE_OPTIONS) {
      expect(serveHelp).toContain(`--${spec.flag}`);
      expect(serveHelp).toContain(
        `${"default" in spec ? `default: ${spec.default}, ` : ""}env: ${envName(spec.flag)}`,
      );
    }
    expect(serveHelp).toContain("AUTH_TOKEN");
    expect(serveHelp).toContain("EVENTSDB_CONFIG");
    expect(serveHelp).toContain("fatal, error, warn, info, debug, trace, silent");
  });

  it("token prints a fresh random token and the SHA-256 the auth file takes", async () => {
    const [first, second] = await Promise.all([run(["token"]), run(["token"])]);
    const parse = (out: string) => {
      const m = /^token: ([A-Za-z0-9_-]{43})\nsha256: ([0-9a-f]{64})\n$/.exec(out);
      if (m === null) throw new Error(`unexpected output ${JSON.stringify(out)}`);
      return { token: m[1] as string, sha256: m[2] as string };
    };
    const a = parse(first.out);
    const b = parse(second.out);
    expect(a.token).not.toBe(b.token);
    expect(a.sha256).toBe(createHash("sha256").update(a.token).digest("hex"));
  });

  it("reads config files (--config, layered; EVENTSDB_CONFIG) and names the file and key of a bad value", async () => {
    const cwd = tempDir();
    fs.writeFileSync(path.join(cwd, "base.yaml"), "rest-port: 9000\ngrpc-port: 9001\n");
    fs.writeFileSync(path.join(cwd, "prod.json"), JSON.stringify({ "rest-port": "x" }));
    const bad = await run(["serve", "--config", "base.yaml", "--config", "prod.json"], cleanEnv(), cwd);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe(
      'eventsdb: invalid configuration: rest-port in config file prod.json must be a whole number, got "x"',
    );
    fs.writeFileSync(path.join(cwd, "typo.yaml"), "rest-prot: 1\n");
    const typo = await run(["--check-config"], cleanEnv({ EVENTSDB_CONFIG: "typo.yaml" }), cwd);
    expect(typo.code).toBe(2);
    expect(typo.stderr.trim()).toBe(
      "eventsdb: invalid configuration: config file typo.yaml: rest-prot: unknown key (did you mean rest-port?)",
    );
  });

  it("serve --check-config prints the merged configuration with its sources and secrets masked, exit 0", async () => {
    const cwd = tempDir();
    fs.writeFileSync(
      path.join(cwd, "a.yaml"),
      `rest-port: 9000\nlogLevel: debug\ntokens:\n  - name: ci\n    sha256: ${"ab".repeat(32)}\n    write: [ci]\n`,
    );
    fs.writeFileSync(path.join(cwd, "b.yaml"), "rest-port: 9100\n");
    const result = await run(
      ["serve", "--check-config", "--config", "a.yaml", "--config", "b.yaml", "--grpc-port", "9200"],
      cleanEnv({ AUTH_TOKEN: "s3cret-token", DATABASE_URL: "sqlite:./events.db" }),
      cwd,
    );
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.out).toContain("configuration valid; SQLite file");
    expect(result.out).toContain("rest-port: 9100  # rest-port in config file b.yaml\n");
    expect(result.out).toContain("grpc-port: 9200  # --grpc-port\n");
    expect(result.out).toContain("log-level: debug  # logLevel in config file a.yaml\n");
    expect(result.out).toContain("database-url: sqlite:./events.db  # DATABASE_URL\n");
    expect(result.out).toContain("host: 0.0.0.0  # default\n");
    expect(result.out).toContain("# tokens from config file a.yaml");
    expect(result.out).toContain("name: ci");
    expect(result.out).not.toContain("ab".repeat(32));
    expect(result.out).not.toContain("s3cret-token");
    expect(result.out).toContain("AUTH_TOKEN is set");
  });

  it("serve --check-config exits 2 when the store does not answer, without showing its password", async () => {
    const result = await run(
      ["--check-config", "--db-timeout", "2"],
      cleanEnv({ DATABASE_URL: "mysql://u:hunter2@127.0.0.1:1/db" }),
    );
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toMatch(
      /^eventsdb: MySQL mysql:\/\/u:\*\*\*@127\.0\.0\.1:1\/db does not answer: /,
    );
    expect(result.stderr).not.toContain("hunter2");
    expect(result.out).toBe("");
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
      const health = await (await fetch(`${server.url}/healthz`)).json();
      expect(health).toEqual({ status: "ok", version: PACKAGE_VERSION });
    } finally {
      server.signal("SIGTERM");
    }
    expect((await server.exited).code).toBe(0);
    expect(fs.existsSync(path.join(cwd, "data", "events.db"))).toBe(true);
  });
});
