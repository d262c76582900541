import fs from "node:fs";

let cached: string | undefined;

/**
 * This package's version, read from its package.json at run time: nothing imports package.json,
 * so no build carries a copy. The file is the nearest one above this module: one level up from
 * src/ and dist/, two from the bundled binary's dist/bin/.
 */
export function version(): string {
  if (cached !== undefined) return cached;
  for (const up of ["../package.json", "../../package.json"]) {
    let text: string;
    try {
      text = fs.readFileSync(new URL(up, import.meta.url), "utf8");
    } catch {
      continue;
    }
    const manifest = JSON.parse(text) as { name?: string; version: string };
    if (manifest.name === "eventsdb") {
      cached = manifest.version;
      return cached;
    }
  }
  throw new Error("eventsdb's package.json was not found above its code");
}
