import { generateKeyPairSync } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { type Kysely, sql } from "kysely";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventsDbClient } from "../src/client/lib/client.js";
import { openDialect } from "../src/storage/open.js";
import { EventRepository } from "../src/storage/repository.js";
import type { Database } from "../src/storage/schema.js";
import { DIALECTS, selected } from "./support/dialects.js";
import { type CliRun, cleanEnv, removeTempDirs, runCli, tempDir } from "./support/process.js";
import { startTestServer, type TestServer, testConfig } from "./support/server.js";

// `eventsdb verify`, `export --chain` and `migrate`'s backfill as processes of the built CLI
// (`npm run build` first) against real servers, on both stores; the tampering is done directly in
// the database, behind the server's back.

/** docs/chain.md's worked example: appended first to a fresh store, it has the documented hash. */
const EXAMPLE =
  '{"specversion":"1.0","id":"a1","source":"https://shop.example","type":"order.placed",' +
  '"subject":"orders/42","time":"2026-01-02T03:04:05.678901Z","datacontenttype":"application/json",' +
  '"region":"eu","priority":2,"data":{"total":12.5}}';
const EXAMPLE_HASH = "06ba5c8271025820a5383afc6b23373997b26d7d31134098b8f06aab250fed8a";

/** Events of every kind: subjects and none, JSON and binary data, extensions; returns how many. */
async function seed(client: EventsDbClient): Promise<number> {
  expect(await client.appendCloudEvent(EXAMPLE)).toBe(1);
  await client.append({
    source: "s",
    type: "bytes",
    subject: "orders/1",
    data: new Uint8Array([0, 1, 254, 255]),
  });
  await client.append({ source: "s", type: "text", subject: "orders/2", data: "héllo\nworld" });
  await client.appendCloudEvent({
    id: "c1",
    source: "s",
    type: "nosubject",
    data: { n: 1.5, list: [1, 2], s: "line\nbreak" },
    traceparent: "00-abc",
    count: 3,
    flag: true,
  });
  await client.appendCloudEvent({
    id: "c2",
    source: "s",
    type: "binary",
    subject: "orders/1",
    datacontenttype: "application/octet-stream",
    dataschema: "https://example.com/schema",
    data: new Uint8Array([9, 8, 7, 0, 10, 13]),
  });
  await client.appendCloudEvent('{"specversion":"1.0","id":"c3","source":"s","type":"json","data": 1.50 }');
  const batch = Array.from({ length: 6 }, (_, i) => ({
    id: `b${i}`,
    source: "s",
    type: "batch",
    ...(i % 2 === 0 ? { subject: `orders/${i}/lines` } : {}),
    data: { i },
  }));
  await client.appendBatch(batch);
  return 12;
}

function clientEnv(): NodeJS.ProcessEnv {
  const env = cleanEnv();
  delete env.EVENTSDB_URL;
  delete env.EVENTSDB_TOKEN;
  return env;
}

function cli(args: readonly string[], input?: string | Buffer): Promise<CliRun> {
  return runCli(args, {
    env: clientEnv(),
    cwd: tempDir("eventsdb-verify-"),
    ...(input === undefined ? {} : { input }),
  });
}

/** A broken chain or another failure: the exit code and exactly one `eventsdb: …` line. */
function expectFailure(result: CliRun, code: number, ...fragments: string[]): void {
  expect(result.code, result.stderr).toBe(code);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^eventsdb: /);
  for (const fragment of fragments) expect(lines[0]).toContain(fragment);
}

function expectVerified(result: CliRun, ...fragments: string[]): void {
  expect(result.code, result.stderr).toBe(0);
  expect(result.stderr).toBe("");
  const lines = result.out.split("\n").filter((line) => line !== "");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^verified \d+ links? \(\d+ tombstones?\), \d+ signed, \d+ unsigned \(/);
  for (const fragment of fragments) expect(lines[0]).toContain(fragment);
}

/** `export --chain` to a file, then the file's path. */
async function exportChain(url: string): Promise<string> {
  const file = path.join(tempDir("eventsdb-chain-"), "chain.ndjson");
  const result = await cli(["export", "--chain", "--url", url, "--output", file]);
  expect(result.code, result.stderr).toBe(0);
  expect(result.stderr).toMatch(/^exported \d+ links?\n$/);
  return file;
}

