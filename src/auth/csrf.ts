import type { IncomingHttpHeaders } from "node:http";
import { EventsDbError } from "../errors.js";

/** What the CSRF rules read of a request, whatever its transport. */
export interface CsrfSource {
  readonly method: string;
  readonly headers: IncomingHttpHeaders;
  /**
   * This request's own origin, `scheme://host` (X-Forwarded-Proto/-Host count when --trust-proxy
   * trusts the peer: see client-address.ts).
   */
  readonly origin: () => string;
}

/**
 * The header the web console sends with every API request. A page of another origin cannot send
 * it with the cookie: a form cannot set headers at all, and a fetch that does needs a CORS
 * preflight the server does not grant to cookie-carrying cross-origin requests.
 */
export const CONSOLE_HEADER = "x-eventsdb-console";

const SAFE_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);
/** The bodies an HTML form or a no-cors fetch can send cross-origin without a preflight. */
const FORM_TYPES: ReadonlySet<string> = new Set([
  "application/x-www-form-urlencoded",
  "multipart/form-data",
  "text/plain",
]);

/**
 * Cross-site request forgery with the session cookie. SameSite=Strict does not cover a page on
 * another port of the same host (the same site), so a state-changing request the cookie
 * authenticated must show it comes from the console: a same-origin `Sec-Fetch-Site` (or, from
 * browsers that do not send it, a same-origin `Origin`), the console's header, and no form or
 * text/plain body. Requests with a bearer token are not affected: a browser never adds one.
 */
export function requireConsole(request: CsrfSource): void {
  if (SAFE_METHODS.has(request.method)) return;
  if (!sameOrigin(request)) {
    throw forbidden(
      "a request signed in with the session cookie must come from this server's console (same origin)",
    );
  }
  if (request.headers[CONSOLE_HEADER] === undefined) {
    throw forbidden(
      `a request signed in with the session cookie must carry the ${CONSOLE_HEADER} header; other clients send Authorization: Bearer <token>`,
    );
  }
  if (FORM_TYPES.has(mediaType(request.headers["content-type"]))) {
    throw forbidden("form and text/plain bodies are refused with the session cookie");
  }
}

/**
 * Login CSRF: a page of another origin must not sign the browser in with a token of its choosing
 * (the console would then show, and write to, the attacker's subjects). Sign-in is refused when
 * the browser says the request comes from another origin, and for form and text/plain bodies;
 * clients that are not browsers send neither Sec-Fetch-Site nor Origin and are not affected.
 */
export function requireSameOriginSignIn(request: CsrfSource): void {
  const site = request.headers["sec-fetch-site"];
  const origin = request.headers.origin;
  const crossOrigin =
    site !== undefined
      ? site !== "same-origin" && site !== "none"
      : origin !== undefined && !isOwnOrigin(origin, request);
  if (crossOrigin) throw forbidden("sign-in is accepted from this server's own pages only");
  if (FORM_TYPES.has(mediaType(request.headers["content-type"]))) {
    throw forbidden('sign in with a JSON body ({"token": …}) or Authorization: Bearer');
  }
}

/**
 * Sec-Fetch-Site is computed by the browser and cannot be set by a page (Fetch Metadata); it is
 * right also behind a proxy that rewrites Host. Browsers without it send Origin on every
 * non-GET request, compared with this request's own origin (X-Forwarded-Proto/-Host count when
 * --trust-proxy trusts the peer).
 */
function sameOrigin(request: CsrfSource): boolean {
  const site = request.headers["sec-fetch-site"];
  if (site !== undefined) return site === "same-origin";
  const origin = request.headers.origin;
  return origin !== undefined && isOwnOrigin(origin, request);
}

function isOwnOrigin(origin: string, request: CsrfSource): boolean {
  try {
    return new URL(origin).origin === new URL(request.origin()).origin;
  } catch {
    return false; // "null" (an opaque origin) or garbage
  }
}

function mediaType(header: string | undefined): string {
  return (header ?? "").split(";", 1)[0]?.trim().toLowerCase() ?? "";
}

function forbidden(message: string): EventsDbError {
  return new EventsDbError("permission_denied", message);
}
