import { type ChildProcess, execFile, spawn } from "node:child_process";
import { constants as fsConstants, rmSync } from "node:fs";
import { access, mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import type { Connection } from "mysql2/promise";
import { createConnection } from "mysql2/promise";
import { freePort } from "./ports.js";

/** A throwaway MariaDB server owned by the test process. */
export interface MariaDb {
  port: number;
  /** `mysql://root@127.0.0.1:PORT/DATABASE` */
  url: string;
  datadir: string;
  /** Process id of the `mariadbd` child. */
  pid: number;
  /** Terminates the server and removes its data directory. Idempotent. */
  stop(): Promise<void>;
  /** Stops the server process but keeps its data (an outage); `resume()` starts it again. */
  halt(): Promise<void>;
  /** Starts the halted server again on the same port and data directory. */
  resume(): Promise<void>;
}

export interface StartMariaDbOptions {
  /** Database created once the server is up; `eventsdb` by default. */
  database?: string;
  /** Extra `mariadbd` arguments, appended last so they override the defaults. */
  extraArgs?: string[];
  /** Fixed port, e.g. to restart a server on the port it had before; a free one by default. */
  port?: number;
}

const NOT_FOUND =
  "MariaDB server binaries (mariadbd, mariadb-install-db) not found: install the Debian package mariadb-server (.ci/run does)";
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;
const KILL_TIMEOUT_MS = 5_000;
const LOG_FILE = "mariadbd.log";

interface Binaries {
  mariadbd: string;
  installDb: string;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function findBinary(name: string): Promise<string | undefined> {
  const dirs = (process.env.PATH ?? "").split(delimiter).filter((dir) => dir !== "");
  for (const dir of [...dirs, "/usr/sbin", "/usr/bin"]) {
    const candidate = join(dir, name);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

async function findBinaries(): Promise<Binaries | undefined> {
  const [mariadbd, installDb] = await Promise.all([findBinary("mariadbd"), findBinary("mariadb-install-db")]);
  return mariadbd !== undefined && installDb !== undefined ? { mariadbd, installDb } : undefined;
}

/** The binaries, or an error naming the package: tests never install anything (.ci/run does). */
async function resolveBinaries(): Promise<Binaries> {
  const binaries = await findBinaries();
  if (binaries === undefined) throw new Error(NOT_FOUND);
  return binaries;
}

function installDataDir(installDb: string, datadir: string, tmp: string): Promise<void> {
  const args = [
    "--no-defaults",
    `--datadir=${datadir}`,
    // Its own temporary directory: with the shared /tmp, two servers bootstrapping at once (two
    // test runs, a bench) were seen to lose each other's temporary table files and abort.
    `--tmpdir=${tmp}`,
    "--auth-root-authentication-method=normal",
    "--user=root",
    "--skip-test-db",
  ];
  return new Promise((resolve, reject) => {
    execFile(installDb, args, { maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) resolve();
      else reject(new Error(`${installDb} failed: ${error.message}\n${tail(`${stdout}${stderr}`)}`));
    });
  });
}

function tail(text: string, lines = 40): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

async function logTail(datadir: string): Promise<string> {
  try {
    return tail(await readFile(join(datadir, LOG_FILE), "utf8"));
  } catch {
    return "(no server output captured)";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isRunning(child: ChildProcess): boolean {
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

function waitForExit(exited: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return Promise.race([exited.then(() => true), timeout]).finally(() => clearTimeout(timer));
}

/** Servers started by this process, killed on exit if their owner never stopped them. */
const running = new Map<ChildProcess, string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const [child, datadir] of running) {
      if (isRunning(child)) {
        try {
          child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }
      try {
        rmSync(datadir, { recursive: true, force: true });
      } catch {
        // best effort: the killed server may still hold files for a moment
      }
    }
    running.clear();
  });
}

/** Connects as root until the server answers, bounded by READY_TIMEOUT_MS. */
async function waitUntilReady(
  server: ChildProcess,
  port: number,
  datadir: string,
  spawnError: () => Error | undefined,
): Promise<Connection> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const failure = spawnError();
    if (!isRunning(server) || failure !== undefined) {
      const how = failure?.message ?? `exit code ${server.exitCode}, signal ${server.signalCode}`;
      throw new Error(`mariadbd exited before accepting connections (${how}):\n${await logTail(datadir)}`);
    }
    try {
      return await createConnection({ host: "127.0.0.1", port, user: "root", connectTimeout: 2_000 });
    } catch (error) {
      if (Date.now() >= deadline) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new Error(
          `mariadbd did not accept connections on 127.0.0.1:${port} within ${READY_TIMEOUT_MS / 1000} s (${reason}):\n${await logTail(datadir)}`,
        );
      }
    }
    await sleep(200);
  }
}

