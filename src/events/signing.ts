import { createPrivateKey, createPublicKey, type KeyObject, sign } from "node:crypto";
import fs from "node:fs";
import { Worker } from "node:worker_threads";

/** Up to this many hashes are signed on the calling thread (see Signer.sign). */
const INLINE_SIGNATURES = 4;
/** Hashes signed per message to the worker and back. */
const WORKER_BATCH = 4096;

/**
 * The server's Ed25519 signing key (--signing-key-file, PEM). Each event's chain hash is signed
 * (src/events/chain.ts); about 45 µs of CPU each, so a commit's signatures are shared between a
 * worker thread and the event loop, which each sign half (a few are signed on the loop alone).
 */
export interface Signer {
  /** The public key as SPKI PEM, served at /.well-known/eventsdb/signing-key. */
  readonly publicKeyPem: string;
  /** One 64-byte signature per hash, in order; fails after `timeoutMs`. */
  sign(hashes: readonly Buffer[]): Promise<Buffer[]>;
  close(): Promise<void>;
}

/** Reads and checks the key file: it must hold an Ed25519 private key. */
export function readSigningKey(file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(fs.readFileSync(file));
  } catch (error) {
    throw new Error(
      `--signing-key-file ${file}: not a readable PEM private key (${(error as Error).message})`,
    );
  }
  if (key.asymmetricKeyType !== "ed25519") {
    throw new Error(`--signing-key-file ${file}: an Ed25519 key is required, found ${key.asymmetricKeyType}`);
  }
  return key;
}

/** Signs on the calling thread: for tools and tests. */
export function signHashes(key: KeyObject, hashes: readonly Buffer[]): Buffer[] {
  return hashes.map((hash) => sign(null, hash, key));
}

// Plain JavaScript run by the worker (eval): no build step, the same under tsx, vitest and dist/.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { createPrivateKey, sign } = require("node:crypto");
const key = createPrivateKey(workerData.pem);
parentPort.on("message", ({ id, hashes }) => {
  const out = new Uint8Array(hashes.length * 64);
  for (let i = 0; i < hashes.length; i++) out.set(sign(null, hashes[i], key), i * 64);
  parentPort.postMessage({ id, signatures: out }, [out.buffer]);
});
`;

/** A signer whose work runs on one worker thread; every wait for it is bounded by `timeoutMs`. */
export function createSigner(file: string, timeoutMs: number): Signer {
  const key = readSigningKey(file);
  const publicKeyPem = createPublicKey(key).export({ type: "spki", format: "pem" }).toString();
  const pem = key.export({ type: "pkcs8", format: "pem" }).toString();
  const pending = new Map<number, { resolve: (s: Uint8Array) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  let worker: Worker | undefined;
  let closed = false;

  const failAll = (error: Error) => {
    for (const job of pending.values()) job.reject(error);
    pending.clear();
  };
  const start = (): Worker => {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { pem } });
    // An idle worker must not keep the process alive.
    w.unref();
    w.on("message", ({ id, signatures }: { id: number; signatures: Uint8Array }) => {
      pending.get(id)?.resolve(signatures);
      pending.delete(id);
    });
    w.on("error", (error) => {
      if (worker === w) worker = undefined;
      failAll(new Error(`the signing worker failed: ${error.message}`));
    });
    w.on("exit", () => {
      if (worker === w) worker = undefined;
      failAll(new Error("the signing worker exited"));
    });
    return w;
  };
  const signBatch = (hashes: readonly Buffer[]): Promise<Buffer[]> => {
    if (closed) return Promise.reject(new Error("the signer is closed"));
    worker ??= start();
    const w = worker;
    const id = nextId++;
    return new Promise<Buffer[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`signing took longer than ${timeoutMs} ms`));
        // A worker that does not answer in time is not trusted with the next batch.
        if (worker === w) worker = undefined;
        void w.terminate();
      }, timeoutMs);
      pending.set(id, {
        resolve: (out) => {
          clearTimeout(timer);
          const buffer = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
          resolve(hashes.map((_, i) => buffer.subarray(i * 64, i * 64 + 64)));
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      w.postMessage({ id, hashes });
    });
  };

  return {
    publicKeyPem,
    async sign(hashes) {
      // A few (a commit's one signature with --signing-mode commit) are signed here: cheaper than
      // the round trip to the worker. More are shared: the worker takes the first half while this
      // thread signs the second, so a commit waits for half of them, on two cores.
      if (hashes.length <= INLINE_SIGNATURES) return signHashes(key, hashes);
      const half = Math.ceil(hashes.length / 2);
      const parts: Promise<Buffer[]>[] = [];
      for (let at = 0; at < half; at += WORKER_BATCH)
        parts.push(signBatch(hashes.slice(at, Math.min(half, at + WORKER_BATCH))));
      const here = signHashes(key, hashes.slice(half));
      return [...(await Promise.all(parts)).flat(), ...here];
    },
    async close() {
      closed = true;
      const w = worker;
      worker = undefined;
      if (w !== undefined) await w.terminate();
      failAll(new Error("the signer is closed"));
    },
  };
}
