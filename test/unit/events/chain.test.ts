import { createHash, generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  type ChainContent,
  type ChainedEvent,
  ChainVerifier,
  canonicalJson,
  chainHash,
  contentBytes,
  contentDigest,
  GENESIS_HASH,
  linkBytes,
  linkFromJson,
  linkToJson,
  type VerifiableLink,
} from "../../../src/events/chain.js";
import { signHashes } from "../../../src/events/signing.js";

/** docs/chain.md's worked example; the doc shows these very bytes and this hash. */
const EXAMPLE: ChainContent = {
  source: "https://shop.example",
  type: "order.placed",
  subject: "orders/42",
  ceId: "a1",
  time: "2026-01-02T03:04:05.678901Z",
  datacontenttype: "application/json",
  dataschema: undefined,
  extensions: { region: "eu", priority: 2 },
  data: Buffer.from('{"total":12.5}', "utf8"),
};
const EXAMPLE_CONTENT =
  "6576656e747364622d6576656e742d76310a" + // "eventsdb-event-v1\n"
  "01000000146874747073" + // source, 20 bytes, "https://shop.example"
  "3a2f2f73686f702e6578616d706c65" +
  "010000000c6f726465722e706c61636564" + // type, 12 bytes
  "01000000096f72646572732f3432" + // subject, 9 bytes
  "01000000026131" + // CloudEvents id, 2 bytes
  "010000001b323032362d30312d30325430333a30343a30352e3637383930315a" + // time, 27 bytes
  "01000000106170706c69636174696f6e2f6a736f6e" + // datacontenttype, 16 bytes
  "00" + // no dataschema
  "010000001c7b227072696f72697479223a322c22726567696f6e223a226575227d" + // extensions, 28 bytes
  "010000000e7b22746f74616c223a31322e357d"; // data, 14 bytes
const EXAMPLE_DIGEST = "2717e8d21574634c2b6a72d2a6b950234582e66b585e31f9cd5966ed4a0a980e";
const EXAMPLE_LINK =
  "6576656e747364622d636861696e2d76310a" + // "eventsdb-chain-v1\n"
  "0000000000000001" + // id 1
  "0000000000000000000000000000000000000000000000000000000000000000" + // the genesis hash
  EXAMPLE_DIGEST;
const EXAMPLE_HASH = "06ba5c8271025820a5383afc6b23373997b26d7d31134098b8f06aab250fed8a";

describe("the canonical serialization", () => {
  it("is docs/chain.md's worked example, byte for byte", () => {
    expect(contentBytes(EXAMPLE).toString("hex")).toBe(EXAMPLE_CONTENT);
    expect(createHash("sha256").update(Buffer.from(EXAMPLE_CONTENT, "hex")).digest("hex")).toBe(
      EXAMPLE_DIGEST,
    );
    expect(contentDigest(EXAMPLE, EXAMPLE.time).toString("hex")).toBe(EXAMPLE_DIGEST);
    expect(linkBytes(1, GENESIS_HASH, Buffer.from(EXAMPLE_DIGEST, "hex")).toString("hex")).toBe(EXAMPLE_LINK);
    expect(createHash("sha256").update(Buffer.from(EXAMPLE_LINK, "hex")).digest("hex")).toBe(EXAMPLE_HASH);
    expect(chainHash(1, GENESIS_HASH, EXAMPLE).toString("hex")).toBe(EXAMPLE_HASH);
    // An event without a time is digested with the time it is given (the server's, on acceptance).
    const { time, ...untimed } = EXAMPLE;
    expect(contentDigest(untimed, time).toString("hex")).toBe(EXAMPLE_DIGEST);
  });

  it("docs/chain.md shows the same bytes and hash", () => {
    const doc = readFileSync(new URL("../../../docs/chain.md", import.meta.url), "utf8");
    const blocks = [...doc.matchAll(/```hex\n([\s\S]*?)```/g)].map((m) => m[1]?.replace(/\s+/g, ""));
    expect(blocks).toEqual([EXAMPLE_CONTENT, EXAMPLE_LINK]);
    expect(doc).toContain(EXAMPLE_DIGEST);
    expect(doc).toContain(EXAMPLE_HASH);
  });

  it("tells absent from empty, and covers every attribute", () => {
    const base = chainHash(1, GENESIS_HASH, EXAMPLE);
    const variants: Partial<ChainContent>[] = [
      { subject: undefined },
      { subject: "" },
      { dataschema: "" },
      { extensions: undefined },
      { extensions: {} },
      { source: "https://shop.exampl" },
      { type: "order.Placed" },
      { ceId: "a2" },
      { time: "2026-01-02T03:04:05.678902Z" },
      { datacontenttype: undefined },
      { extensions: { region: "eu", priority: "2" } },
      { data: Buffer.from('{"total":12.50}') },
    ];
    const hashes = new Set([base.toString("hex")]);
    for (const variant of variants)
      hashes.add(chainHash(1, GENESIS_HASH, { ...EXAMPLE, ...variant }).toString("hex"));
    expect(hashes.size).toBe(variants.length + 1);
    expect(chainHash(2, GENESIS_HASH, EXAMPLE).equals(base)).toBe(false);
    expect(chainHash(1, Buffer.alloc(32, 1), EXAMPLE).equals(base)).toBe(false);
  });

  it("writes extensions with sorted keys and no whitespace, whatever their order", () => {
    expect(canonicalJson({ b: 1, a: { d: [true, "x"], c: null } })).toBe(
      '{"a":{"c":null,"d":[true,"x"]},"b":1}',
    );
    expect(chainHash(1, GENESIS_HASH, { ...EXAMPLE, extensions: { priority: 2, region: "eu" } })).toEqual(
      chainHash(1, GENESIS_HASH, EXAMPLE),
    );
  });
});

