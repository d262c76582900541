import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import { grpcMessage, rawGrpcCall } from "../support/grpc.js";
import {
  CLI,
  killServerProcesses,
  removeTempDirs,
  type ServerProcess,
  startServerProcess,
  tempDir,
} from "../support/process.js";

// Issue 16, memory: a process loads the database driver of its store and not the other one, and
// neither the client commands nor a pretty-printer when its output is not a terminal (each is megabytes an idle server would hold;
// `npm run bench -- memory --scenario idle` measures them). Which packages loaded is read from
// the server child itself (test/fixtures/loaded-packages.mjs), after a request that used the store.

const RECORDER = fileURLToPath(new URL("../fixtures/loaded-packages.mjs", import.meta.url));
const DRIVER = { sqlite: "better-sqlite3", mysql: "mysql2" } as const;

afterEach(killServerProcesses);
afterAll(removeTempDirs);

describe.each(DIALECTS)("a serve start on $name", (dialect) => {
  it("loads its own database driver and not the other dialect's", async () => {
    const loaded = await loadedBy(restCalls, await dialect.url());
    // The recorder sees CommonJS packages that ES modules imported: it would see a driver.
    expect(loaded).toContain("fastify");
    expect(loaded).toContain(DRIVER[dialect.name]);
    const other = dialect.name === "sqlite" ? DRIVER.mysql : DRIVER.sqlite;
    expect(loaded).not.toContain(other);
    // Not a terminal: JSON lines, no pino-pretty.
    expect(loaded).not.toContain("pino-pretty");
    // `serve` registers no client commands: their progress bar (cli-progress) stays out.
    expect(loaded).not.toContain("cli-progress");
  });
});

// Connect, @bufbuild/protobuf, the generated descriptors and the gRPC services load with the first
// gRPC/Connect call (src/transports/grpc/lazy.ts), Fastify's schema compilers (ajv) with the first
// route schema (there is none) and yaml with the first YAML file: a default start that only
// serves REST holds none of them.

/**
 * What a start (no auth; on `databaseUrl`, or the default SQLite under its cwd) loaded by the time
 * it stopped, after `use`.
 */
async function loadedBy(
  use: (server: ServerProcess) => Promise<void>,
  databaseUrl?: string,
  cli?: string,
): Promise<string[]> {
  const file = path.join(tempDir(), "loaded.json");
  const server = await startServerProcess({
    ...(databaseUrl === undefined ? {} : { databaseUrl }),
    ...(cli === undefined ? {} : { cli }),
    nodeArgs: ["--import", RECORDER],
    env: { EVENTSDB_LOADED_PACKAGES_FILE: file },
  });
  await use(server);
  expect((await server.stop()).code).toBe(0);
  return JSON.parse(readFileSync(file, "utf8")) as string[];
}

/** Loaded only for gRPC, gRPC-Web and Connect calls. */
const RPC_ONLY = [
  "@connectrpc/connect",
  "@connectrpc/connect-node",
  "@connectrpc/connect-fastify",
  "@bufbuild/protobuf",
];
const RPC_FILES = ["dist/gen/grpc/eventsdb_pb.js", "dist/transports/grpc/service.js", "dist/events/proto.js"];

