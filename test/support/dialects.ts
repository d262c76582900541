import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";

export type DialectName = "sqlite" | "mysql";

export interface Dialect {
  name: DialectName;
  /** A database URL for a test: a fresh SQLite file per call, or the shared MariaDB database. */
  url(): string;
}

const ALL_DIALECTS: readonly Dialect[] = [
  {
    name: "sqlite",
    url: () => `sqlite:${join(mkdtempSync(join(tmpdir(), "eventsdb-sqlite-")), "events.db")}`,
  },
  {
    name: "mysql",
    url: () => inject("mysqlUrl"),
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
