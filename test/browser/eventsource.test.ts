import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, describe, expect, it } from "vitest";
import { launchChromium } from "../support/browser.js";
import { freePort } from "../support/ports.js";
import { startTestServer, type TestServer } from "../support/server.js";

const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
const SCREENSHOT = join(ARTIFACTS, "eventsource-resume.png");
/** Upper bound for each wait on the browser; a bound, not a timing assertion. */
const WAIT_MS = 15_000;

/**
 * Runs in the page (plain JS: the test's tsconfig has no DOM types, and a string is not rewritten
 * by the TypeScript transform). The page is on the server's origin, so no CORS is involved.
 */
const PAGE_SCRIPT = `
window.received = [];
window.log = [];
window.source = new EventSource("/events/stream?subject=browser&recursive=true");
window.source.addEventListener("open", () => window.log.push("open"));
window.source.addEventListener("error", () => window.log.push("error (readyState " + window.source.readyState + ")"));
window.source.addEventListener("message", (event) => {
  window.received.push({ lastEventId: event.lastEventId, data: JSON.parse(event.data) });
});
window.render = () => {
  const pre = document.createElement("pre");
  pre.style.font = "14px monospace";
  pre.textContent =
    "EventSource resume across a server restart\\n\\n" +
    window.received.map((m) => "id " + m.lastEventId + "  " + m.data.subject).join("\\n") +
    "\\n\\nlog: " + window.log.join(", ");
  document.body.replaceChildren(pre);
};
`;

interface Received {
  readonly lastEventId: string;
  readonly data: { readonly id: number; readonly subject: string };
}

async function receivedCount(page: Page): Promise<number> {
  return page.evaluate<number>("window.received.length");
}

/** Polls the page until it holds `count` messages, at most WAIT_MS; fails with what it saw. */
async function waitForReceived(page: Page, count: number): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while ((await receivedCount(page)) < count) {
    if (Date.now() > deadline) {
      const state = await page.evaluate<unknown>("({ received: window.received, log: window.log })");
      throw new Error(`the browser did not receive ${count} events: ${JSON.stringify(state)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("EventSource in Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "eventsdb-browser-"));
  const databaseUrl = `sqlite:${join(dir, "events.db")}`;
  let browser: Browser | undefined;
  let server: TestServer | undefined;

  afterAll(async () => {
    // The browser first, so its open stream does not hold the server's drain.
    try {
      await browser?.close();
    } finally {
      try {
        await server?.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it("resumes with Last-Event-ID after the server restarts on the same port", {
    timeout: 60_000,
  }, async () => {
    const port = await freePort();
    const flags = { "rest-port": String(port), "grpc-port": "0" };
    server = await startTestServer(databaseUrl, flags);
    const origin = server.url;
    expect(origin).toBe(`http://127.0.0.1:${port}`);

    browser = await launchChromium();
    const page = await browser.newPage();
    // What the browser sent on each stream request that reached a server (attempts refused while
    // the server was down have no response): the reconnect must carry Last-Event-ID.
    const streamRequests: Promise<{ lastEventId: string | undefined }>[] = [];
    page.on("response", (response) => {
      if (new URL(response.url()).pathname === "/events/stream") {
        // allHeaders(): the headers as sent, with those the network stack added.
        streamRequests.push(
          response
            .request()
            .allHeaders()
            .then((headers) => ({ lastEventId: headers["last-event-id"] })),
        );
      }
    });
    // Same origin as the stream (the server has no static route): any page of it will do.
    await page.goto(`${origin}/healthz`);
    await page.addScriptTag({ content: PAGE_SCRIPT });

    const posted: number[] = [];
    const post = async (n: number) => {
      const res = await fetch(`${origin}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          source: "browser-test",
          type: "test.browser",
          subject: `browser/${n}`,
          data: Buffer.from(JSON.stringify({ n })).toString("base64"),
        }),
      });
      expect(res.status).toBe(200);
      posted.push(((await res.json()) as { id: number }).id);
    };

    for (let n = 1; n <= 5; n++) await post(n);
    await waitForReceived(page, 5);

    // Ends the stream cleanly; the browser waits retry: 2000 ms and reconnects by itself.
    await server.close();
    server = await startTestServer(databaseUrl, flags);
    expect(server.url).toBe(origin);
    for (let n = 6; n <= 10; n++) await post(n);
    await waitForReceived(page, 10);

    const received = await page.evaluate<Received[]>("window.received");
    const log = await page.evaluate<string[]>("window.log");
    await page.evaluate("window.render()");
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });

    expect(posted).toHaveLength(10);
    expect(new Set(posted).size).toBe(10);
    // Exactly the posted ids, in order, none twice: the second server resumed after id 5
    // (without Last-Event-ID it would have replayed from the start, from_id being 0).
    expect(received.map((message) => Number(message.lastEventId))).toEqual(posted);
    expect(received.map((message) => message.data.id)).toEqual(posted);
    expect(received.map((message) => message.data.subject)).toEqual(posted.map((_, i) => `browser/${i + 1}`));
    expect(log.filter((entry) => entry === "open").length).toBeGreaterThanOrEqual(2);
    const [first, ...reconnects] = await Promise.all(streamRequests);
    expect(first?.lastEventId).toBeUndefined();
    expect(reconnects.length).toBeGreaterThanOrEqual(1);
    for (const request of reconnects) expect(request.lastEventId).toBe(String(posted[4]));
    expect(existsSync(SCREENSHOT)).toBe(true);
  });
});
