import fastifyCookie from "@fastify/cookie";
import type { FastifyInstance } from "fastify";
import { bearer, SESSION_COOKIE, sessionId } from "../../auth/credentials.js";
import { requireConsole } from "../../auth/csrf.js";
import type { BrowserSessions } from "../../auth/sessions.js";
import { sessionFingerprint, tokenDigest } from "../../auth/tokens.js";
import type { Pipeline } from "../pipeline.js";

export interface SignInOptions {
  readonly pipeline: Pipeline;
  readonly sessions: BrowserSessions;
  /** Secure cookies (under TLS). */
  readonly secureCookies: boolean;
  /** --session-ttl: the cookie's Max-Age. */
  readonly sessionTtlSeconds: number;
}

/**
 * Browser sign-in for EventSource, which cannot send an Authorization header: `POST
 * /auth/session` exchanges a token for the HttpOnly session cookie, `DELETE /auth/session` signs
 * out. The cookie is then a credential like a token (credentials.ts), under the CSRF rules.
 */
export async function signInRoutes(app: FastifyInstance, options: SignInOptions): Promise<void> {
  // For setCookie/clearCookie only: requests' cookies are read by credentials.ts, for every transport.
  await app.register(fastifyCookie, { hook: false });
  const { pipeline, sessions } = options;

  app.post("/auth/session", async (request, reply) => {
    const body = request.body as { token?: unknown } | undefined;
    const token = typeof body?.token === "string" ? body.token : bearer(request.headers.authorization);
    const principal = pipeline.signIn(pipeline.fastifyRequest(request), token);
    const fingerprint = token === undefined ? Buffer.alloc(0) : sessionFingerprint(tokenDigest(token));
    const session = await sessions.create(principal.name, fingerprint);
    void reply.setCookie(SESSION_COOKIE, session.id, {
      httpOnly: true,
      sameSite: "strict",
      secure: options.secureCookies,
      path: "/",
      // Both: Max-Age (RFC 6265 §5.2.2) wins where understood and does not depend on the
      // browser's clock agreeing with the server's; Expires is for the rest.
      maxAge: options.sessionTtlSeconds,
      expires: new Date(session.expires),
    });
    return {
      name: principal.name,
      read: principal.read,
      write: principal.write,
      expires: new Date(session.expires).toISOString(),
    };
  });

  app.delete("/auth/session", async (request, reply) => {
    const id = sessionId(request.headers);
    if (id !== undefined) {
      requireConsole(pipeline.fastifyRequest(request));
      await sessions.delete(id);
    }
    void reply.clearCookie(SESSION_COOKIE, { path: "/" });
    return reply.code(204).send();
  });
}
