import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.js";
import { type ChainBreak, ChainVerifier, chainHash, GENESIS_HASH } from "../../../src/events/chain.js";
import type { StoredEvent } from "../../../src/events/event.js";
import type { EventLog } from "../../../src/events/event-log.js";
import { migrate } from "../../../src/storage/migrate.js";
import { openDialect } from "../../../src/storage/open.js";
import { EventRepository } from "../../../src/storage/repository.js";
import { DIALECTS } from "../../support/dialects.js";
import { newEvent as event } from "../../support/events.js";
import { openTestStore } from "../../support/server.js";

const ALL = { subjects: [] as string[], recursive: false, type: undefined };

/** Every link of the store's chain, tombstones included, through EventRepository.chain(). */
async function links(store: EventLog): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  let fromId = 0;
  for (;;) {
    const page = await store.repository.chain(fromId, 7, 1 << 20);
    out.push(...page.events);
    fromId = page.nextFromId;
    if (!page.hasMore) return out;
  }
}

/** The first break ChainVerifier finds in the store's chain, or undefined. */
async function firstBreak(store: EventLog, publicKey?: string): Promise<ChainBreak | undefined> {
  const verifier = new ChainVerifier(publicKey);
  for (const link of await links(store)) {
    const broken = verifier.check({
      id: link.id,
      hash: link.hash as Buffer,
      prevHash: link.prevHash as Buffer,
      signature: link.signature,
      content: link.deleted === true ? undefined : link,
    });
    if (broken !== undefined) return broken;
  }
  return undefined;
}

