import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  type CliRun,
  cleanEnv,
  killServerProcesses,
  removeTempDirs,
  runCli,
  startServerProcess,
  tempDir,
  within,
} from "./support/process.js";
import { startTestServer, type TestServer } from "./support/server.js";
import { waitUntil } from "./support/sse.js";

// The client commands of the built CLI (`npm run build` first) against real servers on SQLite.

interface RunOptions {
  readonly url?: string;
  readonly env?: Record<string, string>;
  /** Written to stdin, which is then closed (always closed: a client must not wait on it). */
  readonly input?: string | Buffer;
}

/** A fresh shell's environment without EVENTSDB_URL / EVENTSDB_TOKEN from the developer's. */
function clientEnv(url: string | undefined, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = cleanEnv();
  delete env.EVENTSDB_URL;
  delete env.EVENTSDB_TOKEN;
  return { ...env, ...(url === undefined ? {} : { EVENTSDB_URL: url }), ...extra };
}

function cli(args: readonly string[], options: RunOptions = {}): Promise<CliRun> {
  return runCli(args, {
    env: clientEnv(options.url, options.env),
    cwd: tempDir("eventsdb-client-"),
    ...(options.input === undefined ? {} : { input: options.input }),
  });
}

/** Asserts a failed run: the exit code and exactly one `eventsdb: …` line on stderr. */
function expectFailure(result: CliRun, code: number, ...fragments: string[]): void {
  expect(result.code, result.stderr).toBe(code);
  const lines = result.stderr.split("\n").filter((line) => line !== "");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^eventsdb: /);
  for (const fragment of fragments) expect(lines[0]).toContain(fragment);
}

/** A running `eventsdb tail`, its output as it comes. */
class Tail {
  readonly child: ChildProcessWithoutNullStreams;
  readonly exited: Promise<number | null>;
  stdout = "";
  stderr = "";

  constructor(url: string, args: readonly string[]) {
    this.child = spawn(process.execPath, [CLI, "tail", ...args], {
      env: clientEnv(url),
      cwd: tempDir("eventsdb-tail-"),
    });
    this.child.stdout.on("data", (chunk: Buffer) => {
      this.stdout += chunk.toString("utf8");
    });
    this.child.stderr.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    this.exited = new Promise((resolve) => this.child.on("close", (code) => resolve(code)));
    tails.push(this);
  }

  lines(): string[] {
    return this.stdout.split("\n").filter((line) => line !== "");
  }

  /** The ids at the start of each line. */
  ids(): number[] {
    return this.lines().map((line) => Number(line.split(" ")[0]));
  }

  async waitForLines(n: number, ms = 15_000): Promise<void> {
    await waitUntil(
      () => this.lines().length >= n,
      `${n} tail lines; got:\n${this.stdout}\n${this.stderr}`,
      ms,
    );
  }

  /** Ctrl-C; resolves with the exit code. */
  async interrupt(): Promise<number | null> {
    this.child.kill("SIGINT");
    return within(this.exited, 10_000, "tail to exit after SIGINT");
  }
}

const tails: Tail[] = [];
const servers: TestServer[] = [];

async function server(
  file = path.join(tempDir("eventsdb-store-"), "events.db"),
  port = 0,
): Promise<TestServer> {
  const started = await startTestServer(`sqlite:${file}`, { "rest-port": String(port) });
  servers.push(started);
  return started;
}

/** Resolves once the server has this many open streams (the tail is subscribed). */
async function streamsOpen(test: TestServer, n: number): Promise<void> {
  await waitUntil(
    async () => (await test.server.metrics.activeStreams.get()).values[0]?.value === n,
    `${n} open streams`,
  );
}

async function post(url: string, contentType: string, body: unknown): Promise<unknown> {
  const res = await fetch(`${url}/events`, {
    method: "POST",
    headers: { "content-type": contentType },
    body: JSON.stringify(body),
  });
  expect(res.status, await res.clone().text()).toBe(200);
  return res.json();
}

