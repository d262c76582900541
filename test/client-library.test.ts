import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  decodeBase64,
  EventsDbClient,
  EventsDbError,
  type StoredEvent,
  type StreamMessage,
} from "../src/client/lib/index.js";
import { startServer } from "../src/server.js";
import { removeTempDirs, tempDir } from "./support/process.js";
import { startTestServer, type TestServer, testConfig } from "./support/server.js";
import { waitUntil } from "./support/sse.js";

// The client library (`eventsdb/client`) against real servers on SQLite: every method, errors with
// the server's code, the live stream resuming across a restart and a dropped connection, and the
// package as a user installs it (`npm run build` first: the package tests read dist/).

const ROOT = path.resolve(import.meta.dirname, "..");
const run = promisify(execFile);
const servers: TestServer[] = [];
const cleanups: (() => void)[] = [];

async function server(file = path.join(tempDir("eventsdb-lib-"), "events.db"), port = 0) {
  const started = await startTestServer(`sqlite:${file}`, { "rest-port": String(port) });
  servers.push(started);
  return started;
}

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

afterAll(() => removeTempDirs());

/** Reads a stream in the background; `until(n)` waits for n messages. */
function collect(open: (signal: AbortSignal) => AsyncGenerator<StreamMessage<StoredEvent>>) {
  const stop = new AbortController();
  const stream = open(stop.signal);
  const messages: StreamMessage<StoredEvent>[] = [];
  let failure: unknown;
  const done = (async () => {
    try {
      for await (const message of stream) messages.push(message);
    } catch (error) {
      failure = error;
    }
  })();
  cleanups.push(() => stop.abort()); // ends it also while it waits for data or to reconnect
  return {
    messages,
    /** Aborts the stream; resolves once the loop has ended without an error. */
    stop: async () => {
      stop.abort();
      await done;
      expect(failure).toBeUndefined();
    },
    ids: () => messages.map((m) => m.id),
    until: (n: number) =>
      waitUntil(() => {
        if (failure !== undefined) throw failure;
        return messages.length >= n;
      }, `${n} stream messages`),
  };
}

