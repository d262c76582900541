import fs from "node:fs";
import path from "node:path";
import { tokenDigest } from "../../src/auth/tokens.js";

/** A token of an auth file, by its plain value (the file keeps its SHA-256). */
export interface TestToken {
  readonly name: string;
  readonly token: string;
  readonly read: readonly string[];
  readonly write: readonly string[];
}

/** Writes `dir`/tokens.json (the --auth-file format) with these tokens; returns its path. */
export function writeAuthFile(dir: string, tokens: readonly TestToken[]): string {
  const file = path.join(dir, "tokens.json");
  fs.writeFileSync(
    file,
    JSON.stringify({
      tokens: tokens.map(({ name, token, read, write }) => ({
        name,
        sha256: tokenDigest(token).toString("hex"),
        read,
        write,
      })),
    }),
  );
  return file;
}
