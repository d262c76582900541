import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { launchChromium } from "../support/browser.js";
import { testFlags } from "../support/server.js";

/**
 * Item 2 of issue 10 in Chromium: a hostile page on another port of the same host — the same
 * site, so SameSite=Strict cookies go along — tries, while the console is signed in, an
 * auto-submitting `<form enctype="text/plain">` whose body is valid JSON, a `no-cors` fetch, and a
 * login CSRF (signing the browser in with the attacker's token). Nothing is stored, the console
 * stays signed in as its user, and the console itself keeps reading, writing and signing out.
 */

const WAIT_MS = 15_000;
const TOKEN = "console-user-token-0123456789";
const ATTACKER = "attacker-token-0123456789";

/** The attacker's pages, served from `origin` (another port of 127.0.0.1), aimed at `target`. */
function attackerPages(target: string): Record<string, string> {
  // text/plain form encoding sends `name=value`: with this name and value the body is the JSON
  // {"source":"evil",…,"pad":"="}.
  const formField = (json: Record<string, string>) => {
    const text = JSON.stringify({ ...json, pad: "" });
    return { name: `${text.slice(0, -2)}`, value: '"}' };
  };
  const append = formField({ source: "evil", type: "t", subject: "evil/form" });
  const login = formField({ token: ATTACKER });
  const attr = (s: string) => s.replaceAll("&", "&amp;").replaceAll('"', "&quot;");
  return {
    "/append.html": `<!doctype html><title>append</title>
<form id="f" method="POST" action="${target}/events" enctype="text/plain">
<input type="hidden" name="${attr(append.name)}" value="${attr(append.value)}"></form>
<script>
(async () => {
  try {
    await fetch(${JSON.stringify(`${target}/events`)}, {
      method: "POST", mode: "no-cors", credentials: "include",
      headers: { "content-type": "text/plain" },
      body: JSON.stringify({ source: "evil", type: "t", subject: "evil/fetch" }),
    });
  } catch {}
  document.getElementById("f").submit();
})();
</script>`,
    "/login.html": `<!doctype html><title>login</title>
<form id="f" method="POST" action="${target}/auth/session" enctype="text/plain">
<input type="hidden" name="${attr(login.name)}" value="${attr(login.value)}"></form>
<script>document.getElementById("f").submit();</script>`,
  };
}

describe("cross-site request forgery in Chromium", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-csrf-"));
  let browser: Browser | undefined;
  let server: RunningServer;
  let attacker: http.Server;
  let origin: string;
  let attackerOrigin: string;

  beforeAll(async () => {
    const authFile = path.join(dir, "tokens.json");
    fs.writeFileSync(
      authFile,
      JSON.stringify({
        tokens: [
          {
            name: "attacker",
            sha256: tokenDigest(ATTACKER).toString("hex"),
            read: ["evil"],
            write: ["evil"],
          },
        ],
      }),
    );
    server = await startServer(
      loadConfig(
        { AUTH_TOKEN: TOKEN },
        { ...testFlags(`sqlite:${path.join(dir, "events.db")}`), "auth-file": authFile },
      ),
      { logger: false, defaultMetrics: false },
    );
    origin = `http://127.0.0.1:${server.restPort}`;
    const pages = attackerPages(origin);
    attacker = http.createServer((req, res) => {
      const page = pages[req.url ?? ""];
      res.writeHead(page === undefined ? 404 : 200, { "content-type": "text/html; charset=utf-8" });
      res.end(page ?? "");
    });
    await new Promise<void>((resolve) => attacker.listen(0, "127.0.0.1", resolve));
    attackerOrigin = `http://127.0.0.1:${(attacker.address() as { port: number }).port}`;
    browser = await launchChromium();
  });

  afterAll(async () => {
    try {
      await browser?.close();
    } finally {
      attacker?.close();
      await server?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  const stored = async (subject: string) => {
    const res = await fetch(`${origin}/events?subject=${subject}&recursive=true`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    return ((await res.json()) as { events: { subject: string }[] }).events.map((e) => e.subject);
  };

  it("stores nothing from a same-site page, keeps the console's user, and the console still works", {
    timeout: 60_000,
  }, async () => {
    if (browser === undefined) throw new Error("no browser");
    const context = await browser.newContext();
    const consolePage = await context.newPage();
    await consolePage.goto(`${origin}/ui/`);
    const tokenInput = consolePage.getByLabel("Access token");
    await tokenInput.waitFor({ timeout: WAIT_MS });
    await tokenInput.fill(TOKEN);
    await tokenInput.press("Enter");
    await consolePage.locator("#workspace").waitFor({ timeout: WAIT_MS });
    expect(await consolePage.locator("#who").textContent()).toBe("Signed in as auth-token");

    // The hostile page: a no-cors fetch, then the auto-submitted text/plain form (the browser
    // navigates to the server's answer).
    const hostile = await context.newPage();
    const formAnswer = hostile.waitForResponse((r) => r.url() === `${origin}/events`, { timeout: WAIT_MS });
    await hostile.goto(`${attackerOrigin}/append.html`);
    expect((await formAnswer).status()).toBe(403);
    // Login CSRF: the attacker's token in the same kind of form.
    const login = await context.newPage();
    const loginAnswer = login.waitForResponse((r) => r.url() === `${origin}/auth/session`, {
      timeout: WAIT_MS,
    });
    await login.goto(`${attackerOrigin}/login.html`);
    expect((await loginAnswer).status()).toBe(403);
    await login.waitForURL(`${origin}/auth/session`, { timeout: WAIT_MS });
    await hostile.waitForURL(`${origin}/events`, { timeout: WAIT_MS });
    await login.close();
    await hostile.close();

    // The no-cors fetch got an opaque answer whatever happened; the store says what did.
    expect(await stored("evil")).toEqual([]);
    await consolePage.reload();
    await consolePage.locator("#workspace").waitFor({ timeout: WAIT_MS });
    expect(await consolePage.locator("#who").textContent()).toBe("Signed in as auth-token");

    // The console's own origin, with its header (as its api() sends it), may write; it lists it.
    const written = await consolePage.evaluate(async () => {
      const res = await fetch("/events", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-eventsdb-console": "1" },
        body: JSON.stringify({ source: "console", type: "t", subject: "console/ok" }),
      });
      return res.status;
    });
    expect(written).toBe(200);
    await consolePage.getByRole("button", { name: "Refresh" }).click();
    await consolePage.locator('#subject-list li[data-subject="console/ok"]').waitFor({ timeout: WAIT_MS });
    // Signing out (DELETE with the cookie) still works from the console.
    await consolePage.getByRole("button", { name: "Sign out" }).click();
    await consolePage.getByText("You are signed out.").waitFor({ timeout: WAIT_MS });
    const cookies = await context.cookies(origin);
    expect(cookies.filter((c) => c.name === "eventsdb_session")).toEqual([]);
    await context.close();
  });
});
