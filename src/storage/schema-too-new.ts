import type { Migration } from "./migrate.js";

/**
 * The database was migrated by a newer eventsdb than this one: its schema may differ in ways this
 * code cannot know (every append would fail, say), so neither the server nor `migrate` goes on.
 */
export class SchemaTooNewError extends Error {
  override readonly name = "SchemaTooNewError";

  constructor(database: { version: number; name: string }, code: Migration | undefined) {
    super(
      `the database schema is at version ${database.version} (${database.name}), newer than this ` +
        `eventsdb knows (version ${code?.version ?? 0}${code === undefined ? "" : `, ${code.name}`}): ` +
        "run the eventsdb that migrated it, or a later one",
    );
  }
}
