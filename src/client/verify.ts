import { createPublicKey, type KeyObject } from "node:crypto";
import fs from "node:fs";
import readline from "node:readline";
import type { Readable } from "node:stream";
import {
  type ChainBreak,
  type ChainLinkJson,
  ChainVerifier,
  linkFromJson,
  type VerifiableLink,
} from "../events/chain.js";
import { ClientError, usageError } from "./http.js";
import type { EventsDbClient } from "./lib/client.js";
import { progress } from "./progress.js";

/** Links per `GET /events/chain` page. */
const PAGE_LIMIT = 1000;

export interface VerifyOptions {
  /** An NDJSON file of chain links (`eventsdb export --chain`), `-` for stdin; undefined = the server. */
  readonly file: string | undefined;
  /** A PEM file with the signing key's public half; else the server's (never for a file). */
  readonly publicKey: string | undefined;
  /** Every link must be covered by a signature, its own or a later link's (ChainVerifier.finish). */
  readonly requireSignatures: boolean;
}

export interface VerifyResult {
  readonly checked: number;
  readonly tombstones: number;
  readonly signed: number;
  readonly unsigned: number;
  readonly lastId: number;
  /** The last link's hash in hex; "" for an empty chain. */
  readonly lastHash: string;
  /** Whose key the signatures were checked with, or why they were not. */
  readonly signatures: string;
}

/** The first broken link, as the one line `verify` ends with (exit 1). */
export class ChainBrokenError extends ClientError {
  constructor(readonly broken: ChainBreak) {
    super(
      `chain broken at event ${broken.id}: ${broken.problem}: expected ${broken.expected}, found ${broken.found}`,
    );
  }
}

/**
 * `eventsdb verify`: reads the chain from the server (`GET /events/chain`, a page at a time) or
 * from a file of ChainLinkJson lines, and feeds each link to a ChainVerifier, which keeps only the
 * previous one. Throws ChainBrokenError at the first broken link; a malformed line of a file is a
 * usage error (2), a malformed answer of the server a failure (1).
 */
export async function verifyChain(
  client: () => EventsDbClient,
  options: VerifyOptions,
): Promise<VerifyResult> {
  const fromFile = options.file !== undefined;
  let key: KeyObject | undefined;
  let signatures: string;
  if (options.publicKey !== undefined) {
    key = parsePublicKey(await readKeyFile(options.publicKey), `--public-key ${options.publicKey}`, true);
    signatures = "signatures checked with --public-key";
  } else if (fromFile) {
    signatures = "signatures not checked: no --public-key";
  } else {
    const pem = await client().signingKey();
    key = pem === undefined ? undefined : parsePublicKey(pem, "the server's signing key", false);
    signatures =
      key === undefined
        ? "signatures not checked: the server has no signing key"
        : "signatures checked with the server's key";
  }
  if (options.requireSignatures && key === undefined) {
    const why = fromFile
      ? usageError("--require-signatures needs --public-key to check a file's signatures")
      : new ClientError(
          "--require-signatures: the server has no signing key (give --public-key to check with yours)",
        );
    throw why;
  }

  const verifier = new ChainVerifier(key, { requireSignatures: options.requireSignatures });
  const source = fromFile ? fileLinks(options.file as string) : serverLinks(client());
  const bar = progress("verifying", await source.total());
  let tombstones = 0;
  let signed = 0;
  let lastHash = "";
  try {
    for await (const { link, position } of source.links) {
      const broken = verifier.check(link);
      if (broken !== undefined) throw new ChainBrokenError(broken);
      if (link.content === undefined) tombstones++;
      if (link.signature !== undefined) signed++;
      lastHash = link.hash.toString("hex");
      bar.update(position, verifier.checked);
    }
    const end = verifier.finish();
    if (end !== undefined) throw new ChainBrokenError(end);
  } finally {
    bar.stop();
    source.close();
  }
  return {
    checked: verifier.checked,
    tombstones,
    signed,
    unsigned: verifier.checked - signed,
    lastId: verifier.lastId,
    lastHash,
    signatures,
  };
}

/** The summary line of a verified chain. */
export function summaryLine(result: VerifyResult): string {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const last =
    result.checked === 0 ? "the chain is empty" : `last id ${result.lastId}, hash ${result.lastHash}`;
  return (
    `verified ${plural(result.checked, "link")} (${plural(result.tombstones, "tombstone")}), ` +
    `${result.signed} signed, ${result.unsigned} unsigned (${result.signatures}); ${last}`
  );
}

