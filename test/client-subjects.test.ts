import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EventsDbClient } from "../src/client/lib/index.js";
import { writeAuthFile } from "./support/auth.js";
import { cleanEnv, removeTempDirs, runCli, tempDir } from "./support/process.js";
import { startTestServer, type TestServer } from "./support/server.js";

// The client library's and the CLI's paged subject reads (the CLI is the built one: `npm run build`).

const ADMIN = "admin-token";
const NARROW = "narrow-token";
const SUBJECTS = ["a/1", "a/2", "b", "b/1", "b/ü", "c", "ü/1"];

/** A stand-in server on loopback answering GET /subjects with `answer`; records the queries. */
async function fakeServer(
  answer: (query: URLSearchParams, res: http.ServerResponse) => void,
): Promise<{ url: string; queries: URLSearchParams[]; close(): Promise<void> }> {
  const queries: URLSearchParams[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    queries.push(url.searchParams);
    answer(url.searchParams, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    queries,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const json = (res: http.ServerResponse, body: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(200, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
};

describe("paged subjects in the client library and the CLI", () => {
  let t: TestServer;
  let dir: string;
  const fakes: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-client-subjects-"));
    const authFile = writeAuthFile(dir, [
      { name: "admin", token: ADMIN, read: ["*"], write: ["*"] },
      { name: "narrow", token: NARROW, read: ["b"], write: [] },
    ]);
    t = await startTestServer("sqlite::memory:", { "auth-file": authFile });
    const admin = new EventsDbClient({ url: t.url, token: ADMIN });
    for (const subject of SUBJECTS) await admin.append({ source: "s", type: "t", subject, data: "x" });
  });
  afterEach(async () => {
    await Promise.all(fakes.splice(0).map((fake) => fake.close()));
    removeTempDirs();
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("iterates pages and subjects, following nextAfter to the end", async () => {
    const client = new EventsDbClient({ url: t.url, token: ADMIN });
    const pages = [];
    for await (const page of client.subjectPages({ limit: 3 })) pages.push(page);
    expect(pages).toEqual([
      { subjects: ["a/1", "a/2", "b"], hasMore: true, nextAfter: "b" },
      { subjects: ["b/1", "b/ü", "c"], hasMore: true, nextAfter: "c" },
      { subjects: ["ü/1"], hasMore: false, nextAfter: "" },
    ]);
    const each: string[] = [];
    for await (const subject of client.eachSubject({ limit: 2 })) each.push(subject);
    expect(each).toEqual(SUBJECTS);
    // The default page (1000) holds everything; the unpaged method is unchanged.
    expect(await client.subjectPage()).toEqual({ subjects: SUBJECTS, hasMore: false, nextAfter: "" });
    expect(await client.subjects("b/")).toEqual(["b/1", "b/ü"]);
    // A cursor with a character outside ASCII travels through the header and back.
    expect(await client.subjectPage({ prefix: "b/", limit: 1, after: "b/1" })).toEqual({
      subjects: ["b/ü"],
      hasMore: false,
      nextAfter: "",
    });
    expect(await client.subjectPage({ limit: 3, after: "a/2" })).toMatchObject({
      hasMore: true,
      nextAfter: "b/ü",
    });
    await expect(client.subjectPage({ limit: 0 })).rejects.toMatchObject({
      status: 400,
      code: "invalid_argument",
    });
  });

  it("pages a narrow token's subjects only", async () => {
    const client = new EventsDbClient({ url: t.url, token: NARROW });
    const pages = [];
    for await (const page of client.subjectPages({ limit: 1 })) pages.push(page.subjects);
    expect(pages).toEqual([["b"], ["b/1"], ["b/ü"]]);
  });

  it("reads a server without paging (no X-Has-More) as one page, and refuses a cursor that stays put", async () => {
    const old = await fakeServer((_, res) => json(res, ["x", "y"]));
    fakes.push(old);
    const pages = [];
    for await (const page of new EventsDbClient({ url: old.url }).subjectPages({ limit: 1 }))
      pages.push(page);
    expect(pages).toEqual([{ subjects: ["x", "y"], hasMore: false, nextAfter: "" }]);
    const stuck = await fakeServer((_, res) =>
      json(res, ["x"], { "x-has-more": "true", "x-next-after": "" }),
    );
    fakes.push(stuck);
    const seen: string[] = [];
    await expect(
      (async () => {
        for await (const subject of new EventsDbClient({ url: stuck.url }).eachSubject()) seen.push(subject);
      })(),
    ).rejects.toThrow(/did not advance/);
    expect(seen).toEqual(["x"]);
  });

  it("eventsdb subjects pages through the list, printing every subject once", async () => {
    // Two pages; a request without limit (the unpaged list) is refused, so the CLI must page.
    const paged = await fakeServer((query, res) => {
      if (query.get("limit") === null) {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: "invalid_argument", message: "page me" } }));
      } else if ((query.get("after") ?? "") === "") {
        json(res, ["p/1", "p/ü"], { "x-has-more": "true", "x-next-after": encodeURIComponent("p/ü") });
      } else json(res, ["q"], { "x-has-more": "false", "x-next-after": "" });
    });
    fakes.push(paged);
    const run = await runCli(["subjects", "--prefix", "p"], {
      env: { ...cleanEnv(), EVENTSDB_URL: paged.url },
      cwd: tempDir("eventsdb-client-"),
    });
    expect(run.code, run.stderr).toBe(0);
    expect(run.out).toBe("p/1\np/ü\nq\n");
    expect(paged.queries.map((q) => [q.get("prefix"), q.get("after"), q.get("limit")])).toEqual([
      ["p", null, "1000"],
      ["p", "p/ü", "1000"],
    ]);
    // And against the real server.
    const real = await runCli(["subjects", "--prefix", "b"], {
      env: { ...cleanEnv(), EVENTSDB_URL: t.url, EVENTSDB_TOKEN: NARROW },
      cwd: tempDir("eventsdb-client-"),
    });
    expect(real.out).toBe("b\nb/1\nb/ü\n");
  });
});