async function publishSimple(url: string, subject: string, data: string): Promise<number> {
  const body = { source: "test", type: "test.made", subject, data: Buffer.from(data).toString("base64") };
  return ((await post(url, "application/json", body)) as { id: number }).id;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

afterEach(async () => {
  for (const tail of tails.splice(0)) {
    tail.child.kill("SIGKILL");
    await tail.exited;
  }
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await killServerProcesses();
  removeTempDirs();
});

describe("eventsdb publish, get, subjects", () => {
  let url: string;
  beforeAll(async () => {
    url = (await server()).url;
  });

  it("publishes data from an argument and reads the event back", async () => {
    const published = await cli(
      ["publish", "--subject", "notes/1", "--type", "note.added", "--source", "cli", "héllo"],
      {
        url,
      },
    );
    expect(published.code, published.stderr).toBe(0);
    expect(published.out).toMatch(/^\d+\n$/);
    const id = Number(published.out);

    const got = await cli(["get", String(id)], { url });
    expect(got.code, got.stderr).toBe(0);
    expect(got.out).toContain('\n  "subject": "notes/1"'); // pretty
    expect(JSON.parse(got.out)).toMatchObject({
      id,
      source: "cli",
      type: "note.added",
      subject: "notes/1",
      data: Buffer.from("héllo").toString("base64"),
    });
    expect((await cli(["get", String(id), "--raw"], { url })).out).toBe("héllo");
  });

  it("publishes binary data from --file and from stdin; get --raw gives the bytes back exactly", async () => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const file = path.join(tempDir(), "data.bin");
    fs.writeFileSync(file, bytes);
    const fromFile = await cli(
      ["publish", "--subject", "bin/1", "--type", "t", "--source", "s", "--file", file],
      {
        url,
      },
    );
    expect(fromFile.code, fromFile.stderr).toBe(0);
    const fromStdin = await cli(["publish", "--subject", "bin/2", "--type", "t", "--source", "s"], {
      url,
      input: bytes,
    });
    expect(fromStdin.code, fromStdin.stderr).toBe(0);
    for (const id of [fromFile.out.trim(), fromStdin.out.trim()]) {
      const raw = await cli(["get", id, "--raw"], { url });
      expect(raw.code).toBe(0);
      expect(raw.stdout.equals(bytes)).toBe(true);
    }
  });

  it("--ce sends a structured CloudEvent: the same --id twice stores one event", async () => {
    const args = ["publish", "--ce", "--id", "order-7", "--subject", "orders/7", "--type", "order.created"];
    const first = await cli(
      [...args, "--source", "shop", "--content-type", "application/json", '{"total": 10}'],
      {
        url,
      },
    );
    const second = await cli(
      [...args, "--source", "shop", "--content-type", "application/json", '{"total": 10}'],
      {
        url,
      },
    );
    expect(first.code, first.stderr).toBe(0);
    expect(second.out).toBe(first.out);
    const ce = await cli(["get", first.out.trim(), "--ce"], { url });
    expect(JSON.parse(ce.out)).toMatchObject({
      specversion: "1.0",
      id: "order-7",
      source: "shop",
      datacontenttype: "application/json",
      data: { total: 10 },
    });
    // Without --id each call is a new event (a random UUID); text defaults to text/plain.
    const a = await cli(
      ["publish", "--ce", "--subject", "orders/8", "--type", "t", "--source", "shop", "x"],
      { url },
    );
    const b = await cli(
      ["publish", "--ce", "--subject", "orders/8", "--type", "t", "--source", "shop", "x"],
      { url },
    );
    expect(a.out).not.toBe(b.out);
    expect(JSON.parse((await cli(["get", a.out.trim()], { url })).out)).toMatchObject({
      datacontenttype: "text/plain",
      ce_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
  });

  it("--ce keeps JSON data as written: get --raw and get --ce give the very text back", async () => {
    for (const data of ['{"big": 12345678901234567890, "x": 1.0}', "-0", " 42 ", "null"]) {
      const args = ["publish", "--ce", "--subject", "exact", "--type", "t", "--source", "shop"];
      const published = await cli([...args, "--content-type", "application/json", data], { url });
      expect(published.code, published.stderr).toBe(0);
      const id = published.out.trim();
      expect((await cli(["get", id, "--raw"], { url })).out).toBe(data);
      const ce = await cli(["get", id, "--ce"], { url });
      expect(ce.code, ce.stderr).toBe(0);
      if (data.trim() === data && data !== "null") expect(ce.out).toContain(`\n  "data": ${data}\n}`);
      expect(JSON.parse(ce.out)).toMatchObject({ specversion: "1.0", subject: "exact" });
    }
  });

  it("lists subjects, one per line, optionally by prefix", async () => {
    await publishSimple(url, "zeta/a", "1");
    await publishSimple(url, "zeta/b", "2");
    const all = await cli(["subjects"], { url });
    expect(all.code).toBe(0);
    expect(all.out.split("\n")).toEqual(expect.arrayContaining(["zeta/a", "zeta/b", "notes/1"]));
    const some = await cli(["subjects", "--prefix", "zeta/"], { url });
    expect(some.out).toBe("zeta/a\nzeta/b\n");
  });

  it("exits 2 on bad usage with one line on stderr", async () => {
    expectFailure(await cli(["publish", "--type", "t", "--source", "s", "x"], { url }), 2, "--subject");
    expectFailure(await cli(["get", "abc"], { url }), 2, "abc", "positive integer");
    expectFailure(await cli(["tail", "--from-id", "-3"], { url }), 2, "--from-id");
    expectFailure(await cli(["import", "--batch", "5000"], { url }), 2, "--batch");
    expectFailure(
      await cli(["publish", "--subject", "s", "--type", "t", "--source", "s", "--id", "x", "d"], { url }),
      2,
      "--id needs --ce",
    );
  });

  it("exits 1 when the server is unreachable or answers an error, with its message", async () => {
    const port = await closedPort();
    expectFailure(
      await cli(["get", "1", "--url", `http://127.0.0.1:${port}`]),
      1,
      `cannot reach http://127.0.0.1:${port}`,
      "ECONNREFUSED",
    );
    expectFailure(await cli(["get", "999999"], { url }), 1, "event 999999 not found", "404 not_found");
    expectFailure(
      await cli(["publish", "--subject", "", "--type", "t", "--source", "s", "x"], { url }),
      1,
      "subject must not be empty",
    );
  });

  it("sends --token (or EVENTSDB_TOKEN) to a server that requires AUTH_TOKEN", async () => {
    const secured = await startServerProcess({ env: { AUTH_TOKEN: "s3cret" } });
    expectFailure(
      await cli(["subjects"], { url: secured.url }),
      1,
      "a token is required",
      "401 unauthenticated",
    );
    expectFailure(await cli(["subjects", "--token", "wrong"], { url: secured.url }), 1, "unknown or expired");
    const published = await cli(
      ["publish", "--token", "s3cret", "--subject", "sec/1", "--type", "t", "--source", "s", "x"],
      {
        url: secured.url,
      },
    );
    expect(published.code, published.stderr).toBe(0);
    const listed = await cli(["subjects"], { url: secured.url, env: { EVENTSDB_TOKEN: "s3cret" } });
    expect(listed).toMatchObject({ code: 0, out: "sec/1\n" });
  });
});

describe("eventsdb tail", () => {
  it("follows live events across a server restart without gap or repeat, keeps a state file, resumes from it", async () => {
    const file = path.join(tempDir("eventsdb-store-"), "events.db");
    let first = await server(file);
    const url = first.url;
    const port = Number(new URL(url).port);
    const before = await publishSimple(url, "live/a", "before");
    const stateFile = path.join(tempDir(), "tail.state");

    const tail = new Tail(url, ["--subject", "live", "--recursive", "--state-file", stateFile]);
    await streamsOpen(first, 1);
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) ids.push(await publishSimple(url, `live/${i}`, `event ${i}`));
    await publishSimple(url, "elsewhere", "filtered out");
    await tail.waitForLines(3);
    expect(tail.ids()).toEqual(ids); // not `before`: tail starts live
    expect(tail.lines()[0]).toMatch(/^\d+ \d{4}-\d\d-\d\dT[\d:.]+Z live\/0 test\.made event 0$/);
    await waitUntil(() => fs.readFileSync(stateFile, "utf8") === `${ids[2]}\n`, "the state file to follow");

    // Kill the server; another one on the same port and file takes over.
    await first.close();
    first = await server(file, port);
    for (let i = 3; i < 6; i++) ids.push(await publishSimple(url, `live/${i}`, `event ${i}`));
    await tail.waitForLines(6);
    expect(tail.ids()).toEqual(ids);
    const notices = tail.stderr.split("\n").filter((line) => line !== "");
    expect(notices.length).toBeGreaterThanOrEqual(1);
    for (const line of notices) expect(line).toMatch(/^eventsdb: .*; reconnecting in [\d.]+ s after id \d+$/);

    expect(await tail.interrupt()).toBe(0);
    expect(fs.readFileSync(stateFile, "utf8")).toBe(`${ids[5]}\n`);
    expect(fs.readdirSync(path.dirname(stateFile))).toEqual(["tail.state"]); // no temp file left

    // Resume from the state file: exactly what came after, as JSON lines.
    const later = [await publishSimple(url, "live/6", "six"), await publishSimple(url, "live/x/7", "seven")];
    const resumed = new Tail(url, ["--subject", "live", "--recursive", "--state-file", stateFile, "--json"]);
    await resumed.waitForLines(2);
    await new Promise((r) => setTimeout(r, 200));
    const events = resumed.lines().map((line) => JSON.parse(line) as { id: number; data: string });
    expect(events.map((e) => e.id)).toEqual(later);
    expect(Buffer.from(events[1]?.data ?? "", "base64").toString()).toBe("seven");
    expect(await resumed.interrupt()).toBe(0);
    expect(resumed.stderr).toBe("");
    expect(fs.readFileSync(stateFile, "utf8")).toBe(`${later[1]}\n`);
    expect(before).toBeLessThan(ids[0] as number);
  });

  it("--from-id replays from an id; SIGINT while idle exits 0", async () => {
    const { url } = await server();
    const ids = [await publishSimple(url, "a", "1"), await publishSimple(url, "b", "\u0000\u0001binary")];
    const tail = new Tail(url, ["--from-id", "0"]);
    await tail.waitForLines(2);
    expect(tail.ids()).toEqual(ids);
    expect(tail.lines()[1]).toMatch(/ b test\.made <8 bytes>$/);
    expect(await tail.interrupt()).toBe(0);
  });

  it("exits 1 when the server cannot be reached at the start", async () => {
    const port = await closedPort();
    const tail = new Tail(`http://127.0.0.1:${port}`, ["--from-id", "0"]);
    expect(await within(tail.exited, 10_000, "tail to give up")).toBe(1);
    expect(tail.stderr).toMatch(/^eventsdb: cannot reach .*ECONNREFUSED\n$/);
  });
});

describe("eventsdb export and import", () => {
  it("round-trips a store into a second one through NDJSON; a re-run imports nothing new", async () => {
    const source = await server();
    const target = await server();
    // More than one page (1000), every content mode and attribute.
    const simple = Array.from({ length: 1100 }, (_, i) => ({
      source: "bulk",
      type: "bulk.item",
      subject: `bulk/${i % 7}`,
      data: Buffer.from([i % 256, 0, 255]).toString("base64"),
    }));
    await post(source.url, "application/json", simple.slice(0, 1000));
    await post(source.url, "application/json", simple.slice(1000));
    await post(source.url, "application/cloudevents-batch+json", [
      {
        specversion: "1.0",
        id: "o-1",
        source: "shop",
        type: "order.created",
        subject: "orders/1",
        time: "2026-01-02T03:04:05.123456Z",
        datacontenttype: "application/json",
        dataschema: "https://example.com/order.json",
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        priority: 3,
        urgent: true,
        data: { total: 10, lines: ["a", "b"] },
      },
      {
        specversion: "1.0",
        id: "o-2",
        source: "shop",
        type: "order.note",
        subject: "orders/1",
        datacontenttype: "text/plain",
        data: "ünïcode text",
      },
      {
        specversion: "1.0",
        id: "o-3",
        source: "shop",
        type: "order.blob",
        subject: "orders/2",
        data_base64: "AAECAwQ=",
      },
      { specversion: "1.0", id: "o-4", source: "shop", type: "order.empty", subject: "orders/3" },
    ]);
    const total = 1104;

    const dir = tempDir();
    const dump = path.join(dir, "dump.ndjson");
    const exported = await cli(["export", "--output", dump], { url: source.url });
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stderr).toBe(`exported ${total} events\n`);
    const lines = fs.readFileSync(dump, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    expect(lines).toHaveLength(total);

    // Into the second store, in batches of 300 (4 requests).
    const imported = await cli(["import", "--input", dump, "--batch", "300"], { url: target.url });
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stderr).toBe(`imported ${total} events (${total} new)\n`);

    // The second store exports the same CloudEvents: attributes, time, extensions and data. Not
    // the same chain: an event stored without a CloudEvents id is imported with its server id as
    // one, which its hash covers (and every later hash through prevhash).
    const again = await cli(["export"], { url: target.url });
    expect(again.code, again.stderr).toBe(0);
    const withoutChain = (line: string) => {
      const { eventsdbhash, eventsdbprevhash, ...event } = JSON.parse(line) as Record<string, unknown>;
      expect(eventsdbhash).toMatch(/^[0-9a-f]{64}$/);
      expect(eventsdbprevhash).toMatch(/^[0-9a-f]{64}$/);
      return event;
    };
    expect(again.out.split("\n").slice(0, -1).map(withoutChain)).toEqual(lines.map(withoutChain));

    // A re-run (from stdin) stores nothing.
    const rerun = await cli(["import"], { url: target.url, input: fs.readFileSync(dump) });
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stderr).toBe(`imported ${total} events (0 new)\n`);
    const after = await cli(["export", "--subject", "orders", "--recursive"], { url: target.url });
    expect(after.out.split("\n").filter((l) => l !== "")).toHaveLength(4);
    expect((await cli(["export"], { url: target.url })).out).toBe(again.out);
  });

  it("keeps data byte for byte: JSON numbers and spacing as sent, simple events whose bytes look like JSON", async () => {
    const source = await server();
    const target = await server();
    // Structured mode, written by hand: JSON.stringify could not write these numbers.
    const texts = [
      "12345678901234567890",
      "1E400",
      "-0",
      "1.0",
      '{"a": 1}',
      '{\r\n  "pretty": [1.50, 2e3]\n}',
    ];
    const body = texts
      .map(
        (data, i) =>
          `{"specversion":"1.0","id":"n${i}","source":"s","type":"t","subject":"n","data":${data}}`,
      )
      .join(",");
    const res = await fetch(`${source.url}/events`, {
      method: "POST",
      headers: { "content-type": "application/cloudevents-batch+json" },
      body: `[${body}]`,
    });
    expect(res.status, await res.text()).toBe(200);
    // The simple format's bytes that happen to be JSON (or nearly).
    for (const data of ["1.0", " 42 ", "null", '"x"', "\u0000\u0001"])
      await publishSimple(source.url, "s", data);
    const expected = [...texts, "1.0", " 42 ", "null", '"x"', "\u0000\u0001"];

    const dump = path.join(tempDir(), "dump.ndjson");
    expect((await cli(["export", "--output", dump], { url: source.url })).code).toBe(0);
    const imported = await cli(["import", "--input", dump], { url: target.url });
    expect(imported.code, imported.stderr).toBe(0);
    for (const t of [source, target]) {
      const page = (await (await fetch(`${t.url}/events`)).json()) as { events: { data: string }[] };
      expect(page.events.map((e) => Buffer.from(e.data, "base64").toString("utf8"))).toEqual(expected);
    }
    // Read as CloudEvents, JSON data is the stored text itself.
    const ce = await (
      await fetch(`${target.url}/events/1`, { headers: { accept: "application/cloudevents+json" } })
    ).text();
    expect(ce).toContain('"data":12345678901234567890');
  });

  it("filters the export by subject, type and --from-id", async () => {
    const { url } = await server();
    const a = await publishSimple(url, "x/1", "a");
    await publishSimple(url, "y/1", "b");
    const c = await publishSimple(url, "x/2", "c");
    const out = await cli(
      ["export", "--subject", "x", "--recursive", "--type", "test.made", "--from-id", String(a)],
      {
        url,
      },
    );
    expect(out.code).toBe(0);
    expect(
      out.out
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l).id),
    ).toEqual([String(c)]);
    expect(out.stderr).toBe("exported 1 event\n");
  });

  it("stops at an invalid line with exit 2 and its number, sending nothing of that batch", async () => {
    const { url } = await server();
    const event = (n: number) =>
      JSON.stringify({ specversion: "1.0", id: `e-${n}`, source: "imp", type: "t", subject: `imp/${n}` });
    const input = [
      event(1),
      event(2),
      "",
      event(3),
      '{"specversion":"1.0","id":"e-4","source":"imp"}',
      event(5),
    ];
    const result = await cli(["import", "--batch", "2"], { url, input: `${input.join("\n")}\n` });
    expectFailure(result, 2, "line 5", "type must be a non-empty string");
    // Batch 1 (lines 1-2) went out; batch 2 (lines 4-5) did not.
    expect((await cli(["subjects", "--prefix", "imp/"], { url })).out).toBe("imp/1\nimp/2\n");
    expectFailure(await cli(["import"], { url, input: "not json\n" }), 2, "line 1: not valid JSON");
    // What only the server can tell is reported by line too.
    const tooLong = JSON.stringify({
      specversion: "1.0",
      id: "e-9",
      source: "imp",
      type: "t",
      subject: "s".repeat(300),
    });
    expectFailure(
      await cli(["import"], { url, input: `${event(8)}\n${tooLong}\n` }),
      2,
      "line 2: subject is longer",
    );
  });
});

