/**
 * The one set of domain errors. Every transport maps {@link ErrorCode} once
 * (HTTP status and Connect/gRPC code in transports/status.ts), so handlers
 * never pick status codes themselves.
 */
export type ErrorCode =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  | "unauthenticated"
  | "permission_denied"
  | "resource_exhausted"
  | "too_many_requests"
  | "unavailable"
  | "payload_too_large"
  | "unsupported_media_type"
  | "internal";

/** A failure with a closed code; `message` is safe to show to clients, `cause` is for the log only. */
export class EventsDbError extends Error {
  override readonly name = "EventsDbError";
  readonly code: ErrorCode;
  /** Seconds a client should wait before retrying (resource_exhausted, unavailable). */
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryAfterSeconds?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/** Shorthand for the most common error: bad input from a client. */
export function invalidArgument(message: string): EventsDbError {
  return new EventsDbError("invalid_argument", message);
}
