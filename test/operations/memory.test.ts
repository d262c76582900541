import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import { killServerProcesses, removeTempDirs, startServerProcess, tempDir } from "../support/process.js";

// Issue 16, memory: a process loads the database driver of its store and not the other one, and
// neither the client commands nor a pretty-printer when its output is not a terminal (each is megabytes an idle server would hold;
// `npm run bench -- memory --scenario idle` measures them). Which packages loaded is read from
// the server child itself (test/fixtures/loaded-packages.mjs), after a request that used the store.

const RECORDER = fileURLToPath(new URL("../fixtures/loaded-packages.mjs", import.meta.url));
const DRIVER = { sqlite: "better-sqlite3", mysql: "mysql2" } as const;

afterEach(killServerProcesses);
afterAll(removeTempDirs);

describe.each(DIALECTS)("a serve start on $name", (dialect) => {
  it("loads its own database driver and not the other dialect's", async () => {
    const file = path.join(tempDir(), "loaded.json");
    const server = await startServerProcess({
      databaseUrl: await dialect.url(),
      nodeArgs: ["--import", RECORDER],
      env: { EVENTSDB_LOADED_PACKAGES_FILE: file },
    });
    const res = await fetch(`${server.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "test", type: "test.memory", subject: "memory", data: "aGk=" }),
    });
    expect(res.status).toBe(200);
    expect((await fetch(`${server.url}/events?subject=memory`)).status).toBe(200);
    expect((await server.stop()).code).toBe(0);

    const loaded = JSON.parse(readFileSync(file, "utf8")) as string[];
    // The recorder sees CommonJS packages that ES modules imported: it would see a driver.
    expect(loaded).toContain("fastify");
    expect(loaded).toContain(DRIVER[dialect.name]);
    const other = dialect.name === "sqlite" ? DRIVER.mysql : DRIVER.sqlite;
    expect(loaded).not.toContain(other);
    // Not a terminal: JSON lines, no pino-pretty.
    expect(loaded).not.toContain("pino-pretty");
    // `serve` registers no client commands: their progress bar (cli-progress) stays out.
    expect(loaded).not.toContain("cli-progress");
  });
});
