import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { StoredEvent } from "../../src/client/lib/types.js";

/**
 * The one place that starts eventsdb child processes, for tests and benches alike: a server
 * (`startServerProcess`) or a command run to its end (`runCli`).
 */

/**
 * The built command line (`npm run build` first): the bundled binary that `npm start` and the
 * package's `eventsdb` run (scripts/bundle.mjs), so the tests try what users run.
 */
export const CLI = fileURLToPath(new URL("../../dist/bin/cli.js", import.meta.url));

/** Log text kept per process: enough for the start line and any error, bounded under load. */
const MAX_LOG_CHARS = 1_000_000;
/** How long a command of `runCli` may run. */
const CLI_TIMEOUT_MS = 20_000;
/** How long `stop()` waits after SIGTERM before SIGKILL. */
const STOP_TIMEOUT_MS = 20_000;

/** The environment of a fresh shell: no store or auth settings inherited from the developer's. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith("MYSQL_") || key === "DATABASE_URL" || key === "AUTH_TOKEN" || key === "LOG_LEVEL") {
      delete env[key];
    }
  }
  return { ...env, ...extra };
}

export interface CliRun {
  readonly code: number | null;
  readonly stdout: Buffer;
  /** stdout as UTF-8 text. */
  readonly out: string;
  readonly stderr: string;
}

export interface CliOptions {
  /** The whole environment (e.g. `cleanEnv(…)`); `cleanEnv()` by default. */
  readonly env?: NodeJS.ProcessEnv;
  /** A new temporary directory by default. */
  readonly cwd?: string;
  /** Written to stdin, which is then closed (always closed: a command must not wait on it). */
  readonly input?: string | Buffer;
}

/** Runs `node dist/bin/cli.js …args` to its end (SIGKILL after CLI_TIMEOUT_MS) and collects its output. */
export function runCli(args: readonly string[], options: CliOptions = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: options.env ?? cleanEnv(),
      cwd: options.cwd ?? tempDir("eventsdb-cli-"),
    });
    const stdout: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8");
    });
    child.stdin.on("error", () => {}); // the command may exit before reading its stdin
    child.stdin.end(options.input ?? "");
    const timer = setTimeout(() => child.kill("SIGKILL"), CLI_TIMEOUT_MS);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      const bytes = Buffer.concat(stdout);
      resolve({ code, stdout: bytes, out: bytes.toString("utf8"), stderr });
    });
  });
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** performance.now() when the exit was seen. */
  readonly at: number;
}

/** A server CLI child process with its bound ports. */
export interface ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly restPort: number;
  readonly grpcPort: number;
  /** `http://127.0.0.1:<restPort>` */
  readonly url: string;
  /** Resolves when the process has exited (and been reaped). */
  readonly exited: Promise<Exit>;
  /** How it exited ("exit code 1", "SIGKILL"), or undefined while it runs. */
  exitStatus(): string | undefined;
  /** stdout + stderr so far. */
  log(): string;
  /** The non-empty lines of log(). */
  logLines(): string[];
  /** Sends a signal to this process (by its pid); false when it is gone already. */
  signal(signal: NodeJS.Signals): boolean;
  /** SIGKILL unless it has exited already; resolves once it has. */
  kill(): Promise<Exit>;
  /** SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT_MS; resolves once it has exited. */
  stop(): Promise<Exit>;
}

