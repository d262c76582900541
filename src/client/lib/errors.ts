/** The server's error body: `{"error": {"code": "not_found", "message": "event 9 not found"}}`. */
export interface ServerErrorBody {
  readonly code: string;
  readonly message: string;
}

/**
 * A call that failed: the server answered an error status (`status`, and `error` when it sent its
 * JSON error body), did not answer in time (`code` "deadline_exceeded", `status` 0) or could not be
 * reached (`code` "unavailable", `status` 0). The message is one line: `event 9 not found (404
 * not_found)`, `cannot reach http://…: ECONNREFUSED`.
 */
export class EventsDbError extends Error {
  override readonly name = "EventsDbError";
  /** The HTTP status; 0 when there was no answer. */
  readonly status: number;
  /** The server's error code, or "unavailable", "deadline_exceeded", "unknown" (a body not ours). */
  readonly code: string;
  /** The server's `{"error":{code,message}}`, when it sent one. */
  readonly error: ServerErrorBody | undefined;
  /** Seconds from `Retry-After` (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(
    message: string,
    details: { status: number; code: string; error?: ServerErrorBody; retryAfter?: number | undefined },
  ) {
    super(message);
    this.status = details.status;
    this.code = details.code;
    this.error = details.error;
    this.retryAfter = details.retryAfter;
  }
}

/** An error body is a line of JSON; a proxy's page beyond this is not read. */
const MAX_ERROR_BYTES = 64 * 1024;

/** The error for a non-2xx response, from its `{"error":{code,message}}` body if it has one. */
export async function responseError(response: Response): Promise<EventsDbError> {
  let text = "";
  try {
    text = (await readText(response, MAX_ERROR_BYTES)) ?? "";
  } catch {
    // The body is lost; the status still says enough.
  }
  const status = response.status;
  const header = Number(response.headers.get("retry-after") ?? "");
  const retryAfter = Number.isFinite(header) && header >= 0 ? header : undefined;
  const error = errorBody(text);
  if (error === undefined) {
    const snippet = oneLine(text).slice(0, 200);
    return new EventsDbError(`the server answered ${status}${snippet === "" ? "" : `: ${snippet}`}`, {
      status,
      code: "unknown",
      retryAfter,
    });
  }
  return new EventsDbError(`${error.message} (${status} ${error.code})`, {
    status,
    code: error.code,
    error,
    retryAfter,
  });
}

function errorBody(text: string): ServerErrorBody | undefined {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const { code, message } = body.error ?? {};
    if (typeof message !== "string") return undefined;
    return { code: typeof code === "string" ? code : "unknown", message };
  } catch {
    return undefined; // not our JSON error body (a proxy's page, say)
  }
}

/** No answer: the network failed (`unavailable`). */
export function unreachable(url: string, error: unknown): EventsDbError {
  return new EventsDbError(`cannot reach ${url}: ${networkReason(error)}`, {
    status: 0,
    code: "unavailable",
  });
}

export function timedOut(url: string, ms: number): EventsDbError {
  return new EventsDbError(`no answer from ${url} within ${ms / 1000} s`, {
    status: 0,
    code: "deadline_exceeded",
  });
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

/** Text on one line, as error messages are. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

/** The body as text; undefined (the rest cancelled) once it passes `max` bytes: every read has a cap. */
export async function readText(response: Response, max: number): Promise<string | undefined> {
  if (response.body === null) return "";
  if (Number(response.headers.get("content-length") ?? 0) > max) {
    await response.body.cancel();
    return undefined;
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return new TextDecoder().decode(bytes);
}
