import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { type Agent, request } from "node:http";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { RowDataPacket } from "mysql2/promise";
import { createConnection } from "mysql2/promise";
import { startMariaDb } from "../test/support/mariadb.js";
import { freePort } from "../test/support/ports.js";
import { type ServerProcess, startServerProcess } from "../test/support/process.js";

/** The repository root (bench/..). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `--duration S` among the arguments after the suite name, else the fallback (seconds). */
export function parseDuration(args: readonly string[], fallback: number): number {
  const at = args.indexOf("--duration");
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error("--duration needs a positive number of seconds");
  return value;
}

/** The text after `name`, when given. */
export function textOption(args: readonly string[], name: string): string | undefined {
  const at = args.indexOf(name);
  if (at === -1) return undefined;
  const text = args[at + 1];
  if (text === undefined || text.startsWith("--")) throw new Error(`${name} needs a value`);
  return text;
}

/** `--name N` among the arguments: a whole number >= min; the fallback when the flag is absent. */
export function parseCountOption(args: readonly string[], name: string, fallback: number, min = 0): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const text = args[at + 1];
  if (
    text === undefined ||
    !/^\d+$/.test(text) ||
    !Number.isSafeInteger(Number(text)) ||
    Number(text) < min
  ) {
    throw new Error(`${name} needs a whole number >= ${min}`);
  }
  return Number(text);
}

/**
 * Builds `root` as `npm run build` does: src/ to dist/ with the build tsconfig (incremental, so
 * cheap when nothing changed), then the bundled binary dist/bin/ where the revision has one
 * (scripts/bundle.mjs; builds before it have only dist/cli.js).
 */
export async function buildDist(root: string = ROOT): Promise<void> {
  const run = (args: string[]) =>
    new Promise<void>((resolve, reject) => {
      execFile(
        process.execPath,
        args,
        { cwd: root, maxBuffer: 16 * 1024 * 1024 },
        (error, stdout, stderr) => {
          if (error === null) resolve();
          else reject(new Error(`build failed (${args.join(" ")}):\n${stdout}${stderr}`));
        },
      );
    });
  await run([path.join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.build.json"]);
  if (existsSync(path.join(root, "scripts", "bundle.mjs"))) await run([path.join("scripts", "bundle.mjs")]);
}

/** The command line a build at `root` runs: its bundled binary, or dist/cli.js before there was one. */
export function builtCli(root: string): string {
  const bundled = path.join(root, "dist", "bin", "cli.js");
  return existsSync(bundled) ? bundled : path.join(root, "dist", "cli.js");
}

/** Cleanup steps run once, last registered first, on normal end, on error and on SIGINT/SIGTERM. */
export class Cleanup {
  readonly #steps: { name: string; run: () => Promise<unknown> }[] = [];
  #running: Promise<void> | undefined;

  add(name: string, run: () => Promise<unknown>): void {
    this.#steps.push({ name, run });
  }

  run(): Promise<void> {
    this.#running ??= (async () => {
      for (const step of this.#steps.reverse()) {
        try {
          await step.run();
        } catch (error) {
          process.stderr.write(`bench: cleanup "${step.name}" failed: ${String(error)}\n`);
        }
      }
    })();
    return this.#running;
  }

  /** On SIGINT or SIGTERM: clean up, then exit 130 / 143. Returns a function removing the handlers. */
  onSignals(): () => void {
    const handler = (signal: NodeJS.Signals) => {
      process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
      void this.run().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
    };
    process.on("SIGINT", handler);
    process.on("SIGTERM", handler);
    return () => {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    };
  }
}

/**
 * The server child's environment: DATABASE_URL, LOG_LEVEL=warn, and the server options of
 * BENCH_SERVER_ENV. (Node arguments for diagnosis: BENCH_SERVER_NODE_ARGS, see startServerChild.)
 */
export function serverEnv(databaseUrl: string): Record<string, string> {
  const env: Record<string, string> = { DATABASE_URL: databaseUrl, LOG_LEVEL: "warn" };
  // Server options for an experiment pass through: BENCH_SERVER_ENV="STREAM_FLUSH_MS=50 …".
  for (const pair of (process.env.BENCH_SERVER_ENV ?? "").split(/\s+/).filter(Boolean)) {
    const [name, ...value] = pair.split("=");
    if (name !== undefined && name !== "") env[name] = value.join("=");
  }
  return env;
}

/**
 * Extra node arguments, for diagnosis: BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR" for the
 * server, BENCH_LOAD_NODE_ARGS for load processes (--cpu-prof is not allowed in NODE_OPTIONS).
 */
