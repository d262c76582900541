import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

/**
 * The path of a system tool a test runs, or an error naming its Debian package (.ci/run installs
 * it; tests never do). Also looks in /usr/sbin and /sbin, which are not on every user's PATH.
 */
export function systemTool(name: string, debianPackage: string): string {
  try {
    return execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
  } catch {
    const found = [`/usr/sbin/${name}`, `/sbin/${name}`].find((candidate) => existsSync(candidate));
    if (found !== undefined) return found;
    throw new Error(
      `${name} not found: this test needs the Debian package ${debianPackage} (apt-get install -y ${debianPackage}; .ci/run installs it)`,
    );
  }
}
