import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { CONSOLE_CSP } from "../../src/ui/console.js";
import { launchChromium } from "../support/browser.js";
import { freePort } from "../support/ports.js";

const ARTIFACTS = fileURLToPath(new URL("../../test-artifacts/", import.meta.url));
/** Upper bound for each wait on the browser; a bound, not a timing assertion. */
const WAIT_MS = 15_000;
const TOKEN = "t";
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const run = promisify(execFile);

/** The real server on a fixed port; with a token unless `open`. */
function start(databaseUrl: string, port: number, open = false): Promise<RunningServer> {
  const config = loadConfig(open ? {} : { AUTH_TOKEN: TOKEN }, {
    "database-url": databaseUrl,
    "rest-port": String(port),
    "grpc-port": "0",
    host: "127.0.0.1",
  });
  return startServer(config, { logger: false, defaultMetrics: false });
}

/** POSTs one event (or a batch) with the token; returns the ids. */
async function post(
  origin: string,
  body: unknown,
  contentType = "application/json",
  headers: Record<string, string> = {},
): Promise<number[]> {
  const res = await fetch(`${origin}/events`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": contentType, ...headers },
    body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const answer = (await res.json()) as { id?: number; ids?: number[] };
  expect(res.status, JSON.stringify(answer)).toBe(200);
  return answer.ids ?? [answer.id as number];
}

function simple(subject: string, type: string, data: unknown) {
  return {
    source: "shop",
    type,
    subject,
    data: Buffer.from(JSON.stringify(data)).toString("base64"),
  };
}

async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `console-${name}.png`) });
}

/** The ids in the tail, oldest first (the list shows the newest at the top). */
async function shownIds(page: Page): Promise<number[]> {
  const ids = await page.evaluate<number[]>(
    "[...document.querySelectorAll('#event-list > li')].map((li) => Number(li.dataset.id))",
  );
  return ids.reverse();
}

async function waitForState(page: Page, state: string): Promise<void> {
  await page.locator(`#status[data-state="${state}"]`).waitFor({ timeout: WAIT_MS });
}

async function waitForRow(page: Page, id: number): Promise<void> {
  await page.locator(`#event-list .event-row[data-id="${id}"]`).waitFor({ timeout: WAIT_MS });
}

/** Records each change of the connection indicator into window.states (repeats folded). */
async function recordStates(page: Page): Promise<void> {
  await page.evaluate(`
    window.states = [];
    const status = document.getElementById("status");
    new MutationObserver(() => {
      if (window.states.at(-1) !== status.dataset.state) window.states.push(status.dataset.state);
    })
      .observe(status, { attributes: true, attributeFilter: ["data-state"] });
  `);
}

/** Fails when the page is wider than the viewport (horizontal scrolling). */
async function expectNoHorizontalScroll(page: Page, width: number): Promise<void> {
  const scrollWidth = await page.evaluate<number>("document.documentElement.scrollWidth");
  expect(scrollWidth).toBeLessThanOrEqual(width);
}

/** The rectangle of the first element matching `selector`, at the current scroll position. */
function boxOf(page: Page, selector: string): Promise<{ top: number; bottom: number; right: number }> {
  return page.evaluate(`(() => {
    const element = document.querySelector(${JSON.stringify(selector)});
    if (element === null) throw new Error("no element " + ${JSON.stringify(selector)});
    const { top, bottom, right } = element.getBoundingClientRect();
    return { top, bottom, right };
  })()`);
}

/**
 * Fails when the document scrolls sideways or any rendered element reaches past the viewport's
 * right edge (what a phone cuts off); names the offenders.
 */
async function expectNothingPastTheRightEdge(page: Page, width: number): Promise<void> {
  expect(await page.evaluate<number>("document.scrollingElement.scrollWidth")).toBeLessThanOrEqual(width);
  const past = await page.evaluate<string[]>(`[...document.querySelectorAll("body *")]
    .filter((element) => {
      const box = element.getBoundingClientRect();
      return box.width > 0 && box.right > ${width} + 0.5;
    })
    .map((element) => element.tagName.toLowerCase() + "#" + element.id + "." + element.className)`);
  expect(past).toEqual([]);
}

