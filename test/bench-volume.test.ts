import { type Kysely, sql } from "kysely";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { type LoadResult, loadVolume } from "../bench/volume/load.js";
import { EventsDbClient } from "../src/client/lib/client.js";
import { migrate } from "../src/storage/migrate.js";
import { openDialect } from "../src/storage/open.js";
import type { Database } from "../src/storage/schema.js";
import { DIALECTS } from "./support/dialects.js";
import { cleanEnv, removeTempDirs, runCli, tempDir } from "./support/process.js";
import { startTestServer, type TestServer, testConfig } from "./support/server.js";

// The volume bench's loader (bench/volume/load.ts) writes rows behind the server's back: the store
// it leaves must be one the server could have written. The project's own `eventsdb verify` (the
// built CLI: `npm run build` first) checks the chain over a server on it; ids, the sequence row
// and the subject list are checked too, and an append through the server must continue the chain.

const EVENTS = 2000;

async function withDb<T>(databaseUrl: string, fn: (db: Kysely<Database>) => Promise<T>): Promise<T> {
  const dialect = openDialect(testConfig(databaseUrl).store, 10_000);
  try {
    return await fn(dialect.db);
  } finally {
    await dialect.close();
  }
}

function verify(url: string) {
  const env = cleanEnv();
  delete env.EVENTSDB_URL;
  delete env.EVENTSDB_TOKEN;
  return runCli(["verify", "--url", url], { env, cwd: tempDir("eventsdb-volume-") });
}

afterAll(() => removeTempDirs());

// Loading and verifying 2000 events takes a few seconds: a generous cap, not a timing claim.
describe.each(DIALECTS)("the volume bench's loader on $name", { timeout: 120_000 }, (dialect) => {
  const servers: TestServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((server) => server.close()));
  });

  it("leaves a store that eventsdb verify accepts, with contiguous ids, the sequence row and every subject", async () => {
    const databaseUrl = await dialect.url();
    const loaded: LoadResult = await loadVolume(databaseUrl, { events: EVENTS, seed: 7 });
    expect(loaded.landmarks.events).toBe(EVENTS);

    const stored = await withDb(databaseUrl, async (db) => {
      const ids = await db
        .selectFrom("events")
        .select((eb) => [eb.fn.countAll().as("count"), eb.fn.min("id").as("min"), eb.fn.max("id").as("max")])
        .executeTakeFirstOrThrow();
      const sequence = await db
        .selectFrom("event_sequence")
        .select(["last_id", "last_hash"])
        .where("name", "=", "events")
        .executeTakeFirstOrThrow();
      const sizes = await sql<{ wrong: number | string }>`
        SELECT COUNT(*) AS wrong FROM events
        WHERE event_size <> length(data) + coalesce(length(extensions), 0)`.execute(db);
      return { ids, sequence, wrongSizes: Number(sizes.rows[0]?.wrong) };
    });
    expect([Number(stored.ids.count), Number(stored.ids.min), Number(stored.ids.max)]).toEqual([
      EVENTS,
      1,
      EVENTS,
    ]);
    expect(Number(stored.sequence.last_id)).toBe(EVENTS);
    expect(Buffer.from(stored.sequence.last_hash as Buffer).toString("hex")).toBe(loaded.lastHash);
    expect(stored.wrongSizes).toBe(0);

    const server = await startTestServer(databaseUrl);
    servers.push(server);
    const checked = await verify(server.url);
    expect(checked.code, checked.stderr).toBe(0);
    expect(checked.out).toContain(`verified ${EVENTS} links (0 tombstones)`);
    expect(checked.out).toContain(`last id ${EVENTS}, hash ${loaded.lastHash}`);

    const client = new EventsDbClient({ url: server.url });
    const subjects = await client.subjects();
    expect(subjects).toHaveLength(loaded.landmarks.distinctSubjects);
    expect(subjects).toContain(loaded.landmarks.hotSubject.subject);
    let hot = 0;
    for await (const _ of client.events({ subject: loaded.landmarks.hotSubject.subject })) hot++;
    expect(hot).toBe(loaded.landmarks.hotSubject.events);

    // The server appends on top of the loaded chain: the sequence row and last hash are right.
    expect(
      await client.append({ source: "test", type: "after.load", subject: "after/load", data: "x" }),
    ).toBe(EVENTS + 1);
    const again = await verify(server.url);
    expect(again.code, again.stderr).toBe(0);
    expect(again.out).toContain(`verified ${EVENTS + 1} links`);
  });

  it("is checked by verify: a row changed after the load breaks the chain there", async () => {
    const databaseUrl = await dialect.url();
    await loadVolume(databaseUrl, { events: 200, seed: 7 });
    await withDb(databaseUrl, (db) => sql`UPDATE events SET type = 'tampered' WHERE id = 150`.execute(db));
    const server = await startTestServer(databaseUrl);
    servers.push(server);
    const checked = await verify(server.url);
    expect(checked.code).toBe(1);
    expect(checked.stderr).toContain("chain broken at event 150: hash");
  });

  it("refuses a store with a table it does not know how to fill (a later migration's derived rows)", async () => {
    const databaseUrl = await dialect.url();
    const store = openDialect(testConfig(databaseUrl).store, 10_000);
    try {
      await migrate(store);
      await sql`CREATE TABLE event_ancestors (ancestor VARCHAR(255), id BIGINT)`.execute(store.db);
    } finally {
      await store.close();
    }
    await expect(loadVolume(databaseUrl, { events: 10, seed: 7 })).rejects.toThrow(/event_ancestors/);
  });

  it("refuses a store that already has events", async () => {
    const databaseUrl = await dialect.url();
    await loadVolume(databaseUrl, { events: 10, seed: 7 });
    await expect(loadVolume(databaseUrl, { events: 10, seed: 7 })).rejects.toThrow(/empty store only/);
  });
});