interface LinkSource {
  /** The progress bar's total (only asked for at a terminal, where it may cost a few requests). */
  total(): Promise<number>;
  /** Each link with where it was read (id or byte), for the bar. */
  readonly links: AsyncIterable<{ link: VerifiableLink; position: number }>;
  close(): void;
}

function serverLinks(client: EventsDbClient): LinkSource {
  return {
    // The newest id a read shows: tombstones after it only overshoot the bar, which stops at 100 %.
    total: async () => (process.stderr.isTTY ? client.newestId() : 0),
    links: (async function* () {
      for await (const json of client.chain({ fromId: 0, limit: PAGE_LIMIT })) {
        yield { link: fromServer(json), position: json.id };
      }
    })(),
    close() {},
  };
}

/**
 * A link whose row has no hash (or predecessor hash) is a break, not bad input: the server writes
 * "" for a NULL column, which a store only has when someone cleared it or the backfill has not run.
 */
function unhashed(json: unknown): ChainBrokenError | undefined {
  if (typeof json !== "object" || json === null) return undefined;
  const { id, hash, prevhash } = json as Partial<Record<string, unknown>>;
  if (typeof id !== "number") return undefined;
  const none = "none (run `eventsdb migrate` if this store predates the chain)";
  if (hash === "") return new ChainBrokenError({ id, problem: "hash", expected: "a hash", found: none });
  if (prevhash === "") {
    return new ChainBrokenError({ id, problem: "link", expected: "a predecessor hash", found: none });
  }
  return undefined;
}

function fromServer(json: ChainLinkJson): VerifiableLink {
  const broken = unhashed(json);
  if (broken !== undefined) throw broken;
  try {
    return linkFromJson(json);
  } catch (error) {
    throw new ClientError(`the server sent a malformed chain link: ${(error as Error).message}`);
  }
}

function fileLinks(file: string): LinkSource {
  const stdin = file === "-";
  let input: Readable | undefined;
  const open = async (): Promise<Readable> => {
    if (stdin) {
      if (process.stdin.isTTY) throw usageError("no input: pipe the NDJSON of `export --chain` on stdin");
      return process.stdin;
    }
    const stream = fs.createReadStream(file);
    await new Promise<void>((resolve, reject) => {
      stream.once("open", () => resolve());
      stream.once("error", reject);
    }).catch((error: NodeJS.ErrnoException) => {
      throw usageError(`cannot read ${file}: ${error.code ?? error.message}`);
    });
    return stream;
  };
  return {
    total: async () => {
      if (stdin || !process.stderr.isTTY) return 0;
      return fs.promises.stat(file).then(
        (stat) => stat.size,
        () => 0,
      );
    },
    links: (async function* () {
      input = await open();
      const lines = readline.createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
      let lineNumber = 0;
      let bytes = 0;
      try {
        for await (const line of lines) {
          lineNumber++;
          bytes += Buffer.byteLength(line, "utf8") + 1;
          if (line.trim() === "") continue;
          yield { link: fromLine(line, lineNumber), position: bytes };
        }
      } catch (error) {
        if (error instanceof ClientError) throw error;
        throw new ClientError(`cannot read ${stdin ? "stdin" : file}: ${(error as Error).message}`);
      }
    })(),
    close() {
      if (input !== undefined && input !== process.stdin) input.destroy();
    },
  };
}

function fromLine(line: string, lineNumber: number): VerifiableLink {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw usageError(`line ${lineNumber}: not valid JSON`);
  }
  const broken = unhashed(json);
  if (broken !== undefined) throw broken;
  try {
    return linkFromJson(json);
  } catch (error) {
    throw usageError(`line ${lineNumber}: ${(error as Error).message}`);
  }
}

async function readKeyFile(file: string): Promise<string> {
  try {
    return await fs.promises.readFile(file, "utf8");
  } catch (error) {
    throw usageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

/** An Ed25519 public key from PEM (a private key's public half too); `usage`: a bad one exits 2, else 1. */
function parsePublicKey(pem: string, what: string, usage: boolean): KeyObject {
  const fail = (why: string) => (usage ? usageError(`${what}: ${why}`) : new ClientError(`${what}: ${why}`));
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    throw fail(`not a PEM public key (${(error as Error).message})`);
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw fail(`an Ed25519 key is required, found ${key.asymmetricKeyType}`);
  }
  return key;
}