export function nodeArgs(variable: "BENCH_SERVER_NODE_ARGS" | "BENCH_LOAD_NODE_ARGS"): string[] {
  return (process.env[variable] ?? "").split(/\s+/).filter((arg) => arg !== "");
}

/**
 * A bench's server child (`node dist/bin/cli.js serve`, through the one spawner of
 * test/support/process.ts): on free ports, from the repository root, with BENCH_SERVER_NODE_ARGS,
 * its lines echoed to stderr as `[server] …`; ready when GET /readyz answers 200, since a bench
 * server logs at warn and so prints no start line.
 */
export async function startServerChild(
  env: Record<string, string>,
  extraArgs: readonly string[] = [],
  cli?: string,
): Promise<ServerProcess> {
  const rest = await freePort();
  let grpc = await freePort();
  while (grpc === rest) grpc = await freePort();
  return startServerProcess({
    env,
    args: extraArgs,
    cwd: ROOT,
    nodeArgs: nodeArgs("BENCH_SERVER_NODE_ARGS"),
    ports: { rest, grpc },
    onLine: (line) => process.stderr.write(`[server] ${line}\n`),
    ...(cli === undefined ? {} : { cli }),
  });
}

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  totalMemoryBytes: number;
  platform: string;
  release: string;
  arch: string;
  node: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? "unknown",
    totalMemoryBytes: os.totalmem(),
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    node: process.version,
  };
}

