import { createHash, createPublicKey, hash, type KeyObject, verify } from "node:crypto";
import type { ChainLinkJson } from "../client/lib/types.js";
import type { ExtensionValue, StoredEvent } from "./event.js";

/**
 * The tamper-evident log (docs/chain.md): every event's `hash` is SHA-256 over its id, its
 * predecessor's hash and everything stored of it, in the canonical serialization below; the chain
 * is global, in id order. Verifying needs nothing but this file.
 */

/** The predecessor hash of the first event: 32 zero bytes. */
export const GENESIS_HASH: Buffer = Buffer.alloc(32);
/** Bytes of a hash. */
export const HASH_BYTES = 32;
/** The version tags the two parts of the serialization start with (see contentBytes). */
const CONTENT_MAGIC = Buffer.from("eventsdb-event-v1\n", "latin1");
const LINK_MAGIC = Buffer.from("eventsdb-chain-v1\n", "latin1");

/** What of an event the hash covers: every attribute a read returns, and the data. */
export type ChainContent = Pick<
  StoredEvent,
  "source" | "type" | "subject" | "ceId" | "time" | "datacontenttype" | "dataschema" | "extensions" | "data"
>;

/** An event's place in the chain, as stored and read. */
export interface ChainLink {
  readonly hash: Buffer;
  readonly prevHash: Buffer;
  /** Ed25519 over `hash`, when the server had a signing key at the time of append. */
  readonly signature: Buffer | undefined;
}

/**
 * The canonical serialization, in two parts (docs/chain.md).
 *
 * An event's content bytes: "eventsdb-event-v1\n", then source, type, subject, id (CloudEvents),
 * time, datacontenttype, dataschema, extensions and data, each as one byte 0 (absent) or 1 followed
 * by its length (4 bytes big-endian) and its bytes: UTF-8 text, the canonical time (UTC, six
 * fractional digits), extensions as JSON with keys in code-unit order and no whitespace, the data
 * bytes as stored. Its content digest is their SHA-256.
 *
 * Its link bytes: "eventsdb-chain-v1\n", the id as 8 bytes big-endian, the predecessor's hash and
 * the content digest (32 bytes each). Its hash is their SHA-256.
 *
 * The digest depends on the event alone, so the server computes it when it accepts the event,
 * off the commit's path; the link, the only part that needs the predecessor, is 90 bytes.
 */
export function contentBytes(event: ChainContent): Buffer {
  const head = writeContentHead(event, event.time);
  return Buffer.concat([head, event.data]);
}

/** The content digest: SHA-256 of the content bytes; `time` stands for an event's own when it has none. */
export function contentDigest(
  event: Omit<ChainContent, "time"> & { readonly time?: string },
  time: string,
): Buffer {
  const head = writeContentHead(event, event.time ?? time);
  if (event.data.length > INLINE_DATA_BYTES)
    return createHash("sha256").update(head).update(event.data).digest();
  // Small data (the common case) is copied behind the head and hashed in one call: a third of the
  // time of a Hash object's update/digest.
  const at = head.length;
  const out =
    head.buffer === scratch.buffer && at + event.data.length <= scratch.length
      ? scratch
      : Buffer.allocUnsafe(at + event.data.length);
  if (out !== scratch) head.copy(out);
  event.data.copy(out, at);
  return hash("sha256", out.subarray(0, at + event.data.length), "buffer");
}

/** The link bytes: the magic, the id, the predecessor's hash, the content digest. */
export function linkBytes(id: number, prevHash: Buffer, digest: Buffer): Buffer {
  const out = Buffer.allocUnsafe(LINK_MAGIC.length + 8 + 2 * HASH_BYTES);
  let at = LINK_MAGIC.copy(out, 0);
  // The id as 8 bytes big-endian, without a BigInt per event (ids are safe integers, < 2^53).
  out.writeUInt32BE(Math.floor(id / 0x1_0000_0000), at);
  out.writeUInt32BE(id >>> 0, at + 4);
  at += 8;
  at += prevHash.copy(out, at, 0, HASH_BYTES);
  digest.copy(out, at, 0, HASH_BYTES);
  return out;
}

/** The event's hash from its content digest: SHA-256 of the link bytes. */
export function linkHash(id: number, prevHash: Buffer, digest: Buffer): Buffer {
  return hash("sha256", linkBytes(id, prevHash, digest), "buffer");
}

/** The event's hash: its link's hash over its content's digest. */
export function chainHash(id: number, prevHash: Buffer, event: ChainContent): Buffer {
  return linkHash(id, prevHash, contentDigest(event, event.time));
}