export interface StartOptions {
  /** `DATABASE_URL`; none = the CLI's default SQLite file under `cwd`. */
  readonly databaseUrl?: string;
  /** The command before the flags: `serve` by default, `[]` for the CLI's default command. */
  readonly command?: readonly string[];
  /** Extra CLI arguments after the port and host flags. */
  readonly args?: readonly string[];
  /** Extra environment variables, over `cleanEnv()` and LOG_LEVEL=info. */
  readonly env?: Record<string, string>;
  /** A new temporary directory by default. */
  readonly cwd?: string;
  readonly startTimeoutMs?: number;
  /** Node arguments before the script, e.g. `--cpu-prof` for a bench. */
  readonly nodeArgs?: readonly string[];
  /**
   * Ports to listen on. Then the server is ready when GET /readyz answers 200, whatever its log
   * level (a bench runs at warn). Without them it listens on port 0 and is ready once its start
   * line is out, which is logged at info: LOG_LEVEL must then be info or lower.
   */
  readonly ports?: { readonly rest: number; readonly grpc: number };
  /** Called with every line the server writes (it is kept in log() either way). */
  readonly onLine?: (line: string) => void;
  /** The CLI script to run: this checkout's dist/bin/cli.js by default (a bench may run another build). */
  readonly cli?: string;
}

const running = new Set<ServerProcess>();

/** True while a process with this pid exists (signal 0 only checks). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const START_LINE = /eventsdb listening on ports (\d+) \(REST\) and (\d+) \(gRPC\)/;
const INFO_LEVELS = new Set(["trace", "debug", "info"]);

/** Spawns `node dist/bin/cli.js serve` on 127.0.0.1 and resolves once it is ready (see StartOptions.ports). */
export async function startServerProcess(options: StartOptions = {}): Promise<ServerProcess> {
  const env = cleanEnv({
    LOG_LEVEL: "info",
    ...(options.databaseUrl === undefined ? {} : { DATABASE_URL: options.databaseUrl }),
    ...options.env,
  });
  if (options.ports === undefined && !INFO_LEVELS.has(env.LOG_LEVEL ?? "")) {
    throw new Error(`LOG_LEVEL=${env.LOG_LEVEL} hides the start line: give startServerProcess fixed ports`);
  }
  const ports = options.ports ?? { rest: 0, grpc: 0 };
  const args = [
    ...(options.nodeArgs ?? []),
    options.cli ?? CLI,
    ...(options.command ?? ["serve"]),
    "--rest-port",
    String(ports.rest),
    "--grpc-port",
    String(ports.grpc),
    "--host",
    "127.0.0.1",
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    cwd: options.cwd ?? tempDir("eventsdb-proc-"),
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const pid = child.pid;
  if (pid === undefined) {
    // spawn reports why with an 'error' event on the next tick.
    const why = await new Promise<Error>((resolve) => child.once("error", resolve));
    throw new Error(`could not spawn the server CLI: ${why.message}`);
  }
  let spawnError: Error | undefined;
  child.once("error", (error) => {
    spawnError = error;
  });
  let log = "";
  for (const stream of [child.stdout, child.stderr]) {
    let partial = "";
    stream.on("data", (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      if (log.length < MAX_LOG_CHARS) log += text;
      if (options.onLine === undefined) return;
      const lines = (partial + text).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) if (line.trim() !== "") options.onLine(line);
    });
  }
  let exit: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = { code, signal, at: performance.now() };
      running.delete(server);
      resolve(exit);
    });
  });
  const signal = (name: NodeJS.Signals): boolean => {
    if (exit !== undefined) return false;
    try {
      process.kill(pid, name);
      return true;
    } catch {
      return false;
    }
  };
  let stopping: Promise<Exit> | undefined;
  const server: ServerProcess = {
    child,
    pid,
    restPort: 0,
    grpcPort: 0,
    url: "",
    exited,
    exitStatus: () => (exit === undefined ? undefined : (exit.signal ?? `exit code ${exit.code}`)),
    log: () => log,
    logLines: () => log.split("\n").filter((line) => line.trim() !== ""),
    signal,
    kill() {
      signal("SIGKILL");
      return exited;
    },
    stop() {
      stopping ??= (async () => {
        if (!signal("SIGTERM")) return exited;
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<"late">((resolve) => {
          timer = setTimeout(() => resolve("late"), STOP_TIMEOUT_MS);
        });
        if ((await Promise.race([exited, late]).finally(() => clearTimeout(timer))) === "late") {
          process.stderr.write(
            `server pid ${pid} ignored SIGTERM for ${STOP_TIMEOUT_MS / 1000} s; SIGKILL\n`,
          );
          signal("SIGKILL");
        }
        return exited;
      })();
      return stopping;
    },
  };
  running.add(server);

  const timeoutMs = options.startTimeoutMs ?? 30_000;
  const ready =
    options.ports === undefined
      ? await startLine(child, () => log, timeoutMs)
      : await readyz(options.ports, () => spawnError ?? server.exitStatus(), timeoutMs);
  if (ready instanceof Error) {
    await server.kill();
    throw new Error(`${ready.message}:\n${log}`);
  }
  const [restPort, grpcPort] = ready;
  return Object.assign(server, { restPort, grpcPort, url: `http://127.0.0.1:${restPort}` });
}

