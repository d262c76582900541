import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { FastifyInstance } from "fastify";
import { afterEach, describe, expect, it, vi } from "vitest";
import { buildApp } from "../../src/app.js";
import { BrowserSessions, SESSION_CACHE_MS } from "../../src/auth/sessions.js";
import { Guard } from "../../src/auth/throttle.js";
import { type Principal, TokenRegistry, tokenDigest } from "../../src/auth/tokens.js";
import { loadConfig } from "../../src/config.js";
import type { EventLog } from "../../src/events/event-log.js";
import { SILENT_LOGGER } from "../../src/log.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { Pipeline } from "../../src/transports/pipeline.js";
import { DIALECTS } from "../support/dialects.js";
import { openTestStore, testFlags } from "../support/server.js";

/**
 * Item 3 of issue 10: a browser session holds only while its token does — a reload (SIGHUP) ends
 * the sessions of tokens whose hash changed or that are gone, on every process sharing the store —
 * and a sign-out is honoured by every process within a second. Item 20 (credential half): every
 * principal's stillValid() is right for tokens (removed, rehashed, expired) and sessions (signed
 * out on any process, expired, token changed or gone). Two processes on one database: two servers
 * in this test process on the same MariaDB database or SQLite file. Each process's one-second
 * session cache runs on its own stepped clock.
 */

const KEEP = "keep-token-0123456789";
const REHASH = "rehash-token-0123456789";
const REHASHED = "rehash-token-new-987654";
const GONE = "gone-token-0123456789";

const hex = (token: string) => tokenDigest(token).toString("hex");

function writeTokens(file: string, tokens: { name: string; token: string; expires?: string }[]): void {
  fs.writeFileSync(
    file,
    JSON.stringify({
      tokens: tokens.map((t) => ({
        name: t.name,
        sha256: hex(t.token),
        read: ["*"],
        write: ["*"],
        ...(t.expires === undefined ? {} : { expires: t.expires }),
      })),
    }),
  );
}

/** A clock per process, stepped by the test. */
function steppedClock() {
  const clock = { now: 0, read: () => clock.now };
  return clock;
}

