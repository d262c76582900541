import type { ErrorCode } from "../errors.js";

// The one table of error codes and statuses for every transport. No Connect import: REST's error
// renderer uses it, and a default start loads Connect only with the first gRPC/Connect request
// (transports/grpc/lazy.ts); the Connect adapter corrects upstream's errors with the same table.
// test/unit/status.test.ts pins it to @connectrpc/connect's Code and tables.

/** The gRPC status codes (the gRPC spec's numbers; @connectrpc/connect's `Code` has the same values). */
export const Code = {
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;

/** A gRPC status code other than OK. */
export type Code = (typeof Code)[keyof typeof Code];

/** The one mapping from domain error codes to HTTP status (REST and SSE). */
export function httpStatus(code: ErrorCode): number {
  switch (code) {
    case "invalid_argument":
      return 400; // malformed input; nothing was stored
    case "unauthenticated":
      return 401; // no or unknown credentials
    case "permission_denied":
      return 403; // known credentials without the scope
    case "not_found":
      return 404;
    case "failed_precondition":
      return 409; // a precondition of the append did not hold; nothing was stored
    case "payload_too_large":
      return 413; // body or event data over a configured limit
    case "unsupported_media_type":
      return 415; // a content type none of the CloudEvents HTTP modes accepts
    case "resource_exhausted":
      return 503; // server capacity (write queue full): retry after Retry-After
    case "too_many_requests":
      return 429; // a client-side cap (--max-total-clients): retry after Retry-After
    case "unavailable":
      return 503; // the store cannot be reached: retry after Retry-After
    case "internal":
      return 500; // a bug; the message never carries details
  }
}

/** The one mapping from domain error codes to Connect / gRPC codes. */
export function connectCode(code: ErrorCode): Code {
  switch (code) {
    case "invalid_argument":
    case "payload_too_large": // not retryable: the client must change the request
    case "unsupported_media_type":
      return Code.InvalidArgument;
    case "unauthenticated":
      return Code.Unauthenticated;
    case "permission_denied":
      return Code.PermissionDenied;
    case "not_found":
      return Code.NotFound;
    case "failed_precondition":
      return Code.FailedPrecondition;
    case "resource_exhausted": // full write queue
    case "too_many_requests": // --max-total-clients
      return Code.ResourceExhausted;
    case "unavailable":
      return Code.Unavailable;
    case "internal":
      return Code.Internal;
  }
}

/** A code's name in the Connect protocol: snake case (`invalid_argument`). */
export function connectCodeName(code: Code): string {
  return CODE_NAMES.get(code) ?? String(code);
}

/** The code of a Connect protocol name, or undefined for a name that is none. */
export function codeFromConnectName(name: string): Code | undefined {
  return NAMED_CODES.get(name);
}

const CODE_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Code).map(([name, code]) => [
    code,
    name.replace(/[A-Z]/g, (c, at) => (at === 0 ? "" : "_") + c.toLowerCase()),
  ]),
);
const NAMED_CODES: ReadonlyMap<string, Code> = new Map(
  Object.values(Code).map((code) => [connectCodeName(code), code]),
);

/** The HTTP status of a Connect unary error (the Connect protocol's table). */
export function connectHttpStatus(code: Code): number {
  switch (code) {
    case Code.Canceled:
      return 499; // Client Closed Request
    case Code.Unknown:
    case Code.Internal:
    case Code.DataLoss:
      return 500;
    case Code.InvalidArgument:
    case Code.FailedPrecondition:
    case Code.OutOfRange:
      return 400;
    case Code.DeadlineExceeded:
      return 504;
    case Code.NotFound:
      return 404;
    case Code.AlreadyExists:
    case Code.Aborted:
      return 409;
    case Code.PermissionDenied:
      return 403;
    case Code.ResourceExhausted:
      return 429;
    case Code.Unimplemented:
      return 501;
    case Code.Unavailable:
      return 503;
    case Code.Unauthenticated:
      return 401;
  }
}