async function restCalls(server: ServerProcess): Promise<void> {
  const res = await fetch(`${server.url}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ source: "test", type: "test.memory", subject: "memory", data: "aGk=" }),
  });
  expect(res.status).toBe(200);
  expect((await fetch(`${server.url}/events?subject=memory`)).status).toBe(200);
  // An error answer too: REST's error renderer must not need Connect's code table.
  expect((await fetch(`${server.url}/events/999`)).status).toBe(404);
}

describe("a default start (SQLite, no auth)", () => {
  it("serves REST without loading Connect, protobuf, the descriptors, ajv or yaml", async () => {
    const loaded = await loadedBy(restCalls);
    // ES modules are seen too (kysely is imported as one): the list is not CommonJS only.
    expect(loaded).toContain("kysely");
    expect(loaded).toContain("dist/transports/grpc/lazy.js");
    for (const name of [...RPC_ONLY, ...RPC_FILES, "ajv", "@fastify/ajv-compiler", "yaml"]) {
      expect(loaded).not.toContain(name);
    }
  });

  it("loads Connect and the descriptors with the first Connect call", async () => {
    const loaded = await loadedBy(async (server) => {
      const res = await fetch(`${server.url}/grpc.EventsDB/GetEventByID`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ id: "999" }),
      });
      expect(res.status).toBe(404);
      expect(((await res.json()) as { code: string }).code).toBe("not_found");
    });
    for (const name of [...RPC_ONLY, ...RPC_FILES]) expect(loaded).toContain(name);
  });

  it("loads protobuf and the descriptors, not Connect, with the first gRPC append on the fast path", async () => {
    const loaded = await loadedBy(async (server) => {
      // CreateEvent{source: "s", type: "t"}: fields 1 and 2, length-delimited.
      const message = Buffer.from([0x0a, 0x01, 0x73, 0x12, 0x01, 0x74]);
      const answer = await rawGrpcCall(server.url, "/grpc.EventsDB/CreateEvent", grpcMessage(message));
      expect(answer.grpcStatus).toBe("0");
    });
    expect(loaded).toContain("@bufbuild/protobuf");
    expect(loaded).toContain("dist/gen/grpc/eventsdb_pb.js");
    expect(loaded).not.toContain("@connectrpc/connect-fastify");
    expect(loaded).not.toContain("dist/transports/grpc/service.js");
  });
});

// The binary users run (`npm start`, the package's `eventsdb`) is the bundle scripts/bundle.mjs
// builds: the same modules in a few chunks instead of ~630 files, ~9 MiB less at idle (README,
// Measured). The tests above run it too (test/support/process.ts), through its metafile.
describe("the bundled binary", () => {
  const root = fileURLToPath(new URL("../..", import.meta.url));
  const manifest = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as {
    bin: Record<string, string>;
    scripts: Record<string, string>;
  };

  it("loads the same packages and modules as a start from the modules it is built from", async () => {
    const bundled = await loadedBy(restCalls);
    const unbundled = await loadedBy(restCalls, undefined, path.join(root, "dist", "cli.js"));
    // A package nested in another's node_modules counts by its own name in both.
    expect(unbundled).toContain("cookie");
    expect(bundled).toEqual(unbundled);
  });

  it("is what npm start, the package's binary and the tests run", () => {
    expect(manifest.bin.eventsdb).toBe("dist/bin/cli.js");
    expect(manifest.scripts.start).toBe("node dist/bin/cli.js serve");
    expect(path.relative(root, CLI)).toBe("dist/bin/cli.js");
  });

  it("holds the server's packages in the chunks a start imports, and leaves the store drivers outside", () => {
    const meta = JSON.parse(readFileSync(path.join(root, "dist", "bin", "meta.json"), "utf8")) as {
      outputs: Record<
        string,
        { imports: { path: string; kind: string }[]; inputs: Record<string, unknown>; entryPoint?: string }
      >;
    };
    // The chunks a `serve` start loads: the entry, the server it imports when the command is
    // `serve` (dist/cli.js imports dist/server.js dynamically), and what they import statically.
    const started = new Set<string>();
    const visit = (chunk: string) => {
      if (started.has(chunk)) return;
      started.add(chunk);
      for (const imported of meta.outputs[chunk]?.imports ?? []) {
        if (imported.kind === "import-statement" && imported.path in meta.outputs) visit(imported.path);
      }
    };
    visit("dist/bin/cli.js");
    const server = Object.entries(meta.outputs).find(([, output]) => output.entryPoint === "dist/server.js");
    expect(server).toBeDefined();
    visit(server?.[0] ?? "");
    const inputs = [...started].flatMap((chunk) => Object.keys(meta.outputs[chunk]?.inputs ?? {}));
    for (const name of ["fastify", "kysely", "pino", "prom-client"]) {
      expect(inputs.some((input) => input.startsWith(`node_modules/${name}/`))).toBe(true);
    }
    expect(inputs).toContain("dist/server.js");
    expect(inputs.some((input) => /node_modules\/(better-sqlite3|mysql2)\//.test(input))).toBe(false);
    // The first RPC's modules are in chunks of their own, imported dynamically.
    expect(inputs).not.toContain("dist/transports/grpc/service.js");
  });
});