/**
 * Starts a private MariaDB server on 127.0.0.1 with a fresh data directory and root without password,
 * then creates the test database.
 */
export async function startMariaDb(opts: StartMariaDbOptions = {}): Promise<MariaDb> {
  const database = opts.database ?? "eventsdb";
  const { mariadbd, installDb } = await resolveBinaries();
  const datadir = await mkdtemp(join(tmpdir(), "eventsdb-mariadb-"));
  const tmp = await mkdtemp(join(tmpdir(), "eventsdb-mariadb-tmp-"));
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const terminate = async (): Promise<void> => {
    if (child !== undefined) {
      if (isRunning(child)) {
        child.kill("SIGTERM");
        if (!(await waitForExit(exited, STOP_TIMEOUT_MS)) && isRunning(child)) {
          child.kill("SIGKILL");
          await waitForExit(exited, KILL_TIMEOUT_MS);
        }
      }
      running.delete(child);
    }
  };
  const kill = async (): Promise<void> => {
    await terminate();
    await rm(datadir, { recursive: true, force: true });
    await rm(tmp, { recursive: true, force: true });
  };

  try {
    await installDataDir(installDb, datadir, tmp);
    const port = opts.port ?? (await freePort());
    const args = [
      "--no-defaults",
      `--datadir=${datadir}`,
      `--socket=${join(datadir, "sock")}`,
      `--tmpdir=${tmp}`,
      `--port=${port}`,
      "--bind-address=127.0.0.1",
      "--user=root",
      "--skip-log-bin",
      "--innodb-flush-log-at-trx-commit=1",
      "--innodb-autoinc-lock-mode=2",
      "--max-connections=500",
      "--innodb-buffer-pool-size=256M",
      ...(opts.extraArgs ?? []),
    ];
    const launch = async (): Promise<{ pid: number; connection: Connection }> => {
      const log = await open(join(datadir, LOG_FILE), "a");
      let spawnError: Error | undefined;
      let server: ChildProcess;
      try {
        server = spawn(mariadbd, args, { stdio: ["ignore", log.fd, log.fd] });
        child = server;
        // Listeners go on before anything can await, so a spawn failure is never an unhandled 'error'.
        exited = new Promise((resolve) => server.once("exit", () => resolve()));
        server.once("error", (error) => {
          spawnError = error;
        });
        installExitHook();
        running.set(server, datadir);
      } finally {
        await log.close();
      }
      const pid = server.pid;
      if (pid === undefined) {
        await sleep(0);
        throw new Error(`could not start ${mariadbd}: ${spawnError?.message ?? "no pid"}`);
      }

      return { pid, connection: await waitUntilReady(server, port, datadir, () => spawnError) };
    };
    const { pid, connection } = await launch();
    try {
      await connection.query(`CREATE DATABASE IF NOT EXISTS \`${database.replaceAll("`", "``")}\``);
    } finally {
      await connection.end();
    }

    let stopping: Promise<void> | undefined;
    return {
      port,
      url: `mysql://root@127.0.0.1:${port}/${encodeURIComponent(database)}`,
      datadir,
      pid,
      stop: () => {
        stopping ??= kill();
        return stopping;
      },
      halt: terminate,
      resume: async () => {
        const { connection: again } = await launch();
        await again.end();
      },
    };
  } catch (error) {
    await kill();
    throw error;
  }
}
