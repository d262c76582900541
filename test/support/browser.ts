import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

/** Debian's Chromium; .ci/run installs the package when it is missing. */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * Flags for a headless Chromium on this machine: no sandbox (root), no GPU, and nothing that
 * reaches for the network beyond the page (background networking, updates, sync, QUIC).
 */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** Launches Debian's Chromium through playwright-core; fails (never skips) when it is missing. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} not found: this test needs the Debian package chromium (apt-get install -y chromium; .ci/run installs it)`,
    );
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}