/** A chain of `n` events as stored, optionally signed. */
function chainOf(n: number, sign?: (hash: Buffer) => Buffer): ChainedEvent[] {
  const events: ChainedEvent[] = [];
  let prevHash = GENESIS_HASH;
  for (let id = 1; id <= n; id++) {
    const content: ChainContent = {
      ...EXAMPLE,
      subject: id % 3 === 0 ? undefined : `orders/${id}`,
      data: Buffer.from([id, 0, 255]),
    };
    const hash = chainHash(id, prevHash, content);
    events.push({ id, ...content, hash, prevHash, ...(sign ? { signature: sign(hash) } : {}) });
    prevHash = hash;
  }
  return events;
}

/** Each link through its JSON, as verify reads them; the first break. */
function verify(events: readonly ChainedEvent[], verifier = new ChainVerifier()) {
  for (const event of events) {
    const json = JSON.parse(JSON.stringify(linkToJson(event)));
    const broken = verifier.check(linkFromJson(json));
    if (broken !== undefined) return broken;
  }
  return verifier.finish();
}

describe("ChainVerifier", () => {
  it("accepts an intact chain read back from JSON", () => {
    const verifier = new ChainVerifier();
    expect(verify(chainOf(10), verifier)).toBeUndefined();
    expect(verifier.checked).toBe(10);
    expect(verifier.lastId).toBe(10);
  });

  it("names an event whose data changed by one byte", () => {
    const events = chainOf(6);
    const data = Buffer.from((events[3] as ChainedEvent).data);
    data[1] = 1;
    events[3] = { ...(events[3] as ChainedEvent), data };
    expect(verify(events)).toMatchObject({
      id: 4,
      problem: "hash",
      expected: chainHash(4, events[2]?.hash as Buffer, events[3] as ChainedEvent).toString("hex"),
      found: events[3]?.hash?.toString("hex"),
    });
  });

  it("names the event after a missing one, and an event out of order", () => {
    const events = chainOf(6);
    expect(verify(events.filter((e) => e.id !== 3))).toMatchObject({
      id: 4,
      problem: "link",
      expected: `predecessor hash ${events[1]?.hash?.toString("hex")} (event 2)`,
      found: events[2]?.hash?.toString("hex"),
    });
    const swapped = [...events];
    [swapped[2], swapped[3]] = [swapped[3] as ChainedEvent, swapped[2] as ChainedEvent];
    expect(verify(swapped)).toMatchObject({ id: 4, problem: "link" });
    expect(verify([events[0], events[2], events[1]] as ChainedEvent[])).toMatchObject({
      id: 3,
      problem: "link",
    });
    const again = [...events.slice(0, 3), events[1] as ChainedEvent];
    expect(verify(again)).toMatchObject({ id: 2, problem: "order", expected: "an id above 3", found: "2" });
  });

  it("names a chain that does not start at the genesis hash", () => {
    expect(verify(chainOf(4).slice(1))).toMatchObject({
      id: 2,
      problem: "link",
      expected: expect.stringContaining("(the first event)"),
    });
  });

  it("passes tombstones: their hash as stored, their link checked", () => {
    const events: ChainedEvent[] = chainOf(5).map((e) =>
      e.id === 2 || e.id === 5 ? { ...e, deleted: true, source: "", type: "", data: Buffer.alloc(0) } : e,
    );
    const json = linkToJson(events[1] as ChainedEvent);
    expect(Object.keys(json).sort()).toEqual(["deleted", "hash", "id", "prevhash"]);
    expect(verify(events)).toBeUndefined();
    // A tombstone's hash is not recomputed, but the next link still binds it.
    events[1] = { ...(events[1] as ChainedEvent), hash: Buffer.alloc(32, 7) };
    expect(verify(events)).toMatchObject({ id: 3, problem: "link" });
  });

  it("checks signatures with the key, and requires them only when told", () => {
    const { privateKey, publicKey } = generateKeyPairSync("ed25519");
    const sign = (hash: Buffer) => signHashes(privateKey, [hash])[0] as Buffer;
    const signed = chainOf(4, sign);
    expect(verify(signed, new ChainVerifier(publicKey, { requireSignatures: true }))).toBeUndefined();
    const forged = Buffer.from(signed[2]?.signature as Buffer);
    forged[10] = (forged[10] as number) ^ 1;
    signed[2] = { ...(signed[2] as ChainedEvent), signature: forged };
    expect(verify(signed, new ChainVerifier(publicKey))).toMatchObject({
      id: 3,
      problem: "signature",
      found: forged.toString("hex"),
    });
    // Another key's signatures are forgeries too.
    const other = generateKeyPairSync("ed25519").publicKey;
    expect(verify(chainOf(2, sign), new ChainVerifier(other))).toMatchObject({ id: 1, problem: "signature" });

    // A store that got its key later: unsigned links, then signed ones. The last signature
    // covers the unsigned links before it (its hash commits to them).
    const mixed = [...chainOf(2), ...chainOf(4, sign).slice(2)];
    expect(verify(mixed, new ChainVerifier(publicKey))).toBeUndefined();
    expect(verify(mixed, new ChainVerifier(publicKey, { requireSignatures: true }))).toBeUndefined();
    // Only each commit's last event signed (--signing-mode commit): covered too.
    const commits = chainOf(6, sign).map((e) => (e.id % 3 === 0 ? e : { ...e, signature: undefined }));
    expect(verify(commits, new ChainVerifier(publicKey, { requireSignatures: true }))).toBeUndefined();
    // Signed, then the key was dropped: the unsigned end is covered by nothing.
    const tail = [...chainOf(2, sign), ...chainOf(4).slice(2)];
    expect(verify(tail, new ChainVerifier(publicKey))).toBeUndefined();
    expect(verify(tail, new ChainVerifier(publicKey, { requireSignatures: true }))).toEqual({
      id: 4,
      problem: "signature",
      expected: "a signature on the last event, which covers every event before it",
      found: "none after event 2: the events after it are not covered",
    });
  });
});

