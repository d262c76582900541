import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** The built command line (`npm run build` first). */
export const CLI = path.resolve("dist/cli.js");

/** Log text kept per process: enough for the start line and any error, bounded under load. */
const MAX_LOG_CHARS = 1_000_000;

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
  /** stdout + stderr so far. */
  log(): string;
  /** Sends a signal to this process (by its pid); false when it is gone already. */
  signal(signal: NodeJS.Signals): boolean;
  /** SIGKILL unless it has exited already; resolves once it has. */
  kill(): Promise<Exit>;
}

export interface StartOptions {
  /** `DATABASE_URL`; none = the CLI's default SQLite file under `cwd`. */
  readonly databaseUrl?: string;
  /** Extra CLI arguments after the port and host flags. */
  readonly args?: readonly string[];
  /** Extra environment variables. */
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  readonly startTimeoutMs?: number;
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

/**
 * Spawns `node dist/cli.js serve` on free ports of 127.0.0.1 and resolves once its start line
 * (`eventsdb listening on ports <rest> (REST) and <grpc> (gRPC)`) is out. That line is logged at
 * info, so LOG_LEVEL must be info or lower (other info lines are few: no per-request logs).
 */
export async function startServerProcess(options: StartOptions = {}): Promise<ServerProcess> {
  const env = cleanEnv({
    LOG_LEVEL: "info",
    ...(options.databaseUrl === undefined ? {} : { DATABASE_URL: options.databaseUrl }),
    ...options.env,
  });
  const args = [
    CLI,
    "serve",
    "--rest-port",
    "0",
    "--grpc-port",
    "0",
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
  if (pid === undefined) throw new Error("could not spawn the server CLI");
  let log = "";
  const append = (chunk: Buffer) => {
    if (log.length < MAX_LOG_CHARS) log += chunk.toString("utf8");
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal, at: performance.now() }));
  });
  let gone = false;
  void exited.then(() => {
    gone = true;
    running.delete(server);
  });
  const signal = (name: NodeJS.Signals): boolean => {
    if (gone) return false;
    try {
      process.kill(pid, name);
      return true;
    } catch {
      return false;
    }
  };
  const server: ServerProcess = {
    child,
    pid,
    restPort: 0,
    grpcPort: 0,
    url: "",
    exited,
    log: () => log,
    signal,
    async kill() {
      signal("SIGKILL");
      const exit = await exited;
      running.delete(server);
      return exit;
    },
  };
  running.add(server);

  const timeoutMs = options.startTimeoutMs ?? 20_000;
  const ports = await new Promise<[number, number] | Error>((resolve) => {
    const timer = setTimeout(
      () => done(new Error(`no start line within ${timeoutMs} ms:\n${log}`)),
      timeoutMs,
    );
    const onData = () => {
      const m = /eventsdb listening on ports (\d+) \(REST\) and (\d+) \(gRPC\)/.exec(log);
      if (m) done([Number(m[1]), Number(m[2])]);
    };
    const onExit = (code: number | null, sig: NodeJS.Signals | null) =>
      done(new Error(`the server exited before listening (code ${code}, signal ${sig}):\n${log}`));
    const done = (result: [number, number] | Error) => {
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.off("exit", onExit);
      resolve(result);
    };
    child.stdout?.on("data", onData);
    child.once("exit", onExit);
  });
  if (ports instanceof Error) {
    await server.kill();
    throw ports;
  }
  const [restPort, grpcPort] = ports;
  return Object.assign(server, { restPort, grpcPort, url: `http://127.0.0.1:${restPort}` });
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

/** An event as `GET /events` and `GET /events/get` answer it (simple JSON). */
export interface SimpleEvent {
  readonly id: number;
  readonly source: string;
  readonly type: string;
  readonly subject: string;
  readonly time: string;
  readonly data: string;
}

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
