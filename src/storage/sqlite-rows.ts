import type SqliteDatabase from "better-sqlite3";
import type { SqliteDatabase as KyselySqliteDatabase, SqliteStatement } from "kysely";

/** Row makers kept, by column list (the queries' shapes are few; a bound all the same). */
const MAX_MAKERS = 256;
const makers = new Map<string, ((values: unknown[]) => Record<string, unknown>) | null>();

/**
 * better-sqlite3 as Kysely's SQLite database, with the rows of reading statements made in
 * JavaScript. In its default mode better-sqlite3 builds every row object through V8's API, one
 * property at a time; for a page of 1000 events that was 1.3–1.8 ms of a 6.3–6.8 ms read (README,
 * Measured). Here a reading statement's `all` asks for arrays (raw mode) and one generated
 * function per column list turns each into an object literal of fixed shape. The rows are the
 * same: the same keys in the same order (a repeated name keeps the last value, as before), the
 * same values. Writes, and `iterate`, go to better-sqlite3 as they are.
 */
export function withFastRows(database: SqliteDatabase.Database): KyselySqliteDatabase {
  return {
    close: () => database.close(),
    prepare(text: string): SqliteStatement {
      const statement = database.prepare(text);
      if (!statement.reader) return statement;
      return {
        reader: true,
        all(parameters) {
          const make = rowMaker(statement.columns().map((column) => column.name));
          if (make === null) return statement.raw(false).all(parameters);
          return statement
            .raw(true)
            .all(parameters)
            .map((values) => make(values as unknown[]));
        },
        run: (parameters) => statement.run(parameters),
        iterate: (parameters) => statement.raw(false).iterate(parameters),
      };
    },
  };
}

/**
 * `(values) => ({ "name0": values[0], … })` for these column names, or null where code cannot be
 * generated. A column named `__proto__` sets the row's prototype, as it does in better-sqlite3's
 * own rows.
 */
function rowMaker(names: readonly string[]): ((values: unknown[]) => Record<string, unknown>) | null {
  const key = names.join("\0");
  let make = makers.get(key);
  if (make !== undefined) return make;
  // JSON.stringify quotes each name as a JavaScript string literal: nothing of it runs as code.
  const fields = names.map((name, i) => `${JSON.stringify(name)}: values[${i}]`).join(", ");
  try {
    make = new Function("values", `return { ${fields} };`) as (values: unknown[]) => Record<string, unknown>;
  } catch {
    // node --disallow-code-generation-from-strings: better-sqlite3's own rows, as before.
    make = null;
  }
  if (makers.size >= MAX_MAKERS) makers.delete(makers.keys().next().value as string);
  makers.set(key, make);
  return make;
}
