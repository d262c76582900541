import type { SimpleEventJson } from "../events/formats.js";

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
  /** The HTTP status, when the server answered. */
  readonly status: number | undefined;
  /** The server's error message (`{"error":{"message"}}`), when it sent one. */
  readonly serverMessage: string | undefined;

  constructor(
    message: string,
    exitCode: number = EXIT_FAILURE,
    server?: { status: number; message: string | undefined },
  ) {
    super(message);
    this.exitCode = exitCode;
    this.status = server?.status;
    this.serverMessage = server?.message;
  }
}

export function usageError(message: string): ClientError {
  return new ClientError(message, EXIT_USAGE);
}

/** Where the server is and how to authenticate: `--url` / `EVENTSDB_URL`, `--token` / `EVENTSDB_TOKEN`. */
export interface Connection {
  /** The base URL without a trailing slash. */
  readonly url: string;
  readonly token: string | undefined;
}

export function connection(url: string, token: string | undefined): Connection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw usageError(`--url must be an http:// or https:// URL, got ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw usageError(`--url must be an http:// or https:// URL, got ${JSON.stringify(url)}`);
  }
  return { url: url.replace(/\/+$/, ""), token: token === "" ? undefined : token };
}

/** Filter parameters shared by `GET /events` and `GET /events/stream`. */
export interface Filter {
  readonly subjects: readonly string[];
  readonly recursive: boolean;
  readonly type: string | undefined;
}

export function filterParams(filter: Filter): URLSearchParams {
  const params = new URLSearchParams();
  for (const subject of filter.subjects) params.append("subject", subject);
  if (filter.recursive) params.set("recursive", "true");
  if (filter.type !== undefined) params.set("type", filter.type);
  return params;
}

export interface RequestOptions {
  readonly method?: string;
  readonly params?: URLSearchParams;
  readonly headers?: Record<string, string>;
  readonly body?: string | Uint8Array;
  readonly signal?: AbortSignal;
}

export function requestUrl(conn: Connection, path: string, params?: URLSearchParams): string {
  const query = params === undefined ? "" : params.toString();
  return `${conn.url}${path}${query === "" ? "" : `?${query}`}`;
}

export function requestHeaders(conn: Connection, extra: Record<string, string> = {}): Record<string, string> {
  return conn.token === undefined ? { ...extra } : { authorization: `Bearer ${conn.token}`, ...extra };
}

/**
 * One HTTP request; resolves with a 2xx response. A network failure or an error status rejects
 * with a {@link ClientError} naming the server's error code and message.
 */
export async function request(
  conn: Connection,
  path: string,
  options: RequestOptions = {},
): Promise<Response> {
  const response = await send(conn, path, options);
  if (!response.ok) throw await responseError(response);
  return response;
}

/** Like {@link request} but hands back any response, error statuses included. */
export async function send(conn: Connection, path: string, options: RequestOptions = {}): Promise<Response> {
  try {
    return await fetch(requestUrl(conn, path, options.params), {
      method: options.method ?? "GET",
      headers: requestHeaders(conn, options.headers),
      ...(options.body === undefined ? {} : { body: options.body }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (error) {
    if (options.signal?.aborted) throw error;
    throw unreachable(conn, error);
  }
}

export function unreachable(conn: Connection, error: unknown): ClientError {
  return new ClientError(`cannot reach ${conn.url}: ${networkReason(error)}`);
}

/** ECONNREFUSED, ENOTFOUND…, or the error's message. */
export function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  if (cause !== undefined && cause !== null) {
    if (typeof cause.code === "string") return cause.code;
    if (typeof cause.message === "string" && cause.message !== "") return cause.message;
  }
  return error instanceof Error ? error.message : String(error);
}

/** `<message> (<status> <code>)` from the server's `{"error":{"code","message"}}` body, if it sent one. */
export async function responseError(response: Response): Promise<ClientError> {
  let text = "";
  try {
    text = await response.text();
  } catch {
    // The body is lost; the status still says enough.
  }
  const status = response.status;
  const { code, message } = errorBody(text);
  if (message === undefined) {
    const snippet = oneLine(text).slice(0, 200);
    return new ClientError(
      `the server answered ${status}${snippet === "" ? "" : `: ${snippet}`}`,
      EXIT_FAILURE,
      {
        status,
        message,
      },
    );
  }
  return new ClientError(`${message} (${status}${code === undefined ? "" : ` ${code}`})`, EXIT_FAILURE, {
    status,
    message,
  });
}

function errorBody(text: string): { code?: string; message?: string } {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const { code, message } = body.error ?? {};
    if (typeof message !== "string") return {};
    return typeof code === "string" ? { code, message } : { message };
  } catch {
    return {}; // not our JSON error body (a proxy's page, say)
  }
}

/** An error message on one line, as the command line prints it. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

/** An event as `GET /events/{id}` and `GET /events` answer it (the simple JSON of Events DB). */
export type SimpleEvent = Readonly<SimpleEventJson>;

interface Page {
  readonly events: SimpleEvent[];
  readonly has_more: boolean;
  readonly next_from_id: number;
}

/**
 * The highest id matching the filter (0 when none), found with `limit=1` pages: a galloping search
 * then a bisection, about 2·log2(id) small requests. The API has no "last id" route.
 */
export async function lastMatchingId(
  conn: Connection,
  filter: Filter,
  signal?: AbortSignal,
): Promise<number> {
  /** The first matching id after `fromId`, if any. */
  const firstAfter = async (fromId: number): Promise<number | undefined> => {
    const params = filterParams(filter);
    params.set("from_id", String(fromId));
    params.set("limit", "1");
    const response = await request(conn, "/events", { params, ...(signal === undefined ? {} : { signal }) });
    const page = (await response.json()) as Page;
    return page.events[0]?.id;
  };
  let known = await firstAfter(0);
  if (known === undefined) return 0;
  // Invariant from here: `known` matches; nothing matches above `high`.
  let high: number;
  for (let step = 1; ; step *= 2) {
    const probe = Math.min(known + step, Number.MAX_SAFE_INTEGER);
    const next = await firstAfter(probe);
    if (next === undefined) {
      high = probe;
      break;
    }
    known = next;
  }
  while (known < high) {
    const middle = Math.floor((known + high) / 2);
    const next = await firstAfter(middle);
    if (next === undefined) high = middle;
    else known = next;
  }
  return known;
}