describe.each(DIALECTS)("hash chain on $name", (dialect) => {
  const open: EventLog[] = [];
  const newStore = async (url: string, flags: Record<string, string> = {}) => {
    const { store } = await openTestStore(url, flags);
    open.push(store);
    return store;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it("chains every event onto the one before, from the genesis hash, as reads return them", async () => {
    const store = await newStore(await dialect.url());
    await store.append([event("a"), event("b", { extensions: { z: 1, a: "x" } })]);
    await store.append([event("a", { data: Buffer.from("{}"), datacontenttype: "application/json" })]);
    const [first, second, third] = await links(store);
    expect(first?.prevHash).toEqual(GENESIS_HASH);
    expect(first?.hash).toEqual(chainHash(1, GENESIS_HASH, first as StoredEvent));
    expect(second?.prevHash).toEqual(first?.hash);
    expect(third?.prevHash).toEqual(second?.hash);
    expect(third?.hash).toEqual(chainHash(3, second?.hash as Buffer, third as StoredEvent));
    expect(await firstBreak(store)).toBeUndefined();
  });

  it("stays one chain when two stores on one database append in turn (each finds the other's appends)", async () => {
    const url = await dialect.url();
    const a = await newStore(url);
    const b = await newStore(url);
    for (let round = 0; round < 6; round++) {
      await (round % 2 === 0 ? a : b).append([event(`s${round}`), event(`s${round}`)]);
      // Twice in a row from the same store too: its own last state is then current.
      await (round % 3 === 0 ? a : b).append([event("again")]);
    }
    const all = await links(a);
    expect(all.map((e) => e.id)).toEqual(Array.from({ length: 18 }, (_, i) => i + 1));
    expect(await firstBreak(a)).toBeUndefined();
  });

  it("stays one chain with several writers appending at once", async () => {
    const url = await dialect.url();
    // MariaDB: four stores with their own connections, as four processes. SQLite: better-sqlite3
    // is synchronous, two stores in one thread would wait on each other's lock; one store's
    // concurrent callers instead.
    const writers: EventLog[] =
      dialect.name === "mysql"
        ? await Promise.all([0, 1, 2, 3].map(() => newStore(url)))
        : new Array<EventLog>(4).fill(await newStore(url));
    await Promise.all(
      writers.map(async (store, w) => {
        for (let batch = 0; batch < 12; batch++) {
          await store.append(Array.from({ length: 1 + ((batch * 5) % 17) }, () => event(`w${w}`)));
        }
      }),
    );
    expect(await firstBreak(writers[0] as EventLog)).toBeUndefined();
  });

  it("keeps a deleted event as a tombstone: reads skip it, the chain still verifies", async () => {
    const store = await newStore(await dialect.url());
    await store.append([event("keep"), event("gone"), event("keep"), event("gone")]);
    expect(await store.delete({ subjects: ["gone"], recursive: false, type: undefined }, 0)).toBe(2);
    const page = await store.page({ ...ALL, fromId: 0, limit: 10 });
    expect(page.events.map((e) => e.id)).toEqual([1, 3]);
    await expect(store.get(2)).rejects.toMatchObject({ code: "not_found" });
    expect(await store.subjects("")).toEqual(["keep"]);
    const chain = await links(store);
    expect(chain.map((e) => [e.id, e.deleted === true])).toEqual([
      [1, false],
      [2, true],
      [3, false],
      [4, true],
    ]);
    expect(chain[1]?.data.length).toBe(0);
    expect(await firstBreak(store)).toBeUndefined();
    // Deleting everything counts only what was still there, not the tombstones.
    expect(await store.repository.delete(ALL, 0)).toBe(2);
    expect(await firstBreak(store)).toBeUndefined();
    // Appends go on chaining after tombstones.
    await store.append([event("after")]);
    expect(await firstBreak(store)).toBeUndefined();
  });

  it("signs each event's hash with --signing-key-file; the public key verifies every signature", async () => {
    const dir = mkdtempSync(join(tmpdir(), "eventsdb-sign-"));
    const keyFile = join(dir, "key.pem");
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
    const store = await newStore(await dialect.url(), { "signing-key-file": keyFile });
    await store.append(Array.from({ length: 5 }, () => event("signed")));
    const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(store.signer?.publicKeyPem).toBe(pem);
    const chain = await links(store);
    expect(chain.every((e) => e.signature?.length === 64)).toBe(true);
    expect(await firstBreak(store, pem)).toBeUndefined();
    // Another key does not verify them.
    const other = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();
    expect(await firstBreak(store, other)).toMatchObject({ id: 1, problem: "signature" });
  });

  it("with --signing-mode commit, signs only each commit's last hash, which covers the ones before", async () => {
    const dir = mkdtempSync(join(tmpdir(), "eventsdb-sign-"));
    const keyFile = join(dir, "key.pem");
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
    const store = await newStore(await dialect.url(), {
      "signing-key-file": keyFile,
      "signing-mode": "commit",
    });
    for (let batch = 0; batch < 3; batch++)
      await store.append(Array.from({ length: 4 }, () => event("signed")));
    const chain = await links(store);
    expect(chain.filter((e) => e.signature !== undefined).map((e) => e.id)).toEqual([4, 8, 12]);
    expect(
      await firstBreak(store, publicKey.export({ type: "spki", format: "pem" }).toString()),
    ).toBeUndefined();
  });

  it("refuses a signing key that is not Ed25519", async () => {
    const dir = mkdtempSync(join(tmpdir(), "eventsdb-sign-"));
    const keyFile = join(dir, "rsa.pem");
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 1024 });
    writeFileSync(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }));
    await expect(openTestStore(await dialect.url(), { "signing-key-file": keyFile })).rejects.toThrow(
      /Ed25519 key is required/,
    );
  });

  it("backfills the hashes of events stored before the chain, resumably, and chains on from them", async () => {
    const url = await dialect.url();
    const store = await newStore(url);
    await store.append(Array.from({ length: 25 }, (_, i) => event(`old/${i % 3}`)));
    const before = (await links(store)).map((e) => e.hash);
    await store.close();
    open.length = 0;
    const config = loadConfig({}, { "database-url": url });
    const db = openDialect(config.store, config.dbTimeoutMs);
    try {
      // As an older eventsdb left it: no hashes anywhere.
      await db.db.updateTable("events").set({ hash: null, prev_hash: null }).execute();
      await db.db.updateTable("event_sequence").set({ last_hash: null }).execute();
      const repository = new EventRepository(db);
      // Appends refuse to chain onto an unknown hash.
      await expect(repository.append([event("new")], "2026-01-01T00:00:00.000000Z")).rejects.toThrow(
        /eventsdb migrate/,
      );
      // Interrupted after its first page…
      await expect(
        repository.backfillChain(10, () => {
          throw new Error("interrupted");
        }),
      ).rejects.toThrow("interrupted");
      const hashed = await db.db.selectFrom("events").select("id").where("hash", "is not", null).execute();
      expect(hashed.map((r) => Number(r.id))).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
      // …and resumed by migrate, which hashes the rest.
      const pages: number[] = [];
      await migrate(db, (done) => pages.push(done));
      expect(pages).toEqual([15]);
    } finally {
      await db.close();
    }
    const reopened = await newStore(url);
    expect((await links(reopened)).map((e) => e.hash)).toEqual(before);
    await reopened.append([event("new")]);
    expect(await firstBreak(reopened)).toBeUndefined();
  });
});