/** The store's database behind the server's back. */
async function withDb<T>(databaseUrl: string, fn: (db: Kysely<Database>) => Promise<T>): Promise<T> {
  const dialect = openDialect(testConfig(databaseUrl).store, 10_000);
  try {
    return await fn(dialect.db);
  } finally {
    await dialect.close();
  }
}

/** Flips the lowest bit of one byte of a stored event's data. */
async function flipDataByte(databaseUrl: string, id: number, at: number): Promise<void> {
  await withDb(databaseUrl, async (db) => {
    const row = await db.selectFrom("events").select("data").where("id", "=", id).executeTakeFirstOrThrow();
    const data = Buffer.from(row.data);
    data[at] = (data[at] as number) ^ 1;
    await sql`UPDATE events SET data = ${data} WHERE id = ${id}`.execute(db);
  });
}

/** Makes the store look as if it was written before the chain existed. */
async function unchain(databaseUrl: string): Promise<void> {
  await withDb(databaseUrl, async (db) => {
    await sql`UPDATE events SET hash = NULL, prev_hash = NULL, signature = NULL`.execute(db);
    await sql`UPDATE event_sequence SET last_hash = NULL`.execute(db);
  });
}

async function hashedIds(databaseUrl: string): Promise<number[]> {
  return withDb(databaseUrl, async (db) => {
    const rows = await db
      .selectFrom("events")
      .select("id")
      .where("hash", "is not", null)
      .orderBy("id")
      .execute();
    return rows.map((row) => Number(row.id));
  });
}

function signingKeyFiles(): { privateFile: string; publicFile: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const dir = tempDir("eventsdb-key-");
  const privateFile = path.join(dir, "key.pem");
  const publicFile = path.join(dir, "public.pem");
  fs.writeFileSync(privateFile, privateKey.export({ type: "pkcs8", format: "pem" }));
  fs.writeFileSync(publicFile, publicKey.export({ type: "spki", format: "pem" }));
  return { privateFile, publicFile };
}

afterAll(() => removeTempDirs());

