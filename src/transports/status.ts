import { Code } from "@connectrpc/connect";
import type { ErrorCode } from "../errors.js";

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
