import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { nodeArgs, ROOT, sleep } from "../support.js";
import type { GroupReply, GroupRequest } from "./client-process.js";
import { ClientGroup, type GroupConfig, type GroupOpened, type GroupResult } from "./clients.js";

// Where the fan-out clients run: in the bench process (--client-processes 0, the shape of earlier
// runs: clients and publishers share one event loop) or in child processes, one ClientGroup each.

const CLIENT_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "client-process.ts");
/** A call to a client process (opening 1000 streams included) that takes longer has failed. */
const CALL_TIMEOUT_MS = 120_000;
const EXIT_TIMEOUT_MS = 5_000;

export interface ClientHost {
  /** The process the clients run in. */
  readonly pid: number;
  open(): Promise<GroupOpened>;
  start(): Promise<void>;
  receipts(): Promise<number>;
  stop(): Promise<void>;
  result(ids: readonly number[]): Promise<GroupResult>;
  close(): Promise<void>;
  /** Ends the process (a child); idempotent. */
  exit(): Promise<void>;
}

/** The clients in this process. */
export function localHost(config: GroupConfig): ClientHost {
  const group = new ClientGroup(config);
  return {
    pid: process.pid,
    open: () => group.open(),
    start: async () => group.start(),
    receipts: async () => group.firstReceipts,
    stop: async () => group.stop(),
    result: async (ids) => group.result(ids),
    close: async () => group.close(),
    exit: async () => group.close(),
  };
}

/** The clients in a child process of their own (client-process.ts). */
export async function childHost(config: GroupConfig): Promise<ClientHost> {
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", ...nodeArgs("BENCH_LOAD_NODE_ARGS"), CLIENT_SCRIPT],
    { cwd: ROOT, stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced" },
  );
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  let seq = 0;
  let running = true;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      running = false;
      const error = new Error(`client process ${child.pid} exited (${signal ?? `exit code ${code}`})`);
      for (const waiter of pending.values()) waiter.reject(error);
      pending.clear();
      resolve();
    });
  });
  child.once("error", (error) => {
    for (const waiter of pending.values()) waiter.reject(error);
    pending.clear();
  });
  child.on("message", (reply: GroupReply) => {
    const waiter = pending.get(reply.seq);
    if (waiter === undefined) return;
    pending.delete(reply.seq);
    if (reply.ok) waiter.resolve(reply.value);
    else waiter.reject(new Error(`client process ${child.pid}: ${reply.message}`));
  });
  const call = <T>(name: GroupRequest["call"], args?: unknown): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!running || !child.connected) {
        reject(new Error(`client process ${child.pid} is gone`));
        return;
      }
      const request: GroupRequest = { seq: ++seq, call: name, args };
      const timer = setTimeout(() => {
        pending.delete(request.seq);
        reject(new Error(`client process ${child.pid}: ${name} took over ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      pending.set(request.seq, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      child.send(request, (error) => {
        if (error === null) return;
        pending.delete(request.seq);
        clearTimeout(timer);
        reject(error);
      });
    });
  let exiting: Promise<void> | undefined;
  const exit = (): Promise<void> => {
    exiting ??= (async () => {
      if (!running) return;
      if (child.connected) child.send({ seq: 0, call: "exit" } satisfies GroupRequest, () => {});
      await Promise.race([exited, sleep(EXIT_TIMEOUT_MS)]);
      if (running) {
        child.kill("SIGKILL");
        await exited;
      }
    })();
    return exiting;
  };
  try {
    await call("create", config);
  } catch (error) {
    await exit();
    throw error;
  }
  return {
    pid: child.pid ?? -1,
    open: () => call<GroupOpened>("open"),
    start: () => call<void>("start"),
    receipts: () => call<number>("receipts"),
    stop: () => call<void>("stop"),
    result: (ids) => call<GroupResult>("result", [...ids]),
    close: () => call<void>("close"),
    exit,
  };
}