// Each test runs the CLI a few times (about half a second each): a generous cap, not a timing claim.
describe.each(DIALECTS)("eventsdb verify on $name", { timeout: 120_000 }, (dialect) => {
  let databaseUrl: string;
  const servers: TestServer[] = [];
  const start = async (flags: Record<string, string> = {}) => {
    const server = await startTestServer(databaseUrl, flags);
    servers.push(server);
    return { server, client: new EventsDbClient({ url: server.url }) };
  };
  /** Closes the running servers (the store is free for another process). */
  const stopAll = () => Promise.all(servers.splice(0).map((server) => server.close()));

  beforeEach(async () => {
    databaseUrl = await dialect.url();
  });
  afterEach(stopAll);

  it("verifies an intact chain from the server and from export --chain, and the example has its documented hash", async () => {
    const { server, client } = await start();
    const count = await seed(client);
    const first = await client.chain().next();
    expect(first.value).toMatchObject({ id: 1, hash: EXAMPLE_HASH, prevhash: "0".repeat(64) });

    const last = (await client.newestId()).toString();
    expectVerified(
      await cli(["verify", "--url", server.url]),
      `verified ${count} links (0 tombstones), 0 signed, ${count} unsigned`,
      "signatures not checked: the server has no signing key",
      `last id ${last}, hash `,
    );
    const file = await exportChain(server.url);
    const lines = fs.readFileSync(file, "utf8").trimEnd().split("\n");
    expect(lines).toHaveLength(count);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ id: 1, hash: EXAMPLE_HASH, subject: "orders/42" });
    expectVerified(
      await cli(["verify", "--file", file]),
      `verified ${count} links`,
      "signatures not checked: no --public-key",
    );
    // The same from stdin, as a pipe would give it.
    expectVerified(await cli(["verify", "--file", "-"], fs.readFileSync(file)), `verified ${count} links`);
  });

  it("names the event one byte of whose data changed in the database, from the server and the export", async () => {
    const { server, client } = await start();
    await seed(client);
    const before = await exportChain(server.url);
    await flipDataByte(databaseUrl, 5, 2);
    const fromServer = await cli(["verify", "--url", server.url]);
    expectFailure(fromServer, 1, "chain broken at event 5: hash: expected ");
    expect(fromServer.stdout.length).toBe(0);
    expectFailure(
      await cli(["verify", "--file", await exportChain(server.url)]),
      1,
      "chain broken at event 5: hash",
    );
    // The export from before still verifies: the copy was taken while the chain was intact.
    expectVerified(await cli(["verify", "--file", before]));
  });

  it("names the event after a row deleted in the database, and a row moved to another id", async () => {
    const { server, client } = await start();
    const count = await seed(client);
    const stored = await withDb(databaseUrl, (db) =>
      db.selectFrom("events").select("hash").where("id", "=", 6).executeTakeFirstOrThrow(),
    );
    await withDb(databaseUrl, (db) => sql`DELETE FROM events WHERE id = 6`.execute(db));
    expectFailure(
      await cli(["verify", "--url", server.url]),
      1,
      "chain broken at event 7: link: expected predecessor hash ",
      `(event 5), found ${Buffer.from(stored.hash as Buffer).toString("hex")}`,
    );
    expectFailure(
      await cli(["verify", "--file", await exportChain(server.url)]),
      1,
      "chain broken at event 7: link",
    );

    // Swap the rows of ids 3 and 9 (through a free id): each now sits where its hash does not fit.
    await withDb(databaseUrl, async (db) => {
      await sql`UPDATE events SET id = 1000 WHERE id = 3`.execute(db);
      await sql`UPDATE events SET id = 3 WHERE id = 9`.execute(db);
      await sql`UPDATE events SET id = 9 WHERE id = 1000`.execute(db);
    });
    expect(count).toBeGreaterThan(9);
    expectFailure(await cli(["verify", "--url", server.url]), 1, "chain broken at event 3: link");
  });

  it("still verifies after deletes through the API: tombstones keep the chain", async () => {
    const { server, client } = await start();
    const count = await seed(client);
    expect(await client.delete({ subject: "orders/1" })).toBe(2);
    expect(await client.delete({ subject: "orders", recursive: true, type: "batch" })).toBe(3);
    const more = await client.append({ source: "s", type: "after", subject: "orders/1", data: "x" });
    expect(more).toBe(count + 1);
    expectVerified(
      await cli(["verify", "--url", server.url]),
      `verified ${count + 1} links (5 tombstones)`,
      `last id ${count + 1}`,
    );
    const file = await exportChain(server.url);
    expect(fs.readFileSync(file, "utf8")).toContain('"deleted":true');
    expectVerified(await cli(["verify", "--file", file]), "(5 tombstones)");
    // A tombstone's hash is taken as stored, but its successor binds it.
    await withDb(databaseUrl, (db) =>
      sql`UPDATE events SET hash = ${Buffer.alloc(32, 7)} WHERE id = 2`.execute(db),
    );
    expectFailure(await cli(["verify", "--url", server.url]), 1, "chain broken at event 3: link");
    // A cleared hash is a break too, not bad input.
    await withDb(databaseUrl, (db) => sql`UPDATE events SET hash = NULL WHERE id = 2`.execute(db));
    expectFailure(
      await cli(["verify", "--url", server.url]),
      1,
      "chain broken at event 2: hash: expected a hash, found none",
    );
    expectFailure(
      await cli(["verify", "--file", await exportChain(server.url)]),
      1,
      "chain broken at event 2: hash: expected a hash, found none",
    );
  });

  it("checks signatures with the server's key or a given one, and names a forged one", async () => {
    const { privateFile, publicFile } = signingKeyFiles();
    const { server, client } = await start({ "signing-key-file": privateFile });
    const count = await seed(client);
    expectVerified(
      await cli(["verify", "--url", server.url, "--require-signatures"]),
      `${count} signed, 0 unsigned (signatures checked with the server's key)`,
    );
    const file = await exportChain(server.url);
    expectVerified(
      await cli(["verify", "--file", file, "--public-key", publicFile, "--require-signatures"]),
      "signatures checked with --public-key",
    );
    // Another key: the first signature fails.
    const other = signingKeyFiles().publicFile;
    expectFailure(
      await cli(["verify", "--file", file, "--public-key", other]),
      1,
      "chain broken at event 1: signature",
    );

    await withDb(databaseUrl, async (db) => {
      const row = await db
        .selectFrom("events")
        .select("signature")
        .where("id", "=", 4)
        .executeTakeFirstOrThrow();
      const forged = Buffer.from(row.signature as Buffer);
      forged[0] = (forged[0] as number) ^ 0x80;
      await sql`UPDATE events SET signature = ${forged} WHERE id = 4`.execute(db);
    });
    expectFailure(
      await cli(["verify", "--url", server.url]),
      1,
      "chain broken at event 4: signature: expected an Ed25519 signature of ",
    );
    expectFailure(
      await cli(["verify", "--file", await exportChain(server.url), "--public-key", publicFile]),
      1,
      "chain broken at event 4: signature",
    );
  });

  it("--require-signatures: events before the key are covered by a later signature, an unsigned end is not", async () => {
    const first = await start();
    await first.client.append({ source: "s", type: "t", subject: "a", data: "unsigned" });
    await first.client.append({ source: "s", type: "t", data: "unsigned, no subject" });
    await stopAll();
    const { privateFile, publicFile } = signingKeyFiles();
    const signing = await start({ "signing-key-file": privateFile });
    await signing.client.append({ source: "s", type: "t", subject: "a", data: "signed" });
    await signing.client.appendCloudEvent({ id: "x", source: "s", type: "t", data: new Uint8Array([1]) });
    expectVerified(
      await cli(["verify", "--url", signing.server.url]),
      "verified 4 links (0 tombstones), 2 signed, 2 unsigned (signatures checked with the server's key)",
    );
    // The last signature's hash commits to every event before it.
    expectVerified(
      await cli(["verify", "--url", signing.server.url, "--require-signatures"]),
      "verified 4 links (0 tombstones), 2 signed, 2 unsigned",
    );
    const signedFile = await exportChain(signing.server.url);
    await stopAll();
    // The key taken away again: the events after the last signed one are covered by nothing.
    const unsigned = await start();
    await unsigned.client.append({ source: "s", type: "t", subject: "a", data: "unsigned again" });
    const file = await exportChain(unsigned.server.url);
    expectFailure(
      await cli(["verify", "--file", file, "--public-key", publicFile, "--require-signatures"]),
      1,
      "chain broken at event 5: signature: expected a signature on the last event, which covers every event before it, found none after event 4",
    );
    expectVerified(
      await cli(["verify", "--file", signedFile, "--public-key", publicFile, "--require-signatures"]),
      "verified 4 links",
    );
  });

  it("migrate hashes a store from before the chain, reporting its progress, and verify passes", async () => {
    const { client } = await start();
    const total = 2500;
    for (let at = 0; at < total; at += 1000) {
      const size = Math.min(1000, total - at);
      await client.appendBatch(
        Array.from({ length: size }, (_, i) => ({
          id: `e${at + i}`,
          source: "s",
          type: "t",
          ...(i % 5 === 0 ? {} : { subject: `s/${(at + i) % 7}` }),
          data: i % 2 === 0 ? { i: at + i } : new Uint8Array([i % 256, 0]),
        })),
      );
    }
    const chained = await withDb(databaseUrl, (db) =>
      db.selectFrom("event_sequence").select("last_hash").executeTakeFirstOrThrow(),
    );
    await stopAll();
    await unchain(databaseUrl);
    expect(await hashedIds(databaseUrl)).toEqual([]);

    const migrated = await runCli(["migrate"], { env: cleanEnv({ DATABASE_URL: databaseUrl }) });
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(migrated.stderr.split("\n").filter((line) => line !== "")).toEqual([
      "eventsdb: hashing events stored before the chain: 40 % (1000 events, up to id 1000 of 2500)",
      "eventsdb: hashing events stored before the chain: 80 % (2000 events, up to id 2000 of 2500)",
      "eventsdb: hashing events stored before the chain: 100 % (2500 events, up to id 2500 of 2500)",
      "eventsdb: hashed 2500 events stored before the chain",
    ]);
    // The same hashes as when the events were appended: one serialization in both places.
    const backfilled = await withDb(databaseUrl, (db) =>
      db.selectFrom("event_sequence").select("last_hash").executeTakeFirstOrThrow(),
    );
    expect(Buffer.from(backfilled.last_hash as Buffer)).toEqual(Buffer.from(chained.last_hash as Buffer));

    const again = await runCli(["migrate"], { env: cleanEnv({ DATABASE_URL: databaseUrl }) });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe("");

    const { server, client: next } = await start();
    expect(await next.append({ source: "s", type: "after", data: "x" })).toBe(total + 1);
    expectVerified(await cli(["verify", "--url", server.url]), `verified ${total + 1} links`);
  });

  it("an interrupted backfill resumes where it stopped", async () => {
    const { client } = await start();
    const count = await seed(client);
    await client.delete({ subject: "orders/2" });
    await stopAll();
    await unchain(databaseUrl);

    const dialectNow = openDialect(testConfig(databaseUrl).store, 10_000);
    try {
      const pages: number[] = [];
      await expect(
        new EventRepository(dialectNow).backfillChain(5, (done, lastId, endId) => {
          pages.push(done, lastId, endId);
          throw new Error("interrupted after the first page");
        }),
      ).rejects.toThrow("interrupted after the first page");
      expect(pages).toEqual([5, 5, count]);
    } finally {
      await dialectNow.close();
    }
    expect(await hashedIds(databaseUrl)).toEqual([1, 2, 3, 4, 5]);

    const migrated = await runCli(["migrate"], { env: cleanEnv({ DATABASE_URL: databaseUrl }) });
    expect(migrated.code, migrated.stderr).toBe(0);
    // Only the rest was hashed: it resumed after event 5.
    expect(migrated.stderr).toContain(`eventsdb: hashed ${count - 5} events stored before the chain\n`);
    expect(await hashedIds(databaseUrl)).toEqual(Array.from({ length: count }, (_, i) => i + 1));

    const { server } = await start();
    expectVerified(await cli(["verify", "--url", server.url]), `verified ${count} links (1 tombstone)`);
  });
});