describe("EventsDbClient against a server", () => {
  it("appends in every mode, reads back, pages, lists subjects and deletes", async () => {
    const { url } = await server();
    const client = new EventsDbClient({ url });

    const simple = await client.append({
      source: "shop",
      type: "order.created",
      subject: "orders/1",
      data: "hi",
    });
    const bytes = await client.append({
      source: "shop",
      type: "file.added",
      subject: "files/1",
      data: new Uint8Array([0, 255, 1]),
    });
    const ce = {
      id: "o-2",
      source: "shop",
      type: "order.created",
      subject: "orders/2",
      datacontenttype: "application/json",
      data: { total: 10 },
    };
    const structured = await client.appendCloudEvent(ce);
    expect(await client.appendCloudEvent(ce)).toBe(structured); // (source, id) is stored once
    // JSON text as it should be stored: the server keeps `1.0` as sent.
    const text = await client.appendCloudEvent(
      '{"specversion":"1.0","id":"o-3","source":"shop","type":"order.paid","subject":"orders/3","datacontenttype":"application/json","data":1.0}',
    );
    const batch = await client.appendBatch([
      { id: "o-4", source: "shop", type: "order.created", subject: "orders/4/lines" },
      { id: "o-5", source: "shop", type: "order.created", subject: "orders/5", data: new Uint8Array([7]) },
    ]);
    expect(batch).toHaveLength(2);
    expect(
      await client.appendBatch([
        { id: "o-4", source: "shop", type: "order.created", subject: "orders/4/lines" },
      ]),
    ).toEqual([batch[0]]);

    const first = await client.get(simple);
    expect(first).toMatchObject({
      id: simple,
      source: "shop",
      type: "order.created",
      subject: "orders/1",
      data: "aGk=",
    });
    expect([...decodeBase64((await client.get(bytes)).data)]).toEqual([0, 255, 1]);
    expect(await client.get(structured)).toMatchObject({ ce_id: "o-2", datacontenttype: "application/json" });
    expect(await client.getCloudEvent(text)).toContain('"data":1.0');
    expect(JSON.parse(await client.getCloudEvent(batch[1] as number))).toMatchObject({
      id: "o-5",
      data_base64: "Bw==",
    });

    // Pages follow next_from_id; the flat iterator and the CloudEvents pages agree.
    const pages = [];
    for await (const page of client.pages({ subject: "orders", recursive: true, limit: 2 })) pages.push(page);
    expect(pages.map((p) => p.events.map((e) => e.id))).toEqual([
      [simple, structured],
      [text, batch[0]],
      [batch[1]],
    ]);
    expect(pages.map((p) => p.hasMore)).toEqual([true, true, false]);
    const all: number[] = [];
    for await (const event of client.events({ type: "order.created" })) all.push(event.id);
    expect(all).toEqual([simple, structured, batch[0], batch[1]]);
    const raw = [];
    for await (const page of client.cloudEventPages({
      subject: "orders",
      recursive: true,
      fromId: structured,
      limit: 2,
    })) {
      raw.push(...(JSON.parse(page.json) as { id: string }[]).map((e) => e.id));
    }
    expect(raw).toEqual(["o-3", "o-4", "o-5"]);
    expect(await client.newestId({ subject: "orders", recursive: true })).toBe(batch[1]);
    expect(await client.newestId({ subject: "nothing" })).toBe(0);

    expect(await client.subjects()).toEqual([
      "files/1",
      "orders/1",
      "orders/2",
      "orders/3",
      "orders/4/lines",
      "orders/5",
    ]);
    expect(await client.subjects("orders/4")).toEqual(["orders/4/lines"]);

    expect(await client.delete({ subject: "orders/4", recursive: true })).toBe(1);
    expect(await client.delete({ subject: "orders/2", fromId: structured })).toBe(0);
    expect(await client.delete({ subject: "orders/2" })).toBe(1);
    expect(await client.subjects("orders/")).toEqual(["orders/1", "orders/3", "orders/5"]);
  });

  it("carries the server's error, sends the token, and times out", async () => {
    const secured = await startServer(
      testConfig(
        `sqlite:${path.join(tempDir("eventsdb-lib-"), "events.db")}`,
        {},
        { AUTH_TOKEN: "s3cret-token-for-the-library" },
      ),
      { logger: false, defaultMetrics: false },
    );
    cleanups.push(() => void secured.close());
    const url = `http://127.0.0.1:${secured.restPort}`;
    const anonymous = new EventsDbClient({ url });
    const refused = await anonymous.subjects().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(EventsDbError);
    expect(refused).toMatchObject({ status: 401, code: "unauthenticated" });
    expect((refused as EventsDbError).error?.message).toBeTruthy();

    const client = new EventsDbClient({ url, token: "s3cret-token-for-the-library" });
    const id = await client.append({ source: "s", type: "t", subject: "a" });
    await expect(client.get(id + 100)).rejects.toMatchObject({
      status: 404,
      code: "not_found",
      message: `event ${id + 100} not found (404 not_found)`,
    });
    await expect(
      client.appendBatch([{ id: "x", source: "s", type: "", subject: "a" }]),
    ).rejects.toMatchObject({
      status: 400,
      code: "invalid_argument",
    });

    // A server that accepts the connection and never answers.
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => silent.close());
    const sockets: net.Socket[] = [];
    silent.on("connection", (s) => sockets.push(s));
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
    });
    const port = (silent.address() as net.AddressInfo).port;
    const slow = new EventsDbClient({ url: `http://127.0.0.1:${port}`, timeoutMs: 200 });
    await expect(slow.subjects()).rejects.toMatchObject({ status: 0, code: "deadline_exceeded" });
    await expect(slow.get(1, { timeoutMs: 100 })).rejects.toMatchObject({ code: "deadline_exceeded" });
  });

  it("streams stored then live events and resumes with Last-Event-ID after a server restart", async () => {
    const file = path.join(tempDir("eventsdb-lib-"), "events.db");
    let first = await server(file);
    const port = Number(new URL(first.url).port);
    const client = new EventsDbClient({ url: first.url });
    const stored = await client.append({ source: "s", type: "t", subject: "live/0" });
    await client.append({ source: "s", type: "t", subject: "other" });
    let opened = 0;
    const reasons: string[] = [];
    const stream = collect((signal) =>
      client.stream({
        signal,
        subject: "live",
        recursive: true,
        reconnectDelayMs: 50,
        onOpen: () => opened++,
        onReconnect: (info) => reasons.push(info.reason),
      }),
    );
    await stream.until(1);
    const ids = [stored];
    ids.push(await client.append({ source: "s", type: "t", subject: "live/1" }));
    await stream.until(2);

    await first.close();
    first = await server(file, port);
    for (let i = 2; i < 4; i++)
      ids.push(await client.append({ source: "s", type: "t", subject: `live/${i}` }));
    await stream.until(4);
    expect(stream.ids()).toEqual(ids);
    expect(opened).toBeGreaterThanOrEqual(2);
    expect(reasons.length).toBeGreaterThanOrEqual(1);
    expect(stream.messages[3]?.event.subject).toBe("live/3");
    await stream.stop();
  });

  it("resumes after a dropped connection without gap or repeat", async () => {
    const { url } = await server();
    const target = new URL(url);
    // A TCP proxy whose connections the test cuts.
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((socket) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      sockets.add(socket).add(upstream);
      socket.pipe(upstream).pipe(socket);
      const close = () => {
        socket.destroy();
        upstream.destroy();
      };
      socket.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => proxy.close());
    cleanups.push(() => {
      for (const s of sockets) s.destroy();
    });
    const writer = new EventsDbClient({ url });
    const reader = new EventsDbClient({
      url: `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`,
    });
    const ids = [await writer.append({ source: "s", type: "t", subject: "a" })];
    const reasons: string[] = [];
    const stream = collect((signal) =>
      reader.stream({ signal, reconnectDelayMs: 20, onReconnect: (i) => reasons.push(i.reason) }),
    );
    await stream.until(1);
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    ids.push(await writer.append({ source: "s", type: "t", subject: "b" }));
    ids.push(await writer.append({ source: "s", type: "t", subject: "c" }));
    await stream.until(3);
    expect(stream.ids()).toEqual(ids);
    expect(reasons).toHaveLength(1);
    await stream.stop();
  });
});

