import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/**
 * The console's static files. They stay in the source tree (no build step): this URL resolves to
 * the same directory from src/ui/console.ts (vitest, tsx) and from dist/ui/console.js (npm start).
 */
export const CONSOLE_ASSETS = new URL("../../src/ui/public/", import.meta.url);

/**
 * The compiled client library (`npm run build`), served under /ui/client/ for console.js to import:
 * the same browser-safe ES modules users get from `eventsdb/client`. The same directory from
 * src/ui/console.ts and from dist/ui/console.js.
 */
export const CLIENT_LIBRARY = new URL("../../dist/client/lib/", import.meta.url);

/** Every /ui response: scripts, styles, fetch and EventSource from this origin only; nothing inline. */
export const CONSOLE_CSP =
  "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

const TYPES: Readonly<Record<string, string>> = {
  "index.html": "text/html; charset=utf-8",
  "console.css": "text/css; charset=utf-8",
  "console.js": "text/javascript; charset=utf-8",
  "favicon.svg": "image/svg+xml",
};

const JAVASCRIPT = "text/javascript; charset=utf-8";

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

/**
 * The web console at `/ui/`: an allow-list of files, each read on its first request and kept, with
 * a strict Content-Security-Policy. The files need no authentication (auth/credentials.ts leaves
 * routes under /ui open); the console's API calls carry the session cookie like any other request.
 * A server nobody opens the console of holds none of them (they were read at start before).
 */
export async function consoleRoutes(app: FastifyInstance): Promise<void> {
  const assets = new LazyAssets(CONSOLE_ASSETS, new Map(Object.entries(TYPES)));
  const library = new LazyAssets(
    CLIENT_LIBRARY,
    new Map(libraryFiles().map((name) => [name, JAVASCRIPT] as const)),
  );

  // This plugin's own scope: the headers apply to /ui responses only (also redirects and 404s).
  app.addHook("onSend", async (_request, reply, payload) => {
    void reply.headers({
      "content-security-policy": CONSOLE_CSP,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
    });
    return payload;
  });

  const serve = (name: string, request: FastifyRequest, reply: FastifyReply, from = assets) => {
    const asset = from.get(name);
    if (asset === undefined) return reply.callNotFound();
    void reply.header("cache-control", "no-cache").header("etag", asset.etag);
    if (request.headers["if-none-match"] === asset.etag) return reply.code(304).send();
    return reply.type(asset.type).send(asset.body);
  };

  // Relative, so the redirect also works behind a proxy that mounts the server under a path.
  app.get("/ui", (_request, reply) => reply.redirect("ui/", 302));
  app.get("/ui/", (request, reply) => serve("index.html", request, reply));
  app.get("/ui/:file", (request, reply) => serve((request.params as { file: string }).file, request, reply));
  app.get("/ui/client/:file", (request, reply) =>
    serve((request.params as { file: string }).file, request, reply, library),
  );
}

/** Files of one directory by name, from an allow-list fixed at start; each read once, when first asked for. */
class LazyAssets {
  readonly #dir: URL;
  readonly #types: ReadonlyMap<string, string>;
  readonly #read = new Map<string, Asset>();

  constructor(dir: URL, types: ReadonlyMap<string, string>) {
    this.#dir = dir;
    this.#types = types;
  }

  get(name: string): Asset | undefined {
    const type = this.#types.get(name);
    if (type === undefined) return undefined;
    let found = this.#read.get(name);
    if (found === undefined) {
      found = asset(readFileSync(new URL(name, this.#dir)), type);
      this.#read.set(name, found);
    }
    return found;
  }
}

function asset(body: Buffer, type: string): Asset {
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  return { body, type, etag };
}

/** The library's modules; none before the first build (the console then reports it cannot load). */
function libraryFiles(): string[] {
  try {
    return readdirSync(CLIENT_LIBRARY).filter((name) => name.endsWith(".js"));
  } catch {
    return [];
  }
}