describe.runIf(selected("sqlite"))("eventsdb verify on a SQLite file changed byte by byte", () => {
  it("names the event whose data bytes changed in the file itself", async () => {
    const databaseUrl = await DIALECTS.find((d) => d.name === "sqlite")?.url();
    if (databaseUrl === undefined) throw new Error("no SQLite dialect");
    const marker = "needle-7d1c2a9f-in-the-file";
    const first = await startTestServer(databaseUrl);
    const client = new EventsDbClient({ url: first.url });
    await seed(client);
    const id = await client.append({ source: "s", type: "t", subject: "x", data: marker });
    await client.append({ source: "s", type: "t", subject: "x", data: "after" });
    // Closing checkpoints the write-ahead log: the row is in the main file now.
    await first.close();

    const file = databaseUrl.replace(/^sqlite:/, "");
    const bytes = fs.readFileSync(file);
    const at = bytes.indexOf(marker);
    expect(at).toBeGreaterThan(0);
    expect(bytes.indexOf(marker, at + 1)).toBe(-1);
    bytes[at] = "N".charCodeAt(0);
    fs.writeFileSync(file, bytes);

    const server = await startTestServer(databaseUrl);
    try {
      expectFailure(await cli(["verify", "--url", server.url]), 1, `chain broken at event ${id}: hash`);
    } finally {
      await server.close();
    }
  });
});

