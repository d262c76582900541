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

/** How long a test waits for the shared MariaDB to start (it starts on the run's first request). */
const MARIADB_START_TIMEOUT_MS = 60_000;

/** test/global-setup.ts's address for the shared MariaDB; undefined in the unit tier. */
const BROKER = inject("mariadbBroker");

const SQLITE: Dialect = {
  name: "sqlite",
  url: async () => `sqlite:${join(mkdtempSync(join(tmpdir(), "eventsdb-sqlite-")), "events.db")}`,
};

const MYSQL: Dialect = { name: "mysql", url: () => freshMysqlDatabase() };

function selectDialects(filter: string | undefined): readonly Dialect[] {
  // The unit tier has no MariaDB: its storage loops run on SQLite alone.
  const available = BROKER === undefined ? [SQLITE] : [SQLITE, MYSQL];
  if (filter === undefined || filter.trim() === "") return available;
  const wanted = filter
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  const unknown = wanted.filter((name) => name !== SQLITE.name && name !== MYSQL.name);
  if (unknown.length > 0) {
    throw new Error(
      `EVENTSDB_TEST_DIALECTS: unknown dialect(s) ${unknown.join(", ")} (known: sqlite, mysql)`,
    );
  }
  if (BROKER === undefined && wanted.includes(MYSQL.name)) {
    throw new Error(
      "EVENTSDB_TEST_DIALECTS=mysql: the unit tier (npm run test:unit) has no MariaDB; use npm test",
    );
  }
  return available.filter((dialect) => wanted.includes(dialect.name));
}

/**
 * The dialects to run tests against: both in the full run, SQLite alone in the unit tier;
 * `EVENTSDB_TEST_DIALECTS=sqlite` (or `mysql`) narrows the list.
 */
export const DIALECTS: readonly Dialect[] = selectDialects(process.env.EVENTSDB_TEST_DIALECTS);

/**
 * Whether this run covers a dialect. Tests that only make sense on MariaDB (their own server to
 * halt, a MySQL-only behaviour) run under `describe.runIf(selected("mysql"))`, so that
 * `EVENTSDB_TEST_DIALECTS=sqlite` needs no MariaDB at all.
 */
export function selected(name: DialectName): boolean {
  return DIALECTS.some((dialect) => dialect.name === name);
}

let shared: Promise<string> | undefined;

/** `mysql://root@127.0.0.1:PORT/eventsdb` of the run's shared MariaDB, started on the first call. */
export function sharedMysqlUrl(): Promise<string> {
  shared ??= (async () => {
    if (BROKER === undefined) {
      throw new Error(
        "no MariaDB in the unit tier (npm run test:unit): a test that needs one belongs outside test/unit/",
      );
    }
    const response = await fetch(BROKER, { signal: AbortSignal.timeout(MARIADB_START_TIMEOUT_MS) });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`the shared MariaDB did not start: ${text}`);
    return text;
  })();
  return shared;
}

let databases = 0;

/** Creates a new database on the shared MariaDB and returns its URL, so tests never share rows. */
export async function freshMysqlDatabase(): Promise<string> {
  const base = await sharedMysqlUrl();
  const name = `t_${process.pid}_${Date.now().toString(36)}_${databases++}`;
  const connection = await createConnection(base);
  try {
    await connection.query(`CREATE DATABASE \`${name}\``);
  } finally {
    await connection.end();
  }
  const fresh = new URL(base);
  fresh.pathname = `/${name}`;
  return fresh.toString();
}