/** Plain-text table: first column left-aligned, the others right-aligned. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(header), rule, ...rows.map(line)].join("\n");
}

/** 12345.6 → "12,346". */
export function formatRate(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

/** Writes bench/results/<suite>-<ISO timestamp>.json (colons made dashes for portable file names). */
export async function writeResults(suite: string, data: unknown): Promise<string> {
  const dir = path.join(ROOT, "bench", "results");
  await mkdir(dir, { recursive: true });
  const stamp = new Date().toISOString().replaceAll(":", "-");
  const file = path.join(dir, `${suite}-${stamp}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}

/** Percentile (0–100) of an unsorted list of numbers, nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

// ---- /proc readings -------------------------------------------------------------------------------

/** The kernel's clock ticks per second (getconf CLK_TCK; 100 when unknown). */
export function clockTicksPerSecond(): Promise<number> {
  return new Promise((resolve) => {
    execFile("getconf", ["CLK_TCK"], (error, stdout) => {
      const ticks = Number(stdout.trim());
      resolve(error === null && Number.isFinite(ticks) && ticks > 0 ? ticks : 100);
    });
  });
}

/** utime + stime of a process in seconds (all its threads). */
export async function cpuSeconds(pid: number, ticks: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

/** Busy and total jiffies of all CPUs together (the first line of /proc/stat). */
async function systemJiffies(): Promise<{ busy: number; total: number }> {
  const line = (await readFile("/proc/stat", "utf8")).split("\n", 1)[0] ?? "";
  // cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is within user)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/**
 * CPU time of several processes over an interval, as a fraction of one core; `bench` is this
 * process, `system` the whole machine (in cores), so that what else ran shows up.
 */
export class CpuMeter {
  readonly #pids: Record<string, number>;
  readonly #ticks: number;
  #start: Record<string, number> = {};
  #bench = process.cpuUsage();
  #system = { busy: 0, total: 0 };
  #wall = 0;

  constructor(pids: Record<string, number>, ticks: number) {
    this.#pids = pids;
    this.#ticks = ticks;
  }

  async start(): Promise<void> {
    for (const [name, pid] of Object.entries(this.#pids))
      this.#start[name] = await cpuSeconds(pid, this.#ticks);
    this.#bench = process.cpuUsage();
    this.#system = await systemJiffies();
    this.#wall = performance.now();
  }

  async stop(): Promise<Record<string, number>> {
    const wall = (performance.now() - this.#wall) / 1000;
    const result: Record<string, number> = {};
    for (const [name, pid] of Object.entries(this.#pids)) {
      result[name] = ((await cpuSeconds(pid, this.#ticks)) - (this.#start[name] ?? 0)) / wall;
    }
    const bench = process.cpuUsage(this.#bench);
    result.bench = (bench.user + bench.system) / 1e6 / wall;
    const system = await systemJiffies();
    const total = system.total - this.#system.total;
    result.system = total > 0 ? ((system.busy - this.#system.busy) / total) * os.cpus().length : 0;
    return result;
  }
}

/**
 * Fails on an argument a suite does not know: `options` take a value (checked by the suite's
 * parsers), `switches` do not.
 */
export function checkArguments(
  suite: string,
  args: readonly string[],
  options: readonly string[],
  switches: readonly string[],
): void {
  for (let i = 0; i < args.length; i++) {
    const flag = args[i] as string;
    if (switches.includes(flag)) continue;
    if (!options.includes(flag)) {
      throw new Error(
        `${suite}: unknown argument ${JSON.stringify(flag)}; options: ${options.join(" N, ")} N, ${switches.join(", ")}`,
      );
    }
    i++; // its value, checked by the suite
  }
}

/**
 * What every suite starts with: dist/ built, a throwaway MariaDB, an admin connection to it.
 * `mariadbArgs` go to mariadbd after the defaults (e.g. a larger buffer pool, or `--datadir` of a
 * kept data directory, which then wins over the fresh one).
 */
export async function startBenchDatabase(cleanup: Cleanup, database?: string, mariadbArgs: string[] = []) {
  process.stderr.write("bench: building dist/ (tsc -p tsconfig.build.json)\n");
  await buildDist();
  process.stderr.write("bench: starting MariaDB\n");
  const mariadb = await startMariaDb({ extraArgs: mariadbArgs });
  cleanup.add("stop MariaDB", () => mariadb.stop());
  const admin = await createConnection({
    host: "127.0.0.1",
    port: mariadb.port,
    user: "root",
    ...(database === undefined ? {} : { database }),
  });
  cleanup.add("close MySQL connection", () => admin.end());
  const [rows] = await admin.query<RowDataPacket[]>("SELECT VERSION() AS version");
  return { mariadb, admin, mariadbVersion: String(rows[0]?.version ?? "unknown") };
}

// ---- /proc readings -------------------------------------------------------------------------------

/** How often RssSampler reads VmRSS. */
const RSS_SAMPLE_MS = 100;

/** A process's VmRSS in KiB. */
export async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (match === null) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

/** Samples a process's VmRSS every RSS_SAMPLE_MS and keeps the peak. */
export class RssSampler {
  readonly #pid: number;
  #timer: NodeJS.Timeout | undefined;
  #peakKb = 0;
  #samples = 0;

  constructor(pid: number) {
    this.#pid = pid;
  }

  start(): void {
    const sample = async () => {
      try {
        this.#peakKb = Math.max(this.#peakKb, await rssKb(this.#pid));
        this.#samples++;
      } catch {
        // the process may be gone; the caller notices
      }
    };
    void sample();
    this.#timer = setInterval(() => void sample(), RSS_SAMPLE_MS);
  }

  async stop(): Promise<{ peakKb: number; samples: number }> {
    clearInterval(this.#timer);
    try {
      this.#peakKb = Math.max(this.#peakKb, await rssKb(this.#pid));
      this.#samples++;
    } catch {
      // the process is gone (it may have run out of memory): the peak so far stands
    }
    return { peakKb: this.#peakKb, samples: this.#samples };
  }
}

/**
 * Builds `revision` of this repository in a detached worktree at `dir` (removed by `cleanup`),
 * sharing this checkout's node_modules, and returns its command line (builtCli): the baseline a suite compares
 * this checkout with, in the same run.
 */
export async function checkoutBuild(revision: string, dir: string, cleanup: Cleanup): Promise<string> {
  process.stderr.write(`bench: building ${revision.slice(0, 12)} in ${dir}\n`);
  await promisify(execFile)("git", ["worktree", "add", "--detach", dir, revision], { cwd: ROOT });
  cleanup.add("remove the baseline worktree", () =>
    promisify(execFile)("git", ["worktree", "remove", "--force", dir], { cwd: ROOT }),
  );
  await symlink(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  await buildDist(dir);
  return builtCli(dir);
}

/**
 * POST /events of one body (JSON unless `contentType` says otherwise) on `agent` (keep-alive),
 * bounded by 30 s; the status and the answer's text.
 */
export function postEvent(
  url: URL,
  agent: Agent,
  body: string | Buffer,
  contentType = "application/json",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: "/events",
        method: "POST",
        agent,
        headers: { "content-type": contentType, "content-length": Buffer.byteLength(body) },
        timeout: 30_000,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.once("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.once("error", reject);
      },
    );
    req.once("timeout", () => req.destroy(new Error("POST timed out after 30 s")));
    req.once("error", reject);
    req.end(body);
  });
}

/** GET `path` on `agent` (keep-alive), bounded by 30 s: the status and the body's byte count. */
export function getBody(
  url: URL,
  agent: Agent,
  pathAndQuery: string,
): Promise<{ status: number; bytes: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: pathAndQuery, method: "GET", agent, timeout: 30_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.once("end", () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, bytes: body.length, body: body.toString("utf8") });
        });
        res.once("error", reject);
      },
    );
    req.once("timeout", () => req.destroy(new Error(`GET ${pathAndQuery} timed out after 30 s`)));
    req.once("error", reject);
    req.end();
  });
}