describe("the package: eventsdb/client", () => {
  it("resolves by the package's own name in Node, with types, and works against a server", async () => {
    const { url } = await server();
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8")) as {
      exports: Record<string, { types: string; default: string }>;
    };
    const entry = manifest.exports["./client"];
    expect(entry).toBeDefined();
    expect(fs.readFileSync(path.join(ROOT, entry?.types ?? ""), "utf8")).toContain("EventsDbClient");
    const script = `
      const { EventsDbClient } = await import("eventsdb/client");
      const client = new EventsDbClient({ url: process.argv[1] });
      const id = await client.append({ source: "s", type: "t", subject: "pkg", data: "ok" });
      console.log(JSON.stringify(await client.get(id)));`;
    const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script, url], { cwd: ROOT });
    expect(JSON.parse(stdout)).toMatchObject({ subject: "pkg", data: "b2s=" });
  });

  it("type-checks a user's code against the exported declarations", async () => {
    // Inside the package, so "eventsdb/client" resolves by self-reference as in a user's project.
    const dir = fs.mkdtempSync(path.join(ROOT, ".typecheck-"));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, "use.ts");
    fs.writeFileSync(
      file,
      `import { EventsDbClient, EventsDbError, type StoredEvent } from "eventsdb/client";
const client = new EventsDbClient({ url: "http://localhost:8080", timeoutMs: 1000 });
const event: Promise<StoredEvent> = client.get(1);
// @ts-expect-error: ids are numbers (an unused expect-error fails: the types must not be any)
void client.get("1");
void event;
void EventsDbError;
`,
    );
    const tsc = path.join(ROOT, "node_modules/typescript/bin/tsc");
    const args = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext"];
    await run(process.execPath, [tsc, ...args, "--target", "es2023", "--types", "node", file], { cwd: ROOT });
  });

  it("pulls in no server code and no Node module: every import stays in dist/client/lib/", () => {
    const dir = path.join(ROOT, "dist/client/lib");
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = fs.readFileSync(file, "utf8");
      const specifiers = [
        ...source.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*"([^"]+)"|import\(\s*"([^"]+)"\s*\)/g),
      ].map((m) => m[1] ?? m[2] ?? "");
      for (const specifier of specifiers) {
        expect(specifier, `${path.basename(file)} imports ${specifier}`).toMatch(/^\.\/[\w-]+\.js$/);
        visit(path.join(path.dirname(file), specifier));
      }
      const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
      expect(code, path.basename(file)).not.toMatch(/\b(?:Buffer|process|require)\b/);
    };
    visit(path.join(dir, "index.js"));
    expect([...seen].map((f) => path.basename(f)).sort()).toEqual(
      expect.arrayContaining(["client.js", "errors.js", "index.js", "sse.js"]),
    );
  });

  it("is served to the console under /ui/client/ as JavaScript", async () => {
    const { url } = await server();
    const module = await fetch(`${url}/ui/client/index.js`);
    expect(module.status).toBe(200);
    expect(module.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(module.headers.get("content-security-policy")).toContain("default-src 'self'");
    expect(await module.text()).toContain("EventsDbClient");
    expect((await fetch(`${url}/ui/client/index.d.ts`)).status).toBe(404);
    expect((await fetch(`${url}/ui/client/cli.js`)).status).toBe(404);
  });

  it("npm pack ships the library's modules and types", async () => {
    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT });
    const [pack] = JSON.parse(stdout) as [{ files: { path: string }[] }];
    const files = pack.files.map((f) => f.path);
    for (const name of [
      "index.js",
      "index.d.ts",
      "client.js",
      "client.d.ts",
      "sse.js",
      "errors.js",
      "types.d.ts",
    ]) {
      expect(files).toContain(`dist/client/lib/${name}`);
    }
    // The binary, bundled, with the metafile the bundle's tests read, and the modules it is built from.
    expect(files).toContain("dist/bin/cli.js");
    expect(files).toContain("dist/bin/meta.json");
    expect(files).toContain("dist/cli.js");
  });
});
