import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { SubscriptionStore } from "../../src/subscriptions/store.js";
import { launchChromium } from "../support/browser.js";

/** Upper bound for each wait on the browser; a bound, not a timing assertion. */
const WAIT_MS = 15_000;
const TOKEN = "console-subs-token";

/**
 * The console's subscriptions view (issue 14): each subscription with its state, a parked one's
 * reason and event, position and lag; Redrive (a state change through the session cookie and the
 * console header) makes a parked one active again.
 */
describe("console subscriptions view in Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "eventsdb-console-subs-"));
  let browser: Browser | undefined;
  let server: RunningServer | undefined;

  beforeAll(async () => {
    browser = await launchChromium();
    server = await startServer(
      loadConfig(
        { AUTH_TOKEN: TOKEN },
        {
          "database-url": `sqlite:${join(dir, "events.db")}`,
          "rest-port": "0",
          "grpc-port": "0",
          host: "127.0.0.1",
          // The console alone: this process delivers none, so states change only as the test says.
          "subscriptions-per-process": "0",
        },
      ),
      { logger: false, defaultMetrics: false },
    );
  });

  afterAll(async () => {
    try {
      await browser?.close();
    } finally {
      await server?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("lists state, reason, position and lag, and redrives a parked subscription", {
    timeout: 60_000,
  }, async () => {
    if (browser === undefined || server === undefined) throw new Error("not started");
    const origin = `http://127.0.0.1:${server.restPort}`;
    const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
    const appended = await fetch(`${origin}/events`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify([1, 2, 3, 4, 5].map((n) => ({ source: "s", type: "t", subject: `orders/${n}` }))),
    });
    expect(appended.status).toBe(200);
    const create = async (sink: string) => {
      const res = await fetch(`${origin}/subscriptions`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({
          sink,
          protocol: "HTTP",
          config: { subject: "orders", recursive: true, from: 1 },
        }),
      });
      expect(res.status).toBe(201);
      return ((await res.json()) as { id: string }).id;
    };
    await create("https://hooks.example.com/healthy");
    const parkedId = await create("https://hooks.example.com/failing");
    // Park it as the deliverer would after its retries.
    const store = new SubscriptionStore(server.eventLog.dialect);
    const lease = (await store.claim("test", 60_000, 10)).find((l) => l.subscription.id === parkedId);
    if (lease === undefined) throw new Error("no lease");
    expect(await store.park(lease, "HTTP 500 after 10 attempts", 2)).toBe(true);

    const page = await (await browser.newContext()).newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    await page.goto(`${origin}/ui/`);
    await page.getByLabel("Access token").fill(TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();

    const parkedRow = page.locator(`#subscription-list tr[data-id="${parkedId}"]`);
    await parkedRow.waitFor({ timeout: WAIT_MS });
    await expect.poll(() => page.locator("#subscription-list tr").count(), { timeout: WAIT_MS }).toBe(2);
    expect(await page.locator("#subscriptions-summary").textContent()).toBe("2 subscriptions, 1 parked");
    expect(await parkedRow.locator(".state").textContent()).toBe(
      "parkedHTTP 500 after 10 attempts (event 2)",
    );
    expect(await parkedRow.locator(".lag").textContent()).toBe("4");
    const healthy = page.locator("#subscription-list tr", { hasText: "healthy" });
    expect(await healthy.locator(".redrive").count()).toBe(0);

    await parkedRow.getByRole("button", { name: "Redrive" }).click();
    await expect.poll(() => parkedRow.locator(".state").textContent(), { timeout: WAIT_MS }).toBe("active");
    const stored = await store.get(parkedId);
    expect(stored?.state).toBe("active");
    expect(pageErrors).toEqual([]);
  });
});