describe.each(DIALECTS)("browser sessions on $name", (dialect) => {
  const dirs: string[] = [];
  const servers: RunningServer[] = [];
  const apps: FastifyInstance[] = [];
  const stores: EventLog[] = [];
  afterEach(async () => {
    vi.useRealTimers();
    for (const app of apps.splice(0)) await app.close();
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await Promise.all(stores.splice(0).map((s) => s.close()));
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });
  const tempDir = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-sessions-"));
    dirs.push(dir);
    return dir;
  };
  /** A database both "processes" use (a MariaDB database, or one SQLite file). */
  const sharedUrl = async () =>
    dialect.name === "sqlite" ? `sqlite:${path.join(tempDir(), "events.db")}` : dialect.url();

  const startProcess = async (url: string, authFile: string, clock: () => number) => {
    const server = await startServer(loadConfig({}, { ...testFlags(url), "auth-file": authFile }), {
      logger: false,
      defaultMetrics: false,
      clock,
    });
    servers.push(server);
    return { server, url: `http://127.0.0.1:${server.restPort}` };
  };
  const signIn = async (base: string, token: string): Promise<string> => {
    const res = await fetch(`${base}/auth/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
    expect(res.status).toBe(200);
    const cookie = res.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(/Max-Age=43200/); // item 21: Max-Age besides Expires
    expect(cookie).toMatch(/Expires=/);
    return cookie.split(";")[0] as string;
  };
  const status = async (base: string, cookie: string) =>
    (await fetch(`${base}/subjects`, { headers: { cookie } })).status;

  it("a reload ends the sessions of tokens that changed or went, on every process", async () => {
    const dir = tempDir();
    const authFile = path.join(dir, "tokens.json");
    writeTokens(authFile, [
      { name: "keep", token: KEEP },
      { name: "rehash", token: REHASH },
      { name: "gone", token: GONE },
    ]);
    const url = await sharedUrl();
    const clockA = steppedClock();
    const clockB = steppedClock();
    const a = await startProcess(url, authFile, clockA.read);
    const b = await startProcess(url, authFile, clockB.read);
    const keep = await signIn(a.url, KEEP);
    const rehash = await signIn(a.url, REHASH);
    const gone = await signIn(b.url, GONE);
    for (const base of [a.url, b.url]) {
      for (const cookie of [keep, rehash, gone]) expect(await status(base, cookie)).toBe(200);
    }

    // The operator changes one token's hash, removes another, and reloads process A only.
    writeTokens(authFile, [
      { name: "keep", token: KEEP },
      { name: "rehash", token: REHASHED },
    ]);
    expect(await a.server.reload().sessionsEnded).toBe(2);
    expect([await status(a.url, keep), await status(a.url, rehash), await status(a.url, gone)]).toEqual([
      200, 401, 401,
    ]);
    // Process B has not reloaded (it still knows the old hash and the removed token), but the
    // sessions are gone from the store: once its one-second cache lapses, it refuses them too.
    clockB.now += SESSION_CACHE_MS;
    expect([await status(b.url, keep), await status(b.url, rehash), await status(b.url, gone)]).toEqual([
      200, 401, 401,
    ]);
    // The new token signs in again.
    expect(await status(b.url, await signIn(a.url, REHASHED))).toBe(401); // B still has the old hash
    const fresh = await signIn(a.url, REHASHED);
    expect(await status(a.url, fresh)).toBe(200);
  });

  it("checks the token's hash on every use, also without a reload of this process", async () => {
    const dir = tempDir();
    const fileA = path.join(dir, "a.json");
    const fileB = path.join(dir, "b.json");
    writeTokens(fileA, [{ name: "rehash", token: REHASH }]);
    writeTokens(fileB, [{ name: "rehash", token: REHASHED }]);
    const url = await sharedUrl();
    const a = await startProcess(url, fileA, () => 0);
    const b = await startProcess(url, fileB, () => 0);
    // A session signed in with the old token on A is not honoured by B, which has the new hash.
    const old = await signIn(a.url, REHASH);
    expect(await status(a.url, old)).toBe(200);
    expect(await status(b.url, old)).toBe(401);
  });

  it("honours a sign-out on every process within a second", async () => {
    const dir = tempDir();
    const authFile = path.join(dir, "tokens.json");
    writeTokens(authFile, [{ name: "keep", token: KEEP }]);
    const url = await sharedUrl();
    const clockB = steppedClock();
    const a = await startProcess(url, authFile, () => 0);
    const b = await startProcess(url, authFile, clockB.read);
    const cookie = await signIn(a.url, KEEP);
    expect(await status(b.url, cookie)).toBe(200); // B now has it in its cache
    const out = await fetch(`${a.url}/auth/session`, {
      method: "DELETE",
      headers: { cookie, origin: a.url, "x-eventsdb-console": "1" },
    });
    expect(out.status).toBe(204);
    expect(await status(a.url, cookie)).toBe(401);
    clockB.now += SESSION_CACHE_MS;
    expect(await status(b.url, cookie)).toBe(401);
  });

  describe("stillValid()", () => {
    /** An app (no port) with a route that hands out the principal of each request. */
    const appOn = async (url: string, registry: () => TokenRegistry, clock: () => number, ttl = "43200") => {
      const { store, metrics } = await openTestStore(url, { "session-ttl": ttl });
      stores.push(store);
      const config = loadConfig({}, { ...testFlags(url), "session-ttl": ttl });
      const sessions = new BrowserSessions(store.dialect.db, config.auth.sessionTtlSeconds, clock);
      const pipeline = new Pipeline({
        registry,
        sessions,
        guard: new Guard({ rateLimitPerMinute: 0, clock }),
        protectMetrics: false,
        allowQueryToken: false,
        trust: undefined,
        log: SILENT_LOGGER,
      });
      const app = await buildApp({ config, eventLog: store, metrics, pipeline, sessions });
      let last: Principal | undefined;
      app.get("/whoami", async (request) => {
        last = request.principal;
        return { name: request.principal.name };
      });
      apps.push(app);
      await app.ready();
      const principalOf = async (headers: Record<string, string>): Promise<Principal> => {
        const res = await app.inject({ method: "GET", url: "/whoami", headers });
        expect(res.statusCode, res.body).toBe(200);
        return last as Principal;
      };
      return { app, principalOf };
    };
    const load = (file: string) => TokenRegistry.load(undefined, file);

    it("of a token: false once it is removed, rehashed or expired", async () => {
      const dir = tempDir();
      const file = path.join(dir, "tokens.json");
      writeTokens(file, [
        { name: "keep", token: KEEP },
        { name: "expiring", token: GONE, expires: new Date(Date.now() + 60_000).toISOString() },
      ]);
      let registry = load(file);
      const { principalOf } = await appOn(
        await sharedUrl(),
        () => registry,
        () => 0,
      );
      const keep = await principalOf({ authorization: `Bearer ${KEEP}` });
      const expiring = await principalOf({ authorization: `Bearer ${GONE}` });
      expect(await keep.stillValid?.()).toBe(true);
      expect(await expiring.stillValid?.()).toBe(true);
      writeTokens(file, [{ name: "keep", token: REHASHED }]); // keep rehashed, expiring removed
      registry = load(file);
      expect(await keep.stillValid?.()).toBe(false);
      expect(await expiring.stillValid?.()).toBe(false);
      writeTokens(file, [
        { name: "keep", token: KEEP },
        { name: "expiring", token: GONE, expires: new Date(Date.now() + 60_000).toISOString() },
      ]);
      registry = load(file);
      expect(await keep.stillValid?.()).toBe(true);
      expect(await expiring.stillValid?.()).toBe(true);
      vi.useFakeTimers({ toFake: ["Date"] });
      vi.setSystemTime(Date.now() + 61_000);
      expect(await keep.stillValid?.()).toBe(true);
      expect(await expiring.stillValid?.()).toBe(false);
    });

    it("of a session: false once signed out on any process, expired, or its token changed or gone", async () => {
      const dir = tempDir();
      const file = path.join(dir, "tokens.json");
      writeTokens(file, [
        { name: "keep", token: KEEP },
        { name: "rehash", token: REHASH },
      ]);
      let registry = load(file);
      const url = await sharedUrl();
      const clockA = steppedClock();
      const clockB = steppedClock();
      const a = await appOn(url, () => registry, clockA.read, "120");
      const b = await appOn(url, () => registry, clockB.read, "120");
      const signInOn = async (app: FastifyInstance, token: string) => {
        const res = await app.inject({ method: "POST", url: "/auth/session", payload: { token } });
        expect(res.statusCode).toBe(200);
        return String(res.headers["set-cookie"]).split(";")[0] as string;
      };
      // Signed out on A; the principal B handed out learns it within B's one-second cache.
      const out = await signInOn(a.app, KEEP);
      const onB = await b.principalOf({ cookie: out });
      expect(await onB.stillValid?.()).toBe(true);
      const signOut = await a.app.inject({
        method: "DELETE",
        url: "/auth/session",
        headers: { cookie: out, origin: "http://localhost:80", "x-eventsdb-console": "1" },
      });
      expect(signOut.statusCode).toBe(204);
      clockB.now += SESSION_CACHE_MS;
      expect(await onB.stillValid?.()).toBe(false);

      // Token rehashed, and token removed.
      const rehashed = await b.principalOf({ cookie: await signInOn(a.app, REHASH) });
      const removed = await b.principalOf({ cookie: await signInOn(a.app, KEEP) });
      expect(await rehashed.stillValid?.()).toBe(true);
      expect(await removed.stillValid?.()).toBe(true);
      writeTokens(file, [{ name: "rehash", token: REHASHED }]);
      registry = load(file);
      expect(await rehashed.stillValid?.()).toBe(false);
      expect(await removed.stillValid?.()).toBe(false);

      // Expired (--session-ttl 120 here).
      writeTokens(file, [{ name: "keep", token: KEEP }]);
      registry = load(file);
      const expiring = await a.principalOf({ cookie: await signInOn(b.app, KEEP) });
      expect(await expiring.stillValid?.()).toBe(true);
      vi.useFakeTimers({ toFake: ["Date"] });
      vi.setSystemTime(Date.now() + 121_000);
      expect(await expiring.stillValid?.()).toBe(false);
    });
  });
});
