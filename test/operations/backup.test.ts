import { execFile, spawn } from "node:child_process";
import { createReadStream, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { createConnection } from "mysql2/promise";
import { afterAll, describe, expect, it } from "vitest";
import { freshMysqlDatabase, selected, sharedMysqlUrl } from "../support/dialects.js";
import { readAllEvents } from "../support/process.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { systemTool } from "../support/tools.js";

/**
 * The operator's commands of docs/operations.md, run as documented: a backup taken while the
 * server appends is a consistent copy (ids 1..n without a gap), a server starts on the restored
 * copy and goes on numbering after it; and the MySQL user created with the documented grants can
 * run the migrations and the server.
 */

const run = promisify(execFile);
const dir = mkdtempSync(path.join(tmpdir(), "eventsdb-backup-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Appends one event after another until stopped; `acknowledged` counts the answered ones. */
function keepAppending(url: string): { acknowledged: () => number; stop: () => Promise<void> } {
  let count = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const response = await fetch(`${url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          source: "backup-test",
          type: "t",
          subject: `backup/${count % 3}`,
          data: "eA==",
        }),
      });
      if (response.status !== 200) throw new Error(`POST /events answered ${response.status}`);
      await response.arrayBuffer();
      count++;
    }
  })();
  return {
    acknowledged: () => count,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** Runs `backup` while a server on `source` appends; checks the copy on a server on `restored`. */
async function backupWhileWriting(
  source: string,
  backup: () => Promise<void>,
  restore: () => Promise<string>,
): Promise<void> {
  let t: TestServer | undefined = await startTestServer(source);
  let copy: TestServer | undefined;
  try {
    const writer = keepAppending(t.url);
    while (writer.acknowledged() < 20) await new Promise((resolve) => setTimeout(resolve, 20));
    const before = writer.acknowledged();
    await backup();
    await writer.stop();
    const total = writer.acknowledged();
    await t.close();
    t = undefined;

    copy = await startTestServer(await restore());
    const events = await readAllEvents(copy.url);
    // Everything acknowledged before the backup began, nothing after it ended, no gap.
    expect(events.length).toBeGreaterThanOrEqual(before);
    expect(events.length).toBeLessThanOrEqual(total);
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    // The copy's id sequence agrees with its events: the next append follows the last one.
    const next = await fetch(`${copy.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "backup-test", type: "t", subject: "backup/after", data: "eA==" }),
    });
    expect(((await next.json()) as { id: number }).id).toBe(events.length + 1);
  } finally {
    await t?.close();
    await copy?.close();
  }
}

describe("SQLite backup while the server writes (sqlite3 CLI)", () => {
  it.each([
    [".backup", (target: string) => `.backup '${target}'`],
    ["VACUUM INTO", (target: string) => `VACUUM INTO '${target}'`],
  ])("%s gives a consistent copy a server runs on", async (name, command) => {
    const file = path.join(dir, `${name.replace(/\W/g, "")}-live.db`);
    const target = path.join(dir, `${name.replace(/\W/g, "")}-copy.db`);
    await backupWhileWriting(
      `sqlite:${file}`,
      async () => {
        await run(systemTool("sqlite3", "sqlite3"), [file, command(target)]);
      },
      async () => {
        const { stdout } = await run(systemTool("sqlite3", "sqlite3"), [target, "PRAGMA integrity_check"]);
        expect(stdout.trim()).toBe("ok");
        return `sqlite:${target}`;
      },
    );
  });
});

/** The privileges of docs/operations.md's GRANT. */
const DOCUMENTED_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP"] as const;

/**
 * A fresh database and a user that has `privileges` on it (docs/operations.md's CREATE USER and
 * GRANT); `drop` removes the user.
 */
