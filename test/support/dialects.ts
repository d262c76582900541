import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createConnection } from "mysql2/promise";
import { inject } from "vitest";

export type DialectName = "sqlite" | "mysql";

export interface Dialect {
  name: DialectName;
  /** A fresh, empty database for a test: a new SQLite file, or a new database on the shared MariaDB. */
  url(): Promise<string>;
}

const ALL_DIALECTS: readonly Dialect[] = [
  {
    name: "sqlite",
    url: async () => `sqlite:${join(mkdtempSync(join(tmpdir(), "eventsdb-sqlite-")), "events.db")}`,
  },
  {
    name: "mysql",
    url: () => freshMysqlDatabase(inject("mysqlUrl")),
  },
];

function selectDialects(filter: string | undefined): readonly Dialect[] {
  if (filter === undefined || filter.trim() === "") return ALL_DIALECTS;
  const wanted = filter
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  const unknown = wanted.filter((name) => !ALL_DIALECTS.some((dialect) => dialect.name === name));
  if (unknown.length > 0) {
    const known = ALL_DIALECTS.map((dialect) => dialect.name).join(", ");
    throw new Error(`EVENTSDB_TEST_DIALECTS: unknown dialect(s) ${unknown.join(", ")} (known: ${known})`);
  }
  return ALL_DIALECTS.filter((dialect) => wanted.includes(dialect.name));
}

/** The dialects to run tests against; `EVENTSDB_TEST_DIALECTS=sqlite,mysql` narrows the list. */
export const DIALECTS: readonly Dialect[] = selectDialects(process.env.EVENTSDB_TEST_DIALECTS);

let databases = 0;

/** Creates a new database next to the one in `url` and returns its URL, so tests never share rows. */
export async function freshMysqlDatabase(url: string): Promise<string> {
  const name = `t_${process.pid}_${Date.now().toString(36)}_${databases++}`;
  const connection = await createConnection(url);
  try {
    await connection.query(`CREATE DATABASE \`${name}\``);
  } finally {
    await connection.end();
  }
  const fresh = new URL(url);
  fresh.pathname = `/${name}`;
  return fresh.toString();
}