/** Data up to this size is hashed from a copy behind the head, larger data in place. */
const INLINE_DATA_BYTES = 16 * 1024;
/** Where heads are written: reused, since hashing runs one event at a time on the event loop. */
const scratch = Buffer.allocUnsafe(64 * 1024);

/**
 * The content bytes but the data's, ending with the data's tag and length; a view of the scratch
 * buffer, valid until the next call.
 */
function writeContentHead(event: Omit<ChainContent, "time">, time: string): Buffer {
  const extensions = event.extensions === undefined ? undefined : canonicalJson(event.extensions);
  const texts = [
    event.source,
    event.type,
    event.subject,
    event.ceId,
    time,
    event.datacontenttype,
    event.dataschema,
    extensions,
  ];
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  let bound = CONTENT_MAGIC.length + 5 * (texts.length + 1);
  for (const value of texts) if (value !== undefined) bound += 3 * value.length;
  const out = bound <= scratch.length ? scratch : Buffer.allocUnsafe(bound);
  let at = CONTENT_MAGIC.copy(out, 0);
  for (const value of texts) {
    if (value === undefined) {
      out[at++] = 0;
      continue;
    }
    out[at++] = 1;
    const length = out.write(value, at + 4, "utf8");
    out.writeUInt32BE(length, at);
    at += 4 + length;
  }
  out[at++] = 1;
  out.writeUInt32BE(event.data.length, at);
  at += 4;
  return out.subarray(0, at);
}

/** JSON with object keys sorted (by UTF-16 code units, as Array#sort does) and no whitespace. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const object = value as Record<string, unknown>;
    const keys = Object.keys(object).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(object[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** One link of the chain as a verifier sees it: a stored event, or the tombstone of a deleted one. */
export interface VerifiableLink extends ChainLink {
  readonly id: number;
  /** Absent for a tombstone: its hash is taken as stored, its link to the predecessor still checked. */
  readonly content: ChainContent | undefined;
}

/** The first broken link: the id, what was expected there and what was found. */
export interface ChainBreak {
  readonly id: number;
  readonly problem: "order" | "link" | "hash" | "signature";
  readonly expected: string;
  readonly found: string;
}

/**
 * Checks links in id order, one at a time, remembering only the previous link: any source of
 * links (pages from a server, lines of a file) can feed it without holding the chain in memory.
 */
export class ChainVerifier {
  #lastId = 0;
  #lastHash: Buffer = GENESIS_HASH;
  #checked = 0;
  /** The last signed link's id (0 before any). */
  #lastSignedId = 0;
  readonly #publicKey: KeyObject | undefined;
  readonly #requireSignatures: boolean;

  /**
   * With a public key, every signature is checked. With `requireSignatures`, every link must be
   * covered by a signature: its own or a later link's, whose hash commits to it through the chain
   * (a server with --signing-mode commit signs only each commit's last event). So the chain must
   * end on a signed link; `finish` tells.
   */
  constructor(publicKey?: KeyObject | string, options: { requireSignatures?: boolean } = {}) {
    this.#publicKey = typeof publicKey === "string" ? createPublicKey(publicKey) : publicKey;
    this.#requireSignatures = options.requireSignatures === true;
  }

  /** Links checked so far. */
  get checked(): number {
    return this.#checked;
  }

  /** The last link's id (0 before any). */
  get lastId(): number {
    return this.#lastId;
  }