describe("linkFromJson", () => {
  it("refuses malformed links, naming what", () => {
    const good = linkToJson(chainOf(1)[0] as ChainedEvent);
    const bad: [unknown, string][] = [
      [[], "must be a JSON object"],
      [{ ...good, id: 0 }, "id >= 1"],
      [{ ...good, hash: good.hash.toUpperCase() }, "hash must be 32 bytes"],
      [{ ...good, prevhash: "00" }, "prevhash must be 32 bytes"],
      [{ ...good, hash: undefined }, "hash and prevhash are required"],
      [{ ...good, signature: "xyz" }, "signature must be"],
      [{ ...good, type: undefined }, "source, type and time are required"],
      [{ ...good, subject: 7 }, "subject must be a string"],
      [{ ...good, extensions: [1] }, "extensions must be an object"],
    ];
    for (const [json, message] of bad) expect(() => linkFromJson(json)).toThrow(message);
  });

  it("keeps what the hash covers", () => {
    const event = chainOf(1)[0] as ChainedEvent;
    const link: VerifiableLink = linkFromJson(JSON.parse(JSON.stringify(linkToJson(event))));
    expect(link.content).toEqual({
      source: event.source,
      type: event.type,
      subject: event.subject,
      ceId: event.ceId,
      time: event.time,
      datacontenttype: event.datacontenttype,
      dataschema: undefined,
      extensions: event.extensions,
      data: event.data,
    });
  });
});
