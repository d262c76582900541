import { once } from "node:events";
import fs from "node:fs";
import type { Readable, Writable } from "node:stream";
import { ClientError, usageError } from "./http.js";

/**
 * Writes and, when the stream's buffer is full, waits for 'drain' (stream backpressure). Rejects
 * when the stream fails or closes first, or when `signal` aborts.
 */
export async function write(
  stream: Writable,
  chunk: string | Uint8Array,
  signal?: AbortSignal,
): Promise<void> {
  if (stream.destroyed || stream.writableEnded) throw new ClientError("the output is closed");
  if (stream.write(chunk)) return;
  await once(stream, "drain", signal === undefined ? {} : { signal });
}

/** Ends a writable (a file) and waits until everything is written. */
export async function finish(stream: Writable): Promise<void> {
  if (stream === process.stdout || stream === process.stderr) return flushed(stream);
  stream.end();
  await once(stream, "finish");
}

/** Resolves once what was written to stdout/stderr so far has been handed to the OS. */
export function flushed(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || stream.writableEnded) resolve();
    else stream.write("", () => resolve());
  });
}

/** Data for an event: the argument, `--file`, or stdin when it is not a terminal. */
export async function readData(argument: string | undefined, file: string | undefined): Promise<Buffer> {
  if (argument !== undefined && file !== undefined)
    throw usageError("give the data as an argument or --file, not both");
  if (argument !== undefined) return Buffer.from(argument, "utf8");
  if (file !== undefined) return readFile(file);
  if (process.stdin.isTTY) {
    throw usageError("no data: give it as an argument, with --file, or on stdin");
  }
  return readAll(process.stdin);
}

export async function readFile(file: string): Promise<Buffer> {
  try {
    return await fs.promises.readFile(file);
  } catch (error) {
    throw usageError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

/** Aborts when the process gets SIGINT or SIGTERM (Ctrl-C); `dispose` removes the handlers. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const stop = () => controller.abort(new ClientError("interrupted", 0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return {
    signal: controller.signal,
    dispose() {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    },
  };
}