  /** Checks the next link; returns the break it makes, or undefined. */
  check(link: VerifiableLink): ChainBreak | undefined {
    if (link.id <= this.#lastId) {
      return {
        id: link.id,
        problem: "order",
        expected: `an id above ${this.#lastId}`,
        found: String(link.id),
      };
    }
    if (!link.prevHash.equals(this.#lastHash)) {
      return {
        id: link.id,
        problem: "link",
        expected: `predecessor hash ${this.#lastHash.toString("hex")}${this.#lastId === 0 ? " (the first event)" : ` (event ${this.#lastId})`}`,
        found: link.prevHash.toString("hex"),
      };
    }
    if (link.content !== undefined) {
      const hash = chainHash(link.id, link.prevHash, link.content);
      if (!hash.equals(link.hash)) {
        return {
          id: link.id,
          problem: "hash",
          expected: hash.toString("hex"),
          found: link.hash.toString("hex"),
        };
      }
    }
    if (this.#publicKey !== undefined && link.signature !== undefined) {
      if (!verify(null, link.hash, this.#publicKey, link.signature)) {
        return {
          id: link.id,
          problem: "signature",
          expected: `an Ed25519 signature of ${link.hash.toString("hex")} by the signing key`,
          found: link.signature.toString("hex"),
        };
      }
    }
    this.#lastId = link.id;
    this.#lastHash = link.hash;
    if (link.signature !== undefined) this.#lastSignedId = link.id;
    this.#checked++;
    return undefined;
  }

  /** After the last link: the break that an unsigned end of the chain is with `requireSignatures`. */
  finish(): ChainBreak | undefined {
    if (!this.#requireSignatures || this.#checked === 0 || this.#lastSignedId === this.#lastId)
      return undefined;
    return {
      id: this.#lastId,
      problem: "signature",
      expected: "a signature on the last event, which covers every event before it",
      found:
        this.#lastSignedId === 0
          ? "no signed event"
          : `none after event ${this.#lastSignedId}: the events after it are not covered`,
    };
  }
}

/**
 * One link as JSON (`GET /events/chain` pages, `eventsdb export --chain` lines). Defined once, in
 * the browser-safe client library, whose `chain()` yields it.
 */
export type { ChainLinkJson };

/** An event as read with its chain fields (a tombstone has `deleted`). */
export interface ChainedEvent extends ChainContent {
  readonly id: number;
  readonly hash?: Buffer;
  readonly prevHash?: Buffer;
  readonly signature?: Buffer;
  readonly deleted?: true;
}

/** The JSON of a stored event's link (see ChainLinkJson); an event not yet hashed has empty hashes. */
export function linkToJson(event: ChainedEvent): ChainLinkJson {
  const link: ChainLinkJson = {
    id: event.id,
    hash: event.hash?.toString("hex") ?? "",
    prevhash: event.prevHash?.toString("hex") ?? "",
  };
  if (event.signature !== undefined) link.signature = event.signature.toString("hex");
  if (event.deleted === true) {
    link.deleted = true;
    return link;
  }
  link.source = event.source;
  link.type = event.type;
  if (event.subject !== undefined) link.subject = event.subject;
  if (event.ceId !== undefined) link.ceid = event.ceId;
  link.time = event.time;
  if (event.datacontenttype !== undefined) link.datacontenttype = event.datacontenttype;
  if (event.dataschema !== undefined) link.dataschema = event.dataschema;
  if (event.extensions !== undefined) link.extensions = { ...event.extensions };
  link.data_base64 = event.data.toString("base64");
  return link;
}

/** A link read back from JSON, for ChainVerifier; throws on a malformed one, naming what. */
export function linkFromJson(value: unknown): VerifiableLink {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("a chain link must be a JSON object");
  }
  const json = value as Record<string, unknown>;
  const id = json.id;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 1)
    throw new Error("a chain link needs an id >= 1");
  const hex = (name: string, bytes: number | undefined): Buffer | undefined => {
    const v = json[name];
    if (v === undefined) return undefined;
    if (
      typeof v !== "string" ||
      !/^(?:[0-9a-f]{2})*$/.test(v) ||
      (bytes !== undefined && v.length !== bytes * 2)
    ) {
      throw new Error(`link ${id}: ${name} must be ${bytes ?? "some"} bytes of lowercase hex`);
    }
    return Buffer.from(v, "hex");
  };
  const hash = hex("hash", HASH_BYTES);
  const prevHash = hex("prevhash", HASH_BYTES);
  if (hash === undefined || prevHash === undefined)
    throw new Error(`link ${id}: hash and prevhash are required`);
  const signature = hex("signature", undefined);
  if (json.deleted === true) return { id, hash, prevHash, signature, content: undefined };
  const text = (name: string): string | undefined => {
    const v = json[name];
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw new Error(`link ${id}: ${name} must be a string`);
    return v;
  };
  const source = text("source");
  const type = text("type");
  const time = text("time");
  if (source === undefined || type === undefined || time === undefined) {
    throw new Error(`link ${id}: source, type and time are required unless deleted`);
  }
  const extensions = json.extensions;
  if (
    extensions !== undefined &&
    (typeof extensions !== "object" || extensions === null || Array.isArray(extensions))
  ) {
    throw new Error(`link ${id}: extensions must be an object`);
  }
  return {
    id,
    hash,
    prevHash,
    signature,
    content: {
      source,
      type,
      subject: text("subject"),
      ceId: text("ceid"),
      time,
      datacontenttype: text("datacontenttype"),
      dataschema: text("dataschema"),
      extensions: extensions as Record<string, ExtensionValue> | undefined,
      data: Buffer.from(text("data_base64") ?? "", "base64"),
    },
  };
}