/** The ports of the start line, or why there is none within `timeoutMs`. */
function startLine(
  child: ChildProcess,
  log: () => string,
  timeoutMs: number,
): Promise<[number, number] | Error> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(new Error(`no start line within ${timeoutMs} ms`)), timeoutMs);
    const onData = () => {
      const m = START_LINE.exec(log());
      if (m) done([Number(m[1]), Number(m[2])]);
    };
    const onExit = (code: number | null, sig: NodeJS.Signals | null) =>
      done(new Error(`the server exited before listening (code ${code}, signal ${sig})`));
    const done = (result: [number, number] | Error) => {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.off("exit", onExit);
      resolve(result);
    };
    child.stdout?.on("data", onData);
    child.once("exit", onExit);
  });
}

/** Polls GET /readyz until 200; an Error when the process is gone or `timeoutMs` passed. */
async function readyz(
  ports: { readonly rest: number; readonly grpc: number },
  gone: () => Error | string | undefined,
  timeoutMs: number,
): Promise<[number, number] | Error> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const why = gone();
    if (why !== undefined) return new Error(`the server exited before it was ready (${String(why)})`);
    try {
      const response = await fetch(`http://127.0.0.1:${ports.rest}/readyz`, {
        signal: AbortSignal.timeout(2_000),
      });
      await response.arrayBuffer();
      if (response.status === 200) return [ports.rest, ports.grpc];
    } catch {
      // not listening yet
    }
    if (Date.now() >= deadline) return new Error(`GET /readyz did not answer 200 within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** SIGKILLs every server process still running (afterEach) and waits for them to exit. */
export async function killServerProcesses(): Promise<void> {
  await Promise.all([...running].map((server) => server.kill()));
}

const dirs: string[] = [];

/** A new temporary directory, removed by removeTempDirs(). */
export function tempDir(prefix = "eventsdb-test-"): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Rejects with `what` when `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** What one POST /events came to. */
export interface PostOutcome {
  readonly subject: string;
  readonly data: string;
  /** performance.now() when the request was started and when it settled. */
  readonly startedAt: number;
  readonly endedAt: number;
  /** HTTP status, or undefined when there was no response. */
  readonly status?: number;
  /** The id of a 200 `{"id":N}`. */
  readonly id?: number;
  /** No response: the error's code (ECONNRESET, ECONNREFUSED, UND_ERR_SOCKET…) or message. */
  readonly error?: string;
  /** No response within the request timeout: the request hung. */
  readonly hung?: boolean;
}

export interface PostLoadOptions {
  /** Concurrent request loops (each one request at a time, keep-alive). */
  readonly loops: number;
  /** Subjects are `<prefix>/<loop>/<n>`, all distinct. */
  readonly prefix: string;
  /** Bytes of random data per event (sent base64-encoded). */
  readonly dataBytes?: number;
  /** A request without a response after this long counts as hung (and is aborted). */
  readonly requestTimeoutMs?: number;
  /** Pause after a failed request, so a refused connection does not spin. */
  readonly pauseAfterErrorMs?: number;
}

/**
 * POST /events (simple JSON) from concurrent loops until stop(), recording every outcome: the
 * acknowledged ids with their data, statuses, connection errors and hangs.
 */
export class PostLoad {
  readonly outcomes: PostOutcome[] = [];
  readonly acks: Array<{ readonly id: number; readonly subject: string; readonly data: string }> = [];
  /** Every subject sent (acknowledged or not) → its data. */
  readonly sent = new Map<string, string>();
  readonly #url: string;
  readonly #options: Required<PostLoadOptions>;
  #stopped = false;
  #loops: Promise<void>[] = [];

  constructor(url: string, options: PostLoadOptions) {
    this.#url = url;
    this.#options = { dataBytes: 100, requestTimeoutMs: 30_000, pauseAfterErrorMs: 5, ...options };
  }

  start(): this {
    for (let loop = 0; loop < this.#options.loops; loop++) this.#loops.push(this.#run(loop));
    return this;
  }

  /** Lets each loop finish its current request, then resolves. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#loops);
  }

  async #run(loop: number): Promise<void> {
    for (let n = 0; !this.#stopped; n++) {
      const subject = `${this.#options.prefix}/${loop}/${n}`;
      const data = randomBytes(this.#options.dataBytes).toString("base64");
      this.sent.set(subject, data);
      const outcome = await this.#post(subject, data);
      this.outcomes.push(outcome);
      if (outcome.id !== undefined) this.acks.push({ id: outcome.id, subject, data });
      if (outcome.status === undefined && !this.#stopped) {
        await new Promise((r) => setTimeout(r, this.#options.pauseAfterErrorMs));
      }
    }
  }

  async #post(subject: string, data: string): Promise<PostOutcome> {
    const startedAt = performance.now();
    const signal = AbortSignal.timeout(this.#options.requestTimeoutMs);
    try {
      const res = await fetch(`${this.#url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ source: "load", type: "load.posted", subject, data }),
        signal,
      });
      const text = await res.text();
      const endedAt = performance.now();
      if (res.status !== 200) return { subject, data, startedAt, endedAt, status: res.status };
      const id = ackedId(text);
      return id === undefined
        ? { subject, data, startedAt, endedAt, status: res.status, error: `malformed ack: ${text}` }
        : { subject, data, startedAt, endedAt, status: res.status, id };
    } catch (error) {
      const endedAt = performance.now();
      if (signal.aborted) return { subject, data, startedAt, endedAt, error: "timeout", hung: true };
      return { subject, data, startedAt, endedAt, error: errorCode(error) };
    }
  }
}

/** N of a `{"id":N}` body, else undefined. */
function ackedId(text: string): number | undefined {
  try {
    const body = JSON.parse(text) as { id?: unknown };
    return typeof body.id === "number" && Number.isSafeInteger(body.id) ? body.id : undefined;
  } catch {
    return undefined;
  }
}

function errorCode(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (cause !== undefined && typeof cause.code === "string") return cause.code;
  if (cause !== undefined && typeof cause.message === "string") return cause.message;
  return error instanceof Error ? error.message : String(error);
}

/**
 * An event as `GET /events` and `GET /events/get` answer it (simple JSON): the client library's
 * type, for tests whose events all have a subject.
 */
export type SimpleEvent = StoredEvent & { readonly subject: string };

/** Every stored event, paging through `GET /events?limit=1000&from_id=…`. */
export async function readAllEvents(url: string): Promise<SimpleEvent[]> {
  const events: SimpleEvent[] = [];
  let fromId = 0;
  for (;;) {
    const res = await fetch(`${url}/events?limit=1000&from_id=${fromId}`);
    if (res.status !== 200) throw new Error(`GET /events answered ${res.status}: ${await res.text()}`);
    const page = (await res.json()) as { events: SimpleEvent[]; has_more: boolean; next_from_id: number };
    events.push(...page.events);
    if (!page.has_more) return events;
    if (!(page.next_from_id > fromId)) throw new Error(`the cursor did not advance from ${fromId}`);
    fromId = page.next_from_id;
  }
}
