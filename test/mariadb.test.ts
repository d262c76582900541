import { existsSync } from "node:fs";
import type { RowDataPacket } from "mysql2/promise";
import { createConnection } from "mysql2/promise";
import { describe, expect, it } from "vitest";
import { selected, sharedMysqlUrl } from "./support/dialects.js";
import { startMariaDb } from "./support/mariadb.js";

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.runIf(selected("mysql"))("MariaDB test harness", () => {
  it("provides the shared server with the expected InnoDB settings", async () => {
    const connection = await createConnection(await sharedMysqlUrl());
    try {
      const [rows] = await connection.query<RowDataPacket[]>(
        "SELECT @@innodb_autoinc_lock_mode AS autoinc, @@innodb_flush_log_at_trx_commit AS flush, DATABASE() AS db",
      );
      expect(rows).toHaveLength(1);
      expect({ ...rows[0] }).toEqual({ autoinc: 2, flush: 1, db: "eventsdb" });
    } finally {
      await connection.end();
    }
  });

  it("starts and stops a private server without leaving a process behind", { timeout: 120_000 }, async () => {
    const mariadb = await startMariaDb({ database: "harness_check" });
    try {
      expect(mariadb.url).toBe(`mysql://root@127.0.0.1:${mariadb.port}/harness_check`);
      expect(mariadb.url).not.toBe(await sharedMysqlUrl());
      expect(isAlive(mariadb.pid)).toBe(true);
      expect(existsSync(mariadb.datadir)).toBe(true);
      const connection = await createConnection(mariadb.url);
      try {
        const [rows] = await connection.query<RowDataPacket[]>("SELECT DATABASE() AS db");
        expect(rows[0]?.db).toBe("harness_check");
      } finally {
        await connection.end();
      }
    } finally {
      await mariadb.stop();
    }
    expect(() => process.kill(mariadb.pid, 0)).toThrow();
    expect(existsSync(mariadb.datadir)).toBe(false);
    await expect(mariadb.stop()).resolves.toBeUndefined();
  });
});
