import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { withFastRows } from "../../../src/storage/sqlite-rows.js";

// withFastRows makes the rows of reading statements from better-sqlite3's raw arrays: they must
// be the very rows better-sqlite3 makes itself, keys in the same order, every kind of value.
describe("withFastRows", () => {
  const open: Database.Database[] = [];
  afterEach(() => {
    for (const database of open.splice(0)) database.close();
  });

  function database(): Database.Database {
    const db = new Database(":memory:");
    open.push(db);
    db.exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB, size REAL, note TEXT NULL,
      "constructor" TEXT, "has space" TEXT, "quote""d" TEXT)`);
    const insert = db.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    insert.run(1, "a", Buffer.from([0, 1, 2]), 1.5, null, "c", "s", "q");
    insert.run(2, "b\u2028é", Buffer.alloc(0), -0.25, "n", "", " ", "\\");
    return db;
  }

  const queries: [string, unknown[]][] = [
    ["SELECT * FROM t WHERE id > ? ORDER BY id", [0]],
    ["SELECT id, data, name FROM t ORDER BY id DESC", []],
    // A repeated name keeps the last value, as better-sqlite3's own rows do.
    ["SELECT id AS x, name AS x FROM t", []],
    ["SELECT count(*) AS n, sum(length(data)) AS bytes FROM t WHERE name = ?", ["a"]],
    ['SELECT id AS "__proto__", name FROM t', []],
    ["SELECT id FROM t WHERE id > 5", []],
  ];

  it.each(queries)("answers %s with better-sqlite3's own rows", (sql, parameters) => {
    const db = database();
    const expected = db.prepare(sql).all(parameters);
    const rows = withFastRows(db).prepare(sql).all(parameters) as Record<string, unknown>[];
    expect(rows).toEqual(expected);
    expect(rows.map((row) => Object.keys(row))).toEqual(expected.map((row) => Object.keys(row as object)));
    for (const row of rows) expect(Object.getPrototypeOf(row)).toBe(Object.prototype);
  });

  it("sets the prototype from a column named __proto__, as better-sqlite3's own rows do", () => {
    const db = database();
    const sql = 'SELECT data AS "__proto__", name FROM t ORDER BY id';
    const expected = db.prepare(sql).all() as object[];
    const rows = withFastRows(db).prepare(sql).all([]) as object[];
    expect(rows.map((row) => Object.keys(row))).toEqual(expected.map((row) => Object.keys(row)));
    rows.forEach((row, i) => {
      const prototype = Object.getPrototypeOf(row) as Buffer;
      expect(Buffer.isBuffer(prototype)).toBe(true);
      expect(prototype.equals(Object.getPrototypeOf(expected[i]) as Buffer)).toBe(true);
    });
  });

  it("falls back to better-sqlite3's own rows where code generation is disallowed", () => {
    const module = fileURLToPath(new URL("../../../src/storage/sqlite-rows.ts", import.meta.url));
    const script = `
      import Database from "better-sqlite3";
      const { withFastRows } = await import(${JSON.stringify(module)});
      const db = new Database(":memory:");
      db.exec("CREATE TABLE t (id INTEGER, name TEXT)");
      db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
      console.log(JSON.stringify(withFastRows(db).prepare("SELECT id, name FROM t ORDER BY id").all([])));`;
    const out = execFileSync(
      process.execPath,
      ["--disallow-code-generation-from-strings", "--import", "tsx", "--input-type=module", "-e", script],
      { encoding: "utf8", timeout: 20_000 },
    );
    expect(JSON.parse(out)).toEqual([
      { id: 1, name: "a" },
      { id: 2, name: "b" },
    ]);
  });

  it("runs writes and iterates as better-sqlite3 does", () => {
    const db = database();
    const fast = withFastRows(db);
    const insert = fast.prepare("INSERT INTO t (id, name) VALUES (?, ?)");
    expect(insert.reader).toBe(false);
    expect(insert.run([3, "c"])).toMatchObject({ changes: 1, lastInsertRowid: 3 });
    const select = fast.prepare("SELECT id, name FROM t ORDER BY id");
    expect(select.reader).toBe(true);
    expect([...select.iterate([])]).toEqual(db.prepare("SELECT id, name FROM t ORDER BY id").all());
    // all() after iterate() on the same statement, and the other way round.
    expect(select.all([])).toEqual([...select.iterate([])]);
  });
});
