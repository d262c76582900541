import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium } from "../support/browser.js";
import { startTestServer, type TestServer } from "../support/server.js";

/** Upper bound for each wait on the browser; a bound, not a timing assertion. */
const WAIT_MS = 15_000;
/** The console's page of subjects (SUBJECT_PAGE in src/ui/public/console.js). */
const PAGE = 500;
const SUBJECTS = Array.from({ length: 2 * PAGE + 100 }, (_, i) => `s/${String(i).padStart(4, "0")}`);

async function rows(page: Page): Promise<string[]> {
  return page.evaluate<string[]>(
    "[...document.querySelectorAll('#subject-list li[data-subject]')].map((li) => li.dataset.subject)",
  );
}

/** Waits until the list holds `n` subject rows (the CSP forbids waitForFunction's eval). */
async function waitForRows(page: Page, n: number): Promise<void> {
  await page
    .locator("#subject-list li[data-subject]")
    .nth(n - 1)
    .waitFor({ timeout: WAIT_MS });
}

describe("the console's subject list in Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "eventsdb-console-subjects-"));
  let browser: Browser | undefined;
  let t: TestServer | undefined;

  beforeAll(async () => {
    browser = await launchChromium();
    // An open server (no token): the console reads without signing in.
    t = await startTestServer(`sqlite:${join(dir, "events.db")}`);
    for (let i = 0; i < SUBJECTS.length; i += 1000) {
      const batch = SUBJECTS.slice(i, i + 1000).map((subject) => ({ source: "s", type: "t", subject }));
      const res = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(batch),
      });
      expect(res.status).toBe(200);
    }
  });

  afterAll(async () => {
    try {
      await browser?.close();
    } finally {
      await t?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("loads subjects a page at a time: the first page, More, then on scroll, never the whole list", {
    timeout: 60_000,
  }, async () => {
    const context = await (browser as Browser).newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const asked: URL[] = [];
    page.on("request", (request) => {
      const url = new URL(request.url());
      if (url.pathname === "/subjects") asked.push(url);
    });
    try {
      await page.goto(`${(t as TestServer).url}/ui/`);
      await waitForRows(page, PAGE);
      expect(await rows(page)).toEqual(SUBJECTS.slice(0, PAGE));
      expect(await page.locator("#subjects-summary").textContent()).toContain("more on the server");

      // The button loads the next page (after the last listed subject).
      await page.locator(".more-subjects").click();
      await waitForRows(page, 2 * PAGE);
      expect(await rows(page)).toEqual(SUBJECTS.slice(0, 2 * PAGE));

      // Scrolling the last row into view loads the rest; then there is no More row.
      await page.locator("#subject-list li.more").scrollIntoViewIfNeeded();
      await waitForRows(page, SUBJECTS.length);
      expect(await rows(page)).toEqual(SUBJECTS);
      expect(await page.locator("#subject-list li.more").count()).toBe(0);
      expect(await page.locator("#subjects-summary").textContent()).not.toContain("more on the server");

      // Every request was a page: limit set, each `after` the previous page's last subject.
      expect(asked.map((url) => [url.searchParams.get("limit"), url.searchParams.get("after")])).toEqual([
        [String(PAGE), null],
        [String(PAGE), SUBJECTS[PAGE - 1]],
        [String(PAGE), SUBJECTS[2 * PAGE - 1]],
      ]);
    } finally {
      await context.close();
    }
  });
});
