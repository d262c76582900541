import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const root = path.resolve(import.meta.dirname, "..");
const out = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-gen-"));

function files(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

describe("generated protobuf code", () => {
  it("is what `npm run generate` makes from proto/ (run it and commit src/gen)", () => {
    execFileSync(path.join(root, "node_modules", ".bin", "buf"), ["generate", "--output", out], {
      cwd: root,
      stdio: "pipe",
    });
    const fresh = path.join(out, "src", "gen");
    const committed = path.join(root, "src", "gen");
    expect(files(committed)).toEqual(files(fresh));
    for (const file of files(fresh)) {
      expect(fs.readFileSync(path.join(committed, file), "utf8"), file).toBe(
        fs.readFileSync(path.join(fresh, file), "utf8"),
      );
    }
  });

  it("passes buf lint", () => {
    const lint = () =>
      execFileSync(path.join(root, "node_modules", ".bin", "buf"), ["lint"], { cwd: root, stdio: "pipe" });
    expect(lint).not.toThrow();
  });
});
