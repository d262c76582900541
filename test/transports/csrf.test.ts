import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { testFlags } from "../support/server.js";

/**
 * Item 2 of issue 10, on the wire (test/browser/csrf.test.ts plays it in Chromium): a request that
 * changes state and is authenticated by the session cookie must come from the console — the same
 * origin (Sec-Fetch-Site, else Origin) and the console's header, no form or text/plain body.
 * Bearer tokens are not affected; reads are not affected; sign-in refuses other origins (login
 * CSRF).
 */

const TOKEN = "csrf-token-0123456789";
const ATTACKER = "attacker-token-0123456789";

describe("cross-site request forgery with the session cookie", () => {
  let server: RunningServer;
  let url: string;
  let cookie: string;
  const other = () => `http://127.0.0.1:${server.restPort + 1}`; // another port: the same site

  beforeAll(async () => {
    server = await startServer(loadConfig({ AUTH_TOKEN: TOKEN }, testFlags("sqlite::memory:")), {
      logger: false,
      defaultMetrics: false,
    });
    url = `http://127.0.0.1:${server.restPort}`;
    const res = await fetch(`${url}/auth/session`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: TOKEN }),
    });
    cookie = (res.headers.get("set-cookie") ?? "").split(";")[0] as string;
  });
  afterAll(async () => {
    await server.close();
  });

  const append = (subject: string, headers: Record<string, string>, type = "application/json") =>
    fetch(`${url}/events`, {
      method: "POST",
      headers: { "content-type": type, ...headers },
      body: JSON.stringify({ source: "csrf", type: "t", subject }),
    });
  const stored = async () => {
    const res = await fetch(`${url}/events?subject=csrf&recursive=true`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    return ((await res.json()) as { events: { subject: string }[] }).events.map((e) => e.subject);
  };

  it("refuses cookie-authenticated writes without the console's origin and header, or with a form body", async () => {
    const console = { cookie, "x-eventsdb-console": "1" };
    const refused: [string, Record<string, string>, string?][] = [
      ["csrf/no-proof", { cookie }],
      ["csrf/header-only", console], // neither Origin nor Sec-Fetch-Site
      ["csrf/origin-only", { cookie, origin: url }],
      ["csrf/other-origin", { ...console, origin: other() }],
      ["csrf/same-site", { ...console, "sec-fetch-site": "same-site", origin: url }],
      ["csrf/cross-site", { ...console, "sec-fetch-site": "cross-site" }],
      ["csrf/null-origin", { ...console, origin: "null" }],
      ["csrf/text-plain", { ...console, origin: url }, "text/plain"],
      ["csrf/form", { ...console, "sec-fetch-site": "same-origin" }, "application/x-www-form-urlencoded"],
      ["csrf/multipart", { ...console, origin: url }, "multipart/form-data; boundary=x"],
    ];
    for (const [subject, headers, type] of refused) {
      const res = await append(subject, headers, type);
      expect(res.status, subject).toBe(403);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("permission_denied");
    }
    expect(await stored()).toEqual([]);

    // The console: same origin (by Sec-Fetch-Site, or Origin where it is not sent) and its header.
    expect(
      (await append("csrf/console-1", { ...console, "sec-fetch-site": "same-origin", origin: url })).status,
    ).toBe(200);
    expect((await append("csrf/console-2", { ...console, origin: url })).status).toBe(200);
    // Bearer tokens are not affected, whatever the origin and body type.
    const bearer = { authorization: `Bearer ${TOKEN}`, origin: other(), "sec-fetch-site": "same-site" };
    expect((await append("csrf/bearer", bearer, "text/plain")).status).toBe(200);
    expect(await stored()).toEqual(["csrf/console-1", "csrf/console-2", "csrf/bearer"]);
    // Reads with the cookie alone are fine (EventSource cannot send headers).
    expect((await fetch(`${url}/subjects`, { headers: { cookie } })).status).toBe(200);
  });

  it("covers every state-changing route: DELETE /events, Connect and gRPC-Web POSTs, sign-out", async () => {
    const crossSite = { cookie, origin: other(), "sec-fetch-site": "same-site", "x-eventsdb-console": "1" };
    const del = await fetch(`${url}/events?subject=csrf&recursive=true`, {
      method: "DELETE",
      headers: crossSite,
    });
    expect(del.status).toBe(403);
    const connect = await fetch(`${url}/grpc.EventsDB/CreateEvent`, {
      method: "POST",
      headers: { ...crossSite, "content-type": "application/json" },
      body: JSON.stringify({ source: "csrf", type: "t", subject: "csrf/connect" }),
    });
    expect(connect.status).toBe(403);
    expect(await connect.json()).toMatchObject({ code: "permission_denied" });
    const grpcWeb = await fetch(`${url}/grpc.EventsDB/ListSubjects`, {
      method: "POST",
      headers: { cookie, "content-type": "application/grpc-web+proto" },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    });
    expect(grpcWeb.headers.get("grpc-status")).toBe("7"); // PERMISSION_DENIED
    const signOut = await fetch(`${url}/auth/session`, { method: "DELETE", headers: crossSite });
    expect(signOut.status).toBe(403);
    expect((await fetch(`${url}/subjects`, { headers: { cookie } })).status).toBe(200); // still signed in
    expect(await stored()).not.toContain("csrf/connect");
  });

  it("refuses sign-in from another origin and with form bodies (login CSRF)", async () => {
    const signIn = (headers: Record<string, string>, body: string, type = "application/json") =>
      fetch(`${url}/auth/session`, { method: "POST", headers: { "content-type": type, ...headers }, body });
    const json = JSON.stringify({ token: ATTACKER });
    expect((await signIn({ origin: other() }, json)).status).toBe(403);
    expect((await signIn({ "sec-fetch-site": "same-site" }, json)).status).toBe(403);
    expect((await signIn({}, json, "text/plain")).status).toBe(403);
    const ok = await signIn(
      { "sec-fetch-site": "same-origin", origin: url },
      JSON.stringify({ token: TOKEN }),
    );
    expect(ok.status).toBe(200);
    // A client that is not a browser sends neither header.
    expect((await signIn({}, JSON.stringify({ token: TOKEN }))).status).toBe(200);
  });
});
