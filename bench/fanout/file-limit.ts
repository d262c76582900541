import { execFile, spawn } from "node:child_process";
import { FD_HEADROOM, type Options, RAISED_ENV } from "./settings.js";

// File descriptors: each side holds one per stream.

interface FileLimit {
  soft: number;
  hard: number;
  needed: number;
}

/**
 * Each side (bench client, server child) holds one descriptor per stream. When the soft limit is
 * too low but the hard limit allows, re-runs this suite under `sh -c 'ulimit -n …'` (the server
 * child inherits the raised limit) and returns "rerun"; when even the hard limit is too low, fails.
 */
export async function ensureFileLimit(
  options: Options,
  args: readonly string[],
): Promise<FileLimit | "rerun"> {
  const output = await execText("sh", ["-c", "ulimit -Sn; ulimit -Hn"]);
  const [soft, hard] = output
    .trim()
    .split("\n")
    .map((value) => (value.trim() === "unlimited" ? Number.POSITIVE_INFINITY : Number(value.trim())));
  const limit = {
    soft: soft ?? 0,
    hard: hard ?? 0,
    needed: Math.max(options.idle, options.clients) + FD_HEADROOM,
  };
  if (limit.soft >= limit.needed) return limit;
  if (process.env[RAISED_ENV] === "1" || limit.hard < limit.needed) {
    throw new Error(
      `${limit.needed} open files needed per process, ulimit -n is ${limit.soft} (hard ${limit.hard}); ` +
        "raise the hard limit (e.g. --ulimit nofile=65536 for a container) or pass a smaller --idle",
    );
  }
  const raised = Math.min(limit.hard, 65_536);
  process.stderr.write(`bench: ulimit -n ${limit.soft} is too low; re-running with ulimit -n ${raised}\n`);
  const script = process.argv[1];
  if (script === undefined) throw new Error("cannot re-run: process.argv[1] is missing");
  const child = spawn(
    "sh",
    [
      "-c",
      `ulimit -n ${raised} && exec "$0" "$@"`,
      process.execPath,
      ...process.execArgv,
      script,
      "fanout",
      ...args,
    ],
    { stdio: "inherit", env: { ...process.env, [RAISED_ENV]: "1" } },
  );
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  try {
    const code = await new Promise<number>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (exitCode, signal) => resolve(exitCode ?? (signal === "SIGINT" ? 130 : 143)));
    });
    if (code !== 0) throw new Error(`fanout under ulimit -n ${raised} failed (exit code ${code})`);
  } finally {
    process.off("SIGINT", forward);
    process.off("SIGTERM", forward);
  }
  return "rerun";
}

export function execText(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, (error, stdout) => (error === null ? resolve(stdout) : reject(error)));
  });
}
