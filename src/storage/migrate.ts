import fs from "node:fs/promises";
import { sql } from "kysely";
import type { StorageDialect } from "./dialect.js";
import { type BackfillProgress, EventRepository } from "./repository.js";
import { SchemaTooNewError } from "./schema-too-new.js";

const SQL_ROOT = new URL("../../sql/", import.meta.url);

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

/** The numbered migrations of a dialect, `sql/<dialect>/NNN_name.sql`, in order. */
export async function loadMigrations(dialect: StorageDialect["name"]): Promise<Migration[]> {
  const dir = new URL(`${dialect}/`, SQL_ROOT);
  const files = (await fs.readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  return Promise.all(
    files.map(async (file) => ({
      version: Number.parseInt(file, 10),
      name: file.replace(/\.sql$/, ""),
      sql: await fs.readFile(new URL(file, dir), "utf8"),
    })),
  );
}

/**
 * Applies the migrations not yet recorded in `eventsdb_migrations`. Safe to run twice and from two
 * processes at once: the dialect's lock serializes runners, and each re-reads what is applied.
 * Then gives events stored before the hash chain their hashes (EventRepository.backfillChain).
 * Returns the names it applied. Throws {@link SchemaTooNewError} when the database records a
 * migration newer than any this code has.
 */
export async function migrate(
  dialect: StorageDialect,
  backfillProgress?: BackfillProgress,
): Promise<string[]> {
  const applied = await applyMigrations(dialect);
  // Outside the lock, page by page, each page its own commit: an interrupted backfill resumes, and
  // two processes backfilling at once write the same hashes.
  await new EventRepository(dialect).backfillChain(1000, backfillProgress);
  return applied;
}

async function applyMigrations(dialect: StorageDialect): Promise<string[]> {
  const migrations = await loadMigrations(dialect.name);
  const { db } = dialect;
  return dialect.withMigrationLock(async () => {
    await db.schema
      .createTable("eventsdb_migrations")
      .ifNotExists()
      .addColumn("version", "integer", (c) => c.primaryKey())
      .addColumn("name", "varchar(255)", (c) => c.notNull())
      .addColumn("applied_at", "varchar(32)", (c) => c.notNull())
      .execute();
    const rows = await db.selectFrom("eventsdb_migrations").select(["version", "name"]).execute();
    const applied = new Set(rows.map((r) => Number(r.version)));
    const newest = migrations.at(-1);
    const ahead = rows
      .map((r) => ({ version: Number(r.version), name: r.name }))
      .filter((r) => r.version > (newest?.version ?? 0))
      .sort((a, b) => b.version - a.version)[0];
    if (ahead !== undefined) throw new SchemaTooNewError(ahead, newest);
    const done: string[] = [];
    let collation: string | undefined;
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      let script = migration.sql;
      if (dialect.name === "mysql" && script.includes(NO_PAD_BIN)) {
        collation ??= exactCollation(await exactCollationsOf(dialect));
        script = script.replaceAll(NO_PAD_BIN, collation);
      }
      await dialect.runScript(script);
      await db
        .insertInto("eventsdb_migrations")
        .values({ version: migration.version, name: migration.name, applied_at: new Date().toISOString() })
        .execute();
      done.push(migration.name);
    }
    return done;
  });
}

/**
 * MySQL-family migrations name the exact (NO PAD binary) utf8mb4 collation as MariaDB spells it;
 * the runner writes the server's own name for it instead (see sql/mysql/004_exact_text.sql).
 */
const NO_PAD_BIN = "utf8mb4_nopad_bin";
/** NO PAD binary utf8mb4 collations, preferred first: MariaDB 10.2+, then MySQL 8.0+. */
const EXACT_COLLATIONS = [NO_PAD_BIN, "utf8mb4_0900_bin"] as const;

/** The exact collation among those a server has (MariaDB's name first), or an error naming both. */
export function exactCollation(available: readonly string[]): string {
  const found = EXACT_COLLATIONS.find((name) => available.includes(name));
  if (found === undefined) {
    throw new Error(
      `this MySQL server has neither ${EXACT_COLLATIONS.join(" (MariaDB 10.2+) nor ")} (MySQL 8.0+): ` +
        "eventsdb needs a NO PAD binary collation to compare subjects and ids exactly",
    );
  }
  return found;
}

async function exactCollationsOf(dialect: StorageDialect): Promise<string[]> {
  const result = await sql<{ name: string }>`
    SELECT COLLATION_NAME AS name FROM information_schema.COLLATIONS
    WHERE COLLATION_NAME IN (${sql.join(EXACT_COLLATIONS)})
  `.execute(dialect.db);
  return result.rows.map((row) => row.name);
}
