import fs from "node:fs";

let cached: string | undefined;

/**
 * This package's version, read from package.json at run time (one level above src/ and dist/):
 * nothing imports package.json, so no bundle carries it.
 */
export function version(): string {
  cached ??= (
    JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
  ).version;
  return cached;
}