describe("eventsdb verify and export --chain: bad input", () => {
  it("refuses usage errors with exit 2 before reading anything", async () => {
    const dir = tempDir("eventsdb-verify-bad-");
    const bad = path.join(dir, "bad.ndjson");
    const good = { id: 1, hash: "00".repeat(32), prevhash: "00".repeat(32), deleted: true };
    fs.writeFileSync(bad, `${JSON.stringify(good)}\n\n{"id":2,"hash":"zz"}\n`);
    expectFailure(await cli(["verify", "--file", bad]), 2, "line 3: link 2: hash must be 32 bytes");
    fs.writeFileSync(bad, `${JSON.stringify(good)}\nnot json\n`);
    expectFailure(await cli(["verify", "--file", bad]), 2, "line 2: not valid JSON");
    expectFailure(await cli(["verify", "--file", path.join(dir, "missing")]), 2, "cannot read", "ENOENT");
    expectFailure(
      await cli(["verify", "--file", bad, "--require-signatures"]),
      2,
      "--require-signatures needs --public-key",
    );
    const rsa = path.join(dir, "rsa.pem");
    const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 1024 });
    fs.writeFileSync(rsa, publicKey.export({ type: "spki", format: "pem" }));
    expectFailure(
      await cli(["verify", "--file", bad, "--public-key", rsa]),
      2,
      "an Ed25519 key is required, found rsa",
    );
    expectFailure(await cli(["verify", "--file", bad, "--public-key", bad]), 2, "not a PEM public key");
    expectFailure(await cli(["verify", "--url", "ftp://x"]), 2, "--url must be");
    expectFailure(await cli(["export", "--chain", "--subject", "a"]), 2, "--chain exports the whole chain");
    expectFailure(await cli(["export", "--chain", "--from-id", "3"]), 2, "--chain exports the whole chain");
  });

  it("fails with exit 1 when the server cannot be reached", async () => {
    expectFailure(await cli(["verify", "--url", "http://127.0.0.1:1"]), 1, "cannot reach http://127.0.0.1:1");
  });
});