async function databaseUser(
  privileges: readonly string[],
): Promise<{ url: URL; user: string; password: string; drop: () => Promise<void> }> {
  const root = new URL(await sharedMysqlUrl());
  const database = new URL(await freshMysqlDatabase()).pathname.slice(1);
  const user = `ops_${process.pid}_${users++}`;
  const password = "ops-password";
  const admin = await createConnection(root.toString());
  try {
    await admin.query(`CREATE USER '${user}'@'%' IDENTIFIED BY '${password}'`);
    await admin.query(`GRANT ${privileges.join(", ")} ON \`${database}\`.* TO '${user}'@'%'`);
  } finally {
    await admin.end();
  }
  const url = new URL(root);
  url.username = user;
  url.password = password;
  url.pathname = `/${database}`;
  const drop = async () => {
    const cleanup = await createConnection(root.toString());
    await cleanup.query(`DROP USER IF EXISTS '${user}'@'%'`).finally(() => cleanup.end());
  };
  return { url, user, password, drop };
}
let users = 0;

/** Migrates, appends, deletes and signs in and out on `url`; throws at the first step that fails. */
async function migrateAppendDelete(url: string): Promise<void> {
  const t = await startTestServer(url);
  try {
    const posted = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "grant-test", type: "t", subject: "grant/a", data: "eA==" }),
    });
    if (posted.status !== 200) throw new Error(`POST /events answered ${posted.status}`);
    const deleted = await fetch(`${t.url}/events?subject=grant/a`, { method: "DELETE" });
    if (deleted.status !== 200) throw new Error(`DELETE /events answered ${deleted.status}`);
    // Signing out deletes the session row (DELETE too).
    const console = { "sec-fetch-site": "same-origin", "x-eventsdb-console": "1" };
    const signedIn = await fetch(`${t.url}/auth/session`, {
      method: "POST",
      headers: { ...console, "content-type": "application/json" },
      body: "{}",
    });
    if (signedIn.status !== 200) throw new Error(`POST /auth/session answered ${signedIn.status}`);
    const cookie = (signedIn.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const signedOut = await fetch(`${t.url}/auth/session`, {
      method: "DELETE",
      headers: { ...console, cookie },
    });
    if (signedOut.status !== 204) throw new Error(`DELETE /auth/session answered ${signedOut.status}`);
  } finally {
    await t.close();
  }
}

describe.runIf(selected("mysql"))("MySQL: the documented user and grant; mysqldump while writing", () => {
  it("migrates, appends and deletes as a user with the documented grant; its dump restores consistently", async () => {
    const root = new URL(await sharedMysqlUrl());
    const { url, user, password, drop } = await databaseUser(DOCUMENTED_PRIVILEGES);
    const database = url.pathname.slice(1);
    const restored = new URL(await freshMysqlDatabase()).pathname.slice(1);
    const dump = path.join(dir, "eventsdb.sql");
    const client = ["-h", root.hostname, "-P", root.port];
    const second = await databaseUser(DOCUMENTED_PRIVILEGES);
    try {
      await migrateAppendDelete(second.url.toString());
      await backupWhileWriting(
        url.toString(),
        async () => {
          // As the eventsdb user itself: --single-transaction needs no LOCK TABLES.
          await run(systemTool("mysqldump", "mariadb-client"), [
            ...client,
            "-u",
            user,
            `-p${password}`,
            "--single-transaction",
            "--no-tablespaces",
            `--result-file=${dump}`,
            database,
          ]);
        },
        async () => {
          await pipeInto(
            [systemTool("mysql", "mariadb-client"), ...client, "-u", root.username || "root", restored],
            dump,
          );
          const restoredUrl = new URL(root);
          restoredUrl.pathname = `/${restored}`;
          return restoredUrl.toString();
        },
      );
    } finally {
      await drop();
      await second.drop();
    }
  });

  it.each(DOCUMENTED_PRIVILEGES)(
    "needs %s: without it a fresh install cannot migrate, append, delete and sign out",
    async (missing) => {
      const { url, drop } = await databaseUser(DOCUMENTED_PRIVILEGES.filter((p) => p !== missing));
      try {
        await expect(migrateAppendDelete(url.toString())).rejects.toThrow();
      } finally {
        await drop();
      }
    },
  );
});

/** Runs `command` with `file` as its standard input; rejects on a non-zero exit. */
function pipeInto(command: readonly string[], file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const [bin, ...args] = command as [string, ...string[]];
    const child = spawn(bin, args, { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve() : reject(new Error(`${bin} exited ${code}: ${stderr}`)),
    );
    createReadStream(file).pipe(child.stdin);
  });
}