describe("web console in Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "eventsdb-console-"));
  let browser: Browser | undefined;
  const servers: RunningServer[] = [];

  beforeAll(async () => {
    browser = await launchChromium();
  });

  /** A server on a new store file and a free port; `restart` starts it again on both. */
  const serve = async (file: string, open = false) => {
    const databaseUrl = `sqlite:${join(dir, file)}`;
    const port = await freePort();
    const restart = async (): Promise<RunningServer> => {
      const server = await start(databaseUrl, port, open);
      servers.push(server);
      return server;
    };
    return { origin: `http://127.0.0.1:${port}`, server: await restart(), restart };
  };

  afterAll(async () => {
    // The browser first, so its open stream does not hold the server's drain.
    try {
      await browser?.close();
    } finally {
      try {
        for (const server of servers) await server.close();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it("signs in, lists subjects with counts, tails, pauses, opens an event and resumes after a restart", {
    timeout: 120_000,
  }, async () => {
    const { origin, server: started, restart } = await serve("auth.db");
    let server = started;

    // Static files: open, with a strict CSP; /ui redirects to /ui/; API calls still need the token.
    const redirect = await fetch(`${origin}/ui`, { redirect: "manual" });
    expect(redirect.status).toBe(302);
    expect(new URL(redirect.headers.get("location") ?? "", `${origin}/ui`).pathname).toBe("/ui/");
    for (const file of ["", "console.js", "console.css", "favicon.svg"]) {
      const res = await fetch(`${origin}/ui/${file}`);
      expect(res.status, file).toBe(200);
      expect(res.headers.get("content-security-policy")).toBe(CONSOLE_CSP);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    }
    expect((await fetch(`${origin}/ui/missing.js`)).status).toBe(404);
    expect((await fetch(`${origin}/subjects`)).status).toBe(401);

    // A small shop: JSON, a structured CloudEvent, text, binary, and one subject with over 1000 events.
    const seeded = [
      ...(await post(origin, simple("orders/eu/1001", "order.created", { order: 1001, total: 129.5 }))),
      ...(await post(origin, simple("orders/us/2001", "order.created", { order: 2001, total: 42 }))),
    ];
    const [paidId] = await post(
      origin,
      {
        specversion: "1.0",
        id: "pay-1001",
        source: "payments",
        type: "order.paid",
        subject: "orders/eu/1001",
        datacontenttype: "application/json",
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        data: { order: 1001, amount: 129.5, currency: "EUR" },
      },
      "application/cloudevents+json",
    );
    seeded.push(paidId as number);
    seeded.push(...(await post(origin, simple("orders/us/2001", "order.shipped", { carrier: "ups" }))));
    await post(origin, "address changed", "text/plain", {
      "ce-specversion": "1.0",
      "ce-id": "c-311-7",
      "ce-source": "crm",
      "ce-type": "customer.updated",
      "ce-subject": "customers/c-311",
    });
    await post(origin, new Uint8Array([0, 1, 2, 0xff, 0xfe, 0x41, 0x42]), "application/octet-stream", {
      "ce-specversion": "1.0",
      "ce-id": "t-17-1",
      "ce-source": "sensors",
      "ce-type": "reading.raw",
      "ce-subject": "sensors/t-17",
    });
    await post(
      origin,
      Array.from({ length: 1000 }, (_, i) => simple("metrics/cpu", "metric.sampled", { load: i % 100 })),
    );
    await post(origin, simple("metrics/cpu", "metric.sampled", { load: 7 }));

    if (browser === undefined) throw new Error("no browser");
    const context = await browser.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    // Console errors include CSP violations; Chromium also logs each 401, which are expected here
    // (the open-server probe, the wrong token, the retry after the restart).
    page.on("console", (message) => {
      if (message.type() === "error" && !message.text().includes("status of 401")) {
        pageErrors.push(message.text());
      }
    });

    // Sign in.
    await page.goto(`${origin}/ui`);
    expect(new URL(page.url()).pathname).toBe("/ui/");
    const tokenInput = page.getByLabel("Access token");
    await tokenInput.waitFor({ timeout: WAIT_MS });
    await screenshot(page, "01-sign-in");
    await tokenInput.fill("wrong");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("That token is not valid.").waitFor({ timeout: WAIT_MS });
    await tokenInput.fill(TOKEN);
    await tokenInput.press("Enter");
    await page.locator("#workspace").waitFor({ timeout: WAIT_MS });
    expect(await page.locator("#who").textContent()).toBe("Signed in as auth-token");

    // Subjects with counts (one page per visible subject; beyond it "1000+").
    const count = (subject: string) => page.locator(`#subject-list li[data-subject="${subject}"] .count`);
    await expect.poll(() => count("orders/eu/1001").textContent(), { timeout: WAIT_MS }).toBe("2");
    await expect.poll(() => count("metrics/cpu").textContent(), { timeout: WAIT_MS }).toBe("1000+");
    await expect.poll(() => count("sensors/t-17").textContent(), { timeout: WAIT_MS }).toBe("1");
    const subjects = () =>
      page.evaluate<string[]>(
        "[...document.querySelectorAll('#subject-list li')].map((li) => li.dataset.subject)",
      );
    expect(await subjects()).toEqual([
      "customers/c-311",
      "metrics/cpu",
      "orders/eu/1001",
      "orders/us/2001",
      "sensors/t-17",
    ]);
    await page.getByLabel("Filter subjects").fill("orders/");
    expect(await subjects()).toEqual(["orders/eu/1001", "orders/us/2001"]);
    await page.getByLabel("Filter subjects").fill("");
    await screenshot(page, "02-subjects");

    // A tail on a subject and everything below it, starting with the last 50 stored events.
    await recordStates(page);
    await page.getByLabel("Subject", { exact: true }).fill("orders");
    expect(await page.getByLabel("Include sub-subjects").isChecked()).toBe(true);
    await page.getByRole("button", { name: "Open tail" }).click();
    await waitForState(page, "live");
    await waitForRow(page, seeded.at(-1) as number);
    expect(await shownIds(page)).toEqual(seeded);

    const [first] = await post(
      origin,
      simple("orders/eu/1003", "order.created", { order: 1003, total: 310 }),
    );
    await waitForRow(page, first as number);
    expect(await shownIds(page)).toEqual([...seeded, first]);
    await screenshot(page, "03-tail-live");

    // Pause: nothing new is shown; resume: what came in meanwhile appears, once.
    await page.getByRole("button", { name: "Pause" }).click();
    await waitForState(page, "paused");
    const [second] = await post(origin, simple("orders/eu/1003", "order.paid", { order: 1003, amount: 310 }));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await shownIds(page)).toEqual([...seeded, first]);
    await screenshot(page, "04-paused");
    await page.getByRole("button", { name: "Resume" }).click();
    await waitForState(page, "live");
    await waitForRow(page, second as number);
    expect(await shownIds(page)).toEqual([...seeded, first, second]);
    await screenshot(page, "05-resumed");

    // The tail saw a subject the list lacks; Refresh lists it and counts it.
    await page.getByText("new subjects arrived").waitFor({ timeout: WAIT_MS });
    await page.getByRole("button", { name: "Refresh" }).click();
    await expect.poll(() => count("orders/eu/1003").textContent(), { timeout: WAIT_MS }).toBe("2");
    // The picture for the README (docs/console.png is copied from it by hand).
    await page.mouse.move(0, DESKTOP.height - 1);
    const bottom = await page.evaluate<number>(
      "document.querySelector('.workspace').getBoundingClientRect().bottom",
    );
    await page.screenshot({
      path: join(ARTIFACTS, "console-docs.png"),
      animations: "disabled",
      clip: { x: 0, y: 0, width: DESKTOP.width, height: Math.min(DESKTOP.height, Math.ceil(bottom)) },
    });

    // The detail, by keyboard: Enter on a row, JSON pretty-printed, Escape closes and refocuses the row.
    const firstRow = page.locator(`#event-list .event-row[data-id="${first}"]`);
    await firstRow.focus();
    await page.keyboard.press("Enter");
    await page.locator("#detail").waitFor({ state: "visible", timeout: WAIT_MS });
    expect(await page.locator("#detail-title").textContent()).toBe(`Event ${first}`);
    expect(await page.locator("#detail-encoding").textContent()).toBe("JSON");
    expect(await page.locator("#detail-data").textContent()).toBe(
      JSON.stringify({ order: 1003, total: 310 }, null, 2),
    );
    const curl = await page.getByLabel("Reproduce with curl").inputValue();
    expect(curl).toContain(`curl '${origin}/events'`);
    expect(curl).toContain('-H "authorization: Bearer $EVENTSDB_TOKEN"');
    await page.getByRole("button", { name: "Copy command" }).click();
    await expect
      .poll(() => page.locator("#copy-status").textContent(), { timeout: WAIT_MS })
      .toMatch(/Copied|selected/);
    await screenshot(page, "06-detail-json");
    await page.keyboard.press("Escape");
    await page.locator("#detail").waitFor({ state: "hidden", timeout: WAIT_MS });
    expect(await page.evaluate<string | undefined>("document.activeElement?.dataset?.id")).toBe(
      String(first),
    );

    // The structured CloudEvent's curl command, run by a shell, is the same event: the server
    // recognises (source, id) and answers the stored id.
    await page.locator(`#event-list .event-row[data-id="${paidId}"]`).click();
    await page.locator("#detail").waitFor({ state: "visible", timeout: WAIT_MS });
    expect(await page.locator("#detail-attributes").textContent()).toContain("traceparent");
    const paidCurl = await page.getByLabel("Reproduce with curl").inputValue();
    expect(paidCurl).toContain("application/cloudevents+json");
    const { stdout } = await run("bash", ["-c", `${paidCurl} --silent --show-error`], {
      env: { ...process.env, EVENTSDB_TOKEN: TOKEN },
    });
    expect(JSON.parse(stdout)).toEqual({ id: paidId });
    await screenshot(page, "06b-detail-cloudevent");
    await page.getByRole("button", { name: "Close" }).click();
    await page.locator("#detail").waitFor({ state: "hidden", timeout: WAIT_MS });

    // Phone width: one column, no horizontal scrolling, the detail fills the screen.
    await page.setViewportSize(PHONE);
    await expectNoHorizontalScroll(page, PHONE.width);
    await screenshot(page, "07-phone");
    await firstRow.click();
    await page.locator("#detail").waitFor({ state: "visible", timeout: WAIT_MS });
    await expectNoHorizontalScroll(page, PHONE.width);
    await screenshot(page, "08-phone-detail");
    await page.keyboard.press("Escape");
    await page.locator("#detail").waitFor({ state: "hidden", timeout: WAIT_MS });
    await page.setViewportSize(DESKTOP);

    // Restart on the same port and file: the stream drops (reconnecting). Sessions are kept in
    // the store, so the browser's own retry (with Last-Event-ID) is accepted by the new server and
    // the tail continues after the last id it showed, without a sign-in.
    await page.evaluate("window.states = []");
    await server.close();
    await waitForState(page, "reconnecting");
    await screenshot(page, "09-reconnecting");
    server = await restart();
    const [third] = await post(origin, simple("orders/us/2002", "order.created", { order: 2002, total: 18 }));
    await waitForState(page, "live");
    await waitForRow(page, third as number);
    expect(await shownIds(page)).toEqual([...seeded, first, second, third]);
    const states = await page.evaluate<string[]>("window.states");
    expect(states[0]).toBe("reconnecting");
    expect(states).not.toContain("signed-out");
    expect(states.at(-1)).toBe("live");
    await screenshot(page, "11-after-restart");

    // Signing out closes the tail and shows the sign-in form.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.locator("#sign-in").waitFor({ state: "visible", timeout: WAIT_MS });
    expect(await page.locator("#event-list > li").count()).toBe(0);
    expect(pageErrors).toEqual([]);
    await context.close();
  });

  it("needs no sign-in on an open server and reconnects by itself after a restart", {
    timeout: 60_000,
  }, async () => {
    const { origin, server: started, restart } = await serve("open.db", true);
    let server = started;
    const [before] = await post(origin, simple("jobs/1", "job.queued", { job: 1 }));

    if (browser === undefined) throw new Error("no browser");
    const context = await browser.newContext({ viewport: PHONE });
    const page = await context.newPage();
    await page.goto(`${origin}/ui/`);
    await page.locator("#workspace").waitFor({ timeout: WAIT_MS });
    expect(await page.locator("#sign-in").isHidden()).toBe(true);
    expect(await page.locator("#who").textContent()).toBe("Open server · no sign-in needed");
    expect(await page.getByRole("button", { name: "Sign out" }).isHidden()).toBe(true);

    // New events only, every subject.
    await recordStates(page);
    await page.getByLabel("Start with").selectOption("0");
    await page.getByRole("button", { name: "Open tail" }).click();
    await waitForState(page, "live");
    const [a] = await post(origin, simple("jobs/2", "job.queued", { job: 2 }));
    await waitForRow(page, a as number);
    expect(await shownIds(page)).toEqual([a]);
    expect(a).toBeGreaterThan(before as number);

    await page.evaluate("window.states = []");
    await server.close();
    await waitForState(page, "reconnecting");
    server = await restart();
    const [b] = await post(origin, simple("jobs/3", "job.queued", { job: 3 }));
    await waitForRow(page, b as number);
    await waitForState(page, "live");
    expect(await shownIds(page)).toEqual([a, b]);
    expect(await page.evaluate<string[]>("window.states")).toEqual(["reconnecting", "live"]);
    await expectNoHorizontalScroll(page, PHONE.width);
    await screenshot(page, "12-open-server-phone");

    // Text and binary data: UTF-8 as it is, anything else as a hex dump.
    const ce = (id: string, type: string) => ({
      "ce-specversion": "1.0",
      "ce-id": id,
      "ce-source": "devices",
      "ce-type": type,
      "ce-subject": "devices/d-1",
    });
    const [text] = await post(origin, "temperature high: 71 °C", "text/plain", ce("d-1-1", "alarm.raised"));
    const [binary] = await post(
      origin,
      new Uint8Array([0, 1, 2, 0xff, 0xfe, 0x41, 0x42]),
      "application/octet-stream",
      ce("d-1-2", "reading.raw"),
    );
    await waitForRow(page, binary as number);
    await page.locator(`#event-list .event-row[data-id="${text}"]`).click();
    expect(await page.locator("#detail-encoding").textContent()).toBe("UTF-8 text");
    expect(await page.locator("#detail-data").textContent()).toBe("temperature high: 71 °C");
    await page.keyboard.press("Escape");
    await page.locator(`#event-list .event-row[data-id="${binary}"]`).click();
    expect(await page.locator("#detail-encoding").textContent()).toBe("binary · hex");
    expect(await page.locator("#detail-data").textContent()).toBe(
      `00000000  ${"00 01 02 ff fe 41 42".padEnd(47)}  |.....AB|`,
    );
    await screenshot(page, "13-phone-detail-binary");
    await page.keyboard.press("Escape");
    await context.close();
  });

  // Issue 12, item 13: on a phone the tail started below the first screen and a hex dump ran past
  // the right edge of the detail view.
  it("on a 390 × 844 phone shows the live tail on the first screen and fits a hex dump to the width", {
    timeout: 60_000,
  }, async () => {
    const { origin } = await serve("phone.db");
    // Enough subjects to fill the subject list, then a binary event of several dump rows.
    await post(
      origin,
      Array.from({ length: 30 }, (_, i) => simple(`orders/eu/${1000 + i}`, "order.created", { order: i })),
    );
    const [binary] = await post(
      origin,
      Uint8Array.from({ length: 200 }, (_, i) => (i * 37) % 256),
      "application/octet-stream",
      {
        "ce-specversion": "1.0",
        "ce-id": "raw-1",
        "ce-source": "sensors",
        "ce-type": "reading.raw",
        "ce-subject": "sensors/t-99",
      },
    );

    if (browser === undefined) throw new Error("no browser");
    const context = await browser.newContext({ viewport: PHONE });
    const page = await context.newPage();
    await page.goto(`${origin}/ui/`);
    const tokenInput = page.getByLabel("Access token");
    await tokenInput.fill(TOKEN);
    await tokenInput.press("Enter");
    await page.locator("#workspace").waitFor({ timeout: WAIT_MS });
    await expect.poll(() => page.locator("#subject-list li").count(), { timeout: WAIT_MS }).toBe(31);
    await page.getByRole("button", { name: "Open tail" }).click();
    await waitForState(page, "live");
    await waitForRow(page, binary as number);

    // At the top of the page: the tail panel, its form and the newest two events are on screen.
    expect(await page.evaluate<number>("window.scrollY")).toBe(0);
    const tail = await boxOf(page, ".panel.tail");
    expect(tail.top).toBeGreaterThanOrEqual(0);
    expect(tail.top).toBeLessThan(PHONE.height);
    const list = await boxOf(page, "#event-list");
    expect(list.top).toBeLessThan(PHONE.height);
    const second = await boxOf(page, "#event-list > li:nth-child(2)");
    expect(second.bottom).toBeLessThanOrEqual(PHONE.height);
    await expectNothingPastTheRightEdge(page, PHONE.width);
    await screenshot(page, "14-phone-first-screen");

    // The binary event's hex dump: inside the screen, and nothing hidden to its right.
    await page.locator(`#event-list .event-row[data-id="${binary}"]`).click();
    await page.locator("#detail").waitFor({ state: "visible", timeout: WAIT_MS });
    expect(await page.locator("#detail-encoding").textContent()).toBe("binary · hex");
    const dump = page.locator("#detail-data");
    expect(await dump.textContent()).toContain("000000c0  ");
    await expectNothingPastTheRightEdge(page, PHONE.width);
    const fits = await dump.evaluate((pre) => ({ scroll: pre.scrollWidth, client: pre.clientWidth }));
    expect(fits.scroll).toBeLessThanOrEqual(fits.client);
    await screenshot(page, "15-phone-hex-dump");
    await page.keyboard.press("Escape");
    await context.close();
  });
});