describe("eventsdb delete and import FILE", () => {
  it("deletes with --yes, refuses without it when stdin is not a terminal, asks on a terminal", async () => {
    const { url } = await server();
    for (const subject of ["del/a", "del/a/1", "del/a/2", "del/b", "keep"])
      await publishSimple(url, subject, "x");

    // Not a terminal: exit 2, nothing deleted.
    expectFailure(
      await cli(["delete", "--subject", "del/a", "--recursive"], { url }),
      2,
      "--yes",
      "not a terminal",
    );
    expect((await cli(["subjects", "--prefix", "del/"], { url })).out).toBe(
      "del/a\ndel/a/1\ndel/a/2\ndel/b\n",
    );

    const removed = await cli(["delete", "--subject", "del/a", "--recursive", "--yes"], { url });
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stderr).toBe("deleted 3 events\n");
    expect((await cli(["subjects", "--prefix", "del/"], { url })).out).toBe("del/b\n");
    expectFailure(await cli(["delete", "--yes"], { url }), 2, "--subject");

    // On a terminal (script(1) gives the command a pseudo-terminal): "n" keeps, "y" deletes.
    const onTerminal = (answer: string) =>
      new Promise<{ code: number | null; output: string }>((resolve, reject) => {
        const command = `${shellQuote(process.execPath)} ${shellQuote(CLI)} delete --subject del/b`;
        const child = spawn("script", ["-qec", command, "/dev/null"], {
          env: clientEnv(url),
          cwd: tempDir("eventsdb-client-"),
        });
        let output = "";
        let answered = false;
        // The command may exit before script(1) reads the answer: a late write must not throw.
        child.stdin.on("error", () => {});
        child.stdout.on("data", (chunk: Buffer) => {
          output += chunk.toString("utf8");
          if (!answered && output.includes("[y/N]")) {
            answered = true;
            child.stdin.write(`${answer}\n`);
          }
        });
        child.stderr.on("data", (chunk: Buffer) => {
          output += chunk.toString("utf8");
        });
        child.once("error", reject);
        child.once("close", (code) => resolve({ code, output }));
        setTimeout(() => child.kill("SIGKILL"), 20_000).unref();
      });
    const no = await onTerminal("n");
    expect(no.output).toContain(`Delete the events of del/b from ${url}? [y/N]`);
    expect(no.output).toContain("nothing deleted");
    expect(no.code).toBe(1);
    expect((await cli(["subjects", "--prefix", "del/"], { url })).out).toBe("del/b\n");
    const yes = await onTerminal("y");
    expect(yes.output).toContain("deleted 1 event");
    expect(yes.code).toBe(0);
    expect((await cli(["subjects"], { url })).out).toBe("keep\n");
  });

  it("imports from a FILE argument, from - (stdin), and refuses FILE with --input", async () => {
    const { url } = await server();
    const event = (n: number) =>
      JSON.stringify({ specversion: "1.0", id: `f-${n}`, source: "file", type: "t", subject: `file/${n}` });
    const file = path.join(tempDir(), "events.ndjson");
    fs.writeFileSync(file, `${event(1)}\n${event(2)}\n`);
    const fromFile = await cli(["import", file], { url });
    expect(fromFile.code, fromFile.stderr).toBe(0);
    expect(fromFile.stderr).toBe("imported 2 events (2 new)\n");
    const fromStdin = await cli(["import", "-"], { url, input: `${event(2)}\n${event(3)}\n` });
    expect(fromStdin.stderr).toBe("imported 2 events (1 new)\n");
    expect((await cli(["subjects", "--prefix", "file/"], { url })).out).toBe("file/1\nfile/2\nfile/3\n");
    expectFailure(await cli(["import", file, "--input", file], { url }), 2, "not both");
    expectFailure(await cli(["import", path.join(tempDir(), "missing.ndjson")], { url }), 2, "ENOENT");
  });
});

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}
