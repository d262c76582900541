import { EventsDbClient } from "./lib/client.js";
import { EventsDbError } from "./lib/errors.js";

/** Exit codes of the client commands. */
export const EXIT_OK = 0;
/** The server answered with an error, or could not be reached. */
export const EXIT_FAILURE = 1;
/** Bad usage: commander errors, bad arguments, invalid input lines. */
export const EXIT_USAGE = 2;

/** A failure the command line reports as one `eventsdb: …` line with its exit code. */
export class ClientError extends Error {
  override readonly name = "ClientError";
  readonly exitCode: number;

  constructor(message: string, exitCode: number = EXIT_FAILURE) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function usageError(message: string): ClientError {
  return new ClientError(message, EXIT_USAGE);
}

/** The exit code for any failure: a ClientError's own, 1 for the server's and the network's. */
export function exitCodeOf(error: unknown): number {
  return error instanceof ClientError ? error.exitCode : EXIT_FAILURE;
}

/** Whether the server refused with this status. */
export function refusedWith(error: unknown, status: number): error is EventsDbError {
  return error instanceof EventsDbError && error.status === status;
}

/**
 * The library client for `--url` / `EVENTSDB_URL` and `--token` / `EVENTSDB_TOKEN`: the CLI speaks
 * to the server only through it (src/client/lib/).
 */
export function connection(url: string, token: string | undefined): EventsDbClient {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (parsed === undefined || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
    throw usageError(`--url must be an http:// or https:// URL, got ${JSON.stringify(url)}`);
  }
  // The base without a trailing slash, as messages name it (`cannot reach http://host:8080`).
  return new EventsDbClient({ url: url.replace(/\/+$/, ""), ...(token === undefined ? {} : { token }) });
}
