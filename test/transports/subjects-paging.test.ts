import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeAuthFile } from "../support/auth.js";
import { DIALECTS } from "../support/dialects.js";
import { CONNECT_KINDS, type ConnectPeer, connectPeer } from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";

const ADMIN = "admin-token";
const NARROW = "narrow-token";
/** What the narrow token reads: p/b and below. */
const SCOPE = "p/b";
const SUBJECTS = ["p/a", "p/b", "p/b/1", "p/b/2", "p/b/é", "p/ba", "p/c", "q", "r/1", "é/1"];
const READABLE = ["p/b", "p/b/1", "p/b/2", "p/b/é"];

describe.each(DIALECTS)("paged subjects over REST and Connect on $name", (dialect) => {
  let t: TestServer;
  let dir: string;
  const peers = new Map<string, ConnectPeer>();
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-subjects-"));
    const authFile = writeAuthFile(dir, [
      { name: "admin", token: ADMIN, read: ["*"], write: ["*"] },
      { name: "narrow", token: NARROW, read: [SCOPE], write: [] },
    ]);
    t = await startTestServer(await dialect.url(), { "auth-file": authFile });
    for (const kind of CONNECT_KINDS) peers.set(kind, connectPeer(kind, t));
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { ...auth(ADMIN), "content-type": "application/json" },
      body: JSON.stringify(
        [...SUBJECTS, ...SUBJECTS].map((subject) => ({ source: "s", type: "t", subject })),
      ),
    });
    expect(res.status).toBe(200);
  });

  afterAll(async () => {
    for (const peer of peers.values()) peer.close();
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const get = (query: string, token = ADMIN) => fetch(`${t.url}/subjects${query}`, { headers: auth(token) });

  /** Every REST page from the first, following X-Next-After. */
  const restPages = async (query: string, token = ADMIN) => {
    const pages: string[][] = [];
    let after = "";
    for (;;) {
      const res = await get(`?${query}&after=${encodeURIComponent(after)}`, token);
      expect(res.status).toBe(200);
      const page = (await res.json()) as string[];
      pages.push(page);
      if (res.headers.get("x-has-more") !== "true") {
        expect(res.headers.get("x-has-more")).toBe("false");
        expect(res.headers.get("x-next-after")).toBe("");
        return pages;
      }
      after = decodeURIComponent(res.headers.get("x-next-after") ?? "");
      expect(after).toBe(page.at(-1));
      if (pages.length > SUBJECTS.length) throw new Error("paging did not end");
    }
  };

  it("answers the whole array without limit or after, as the Go service does", async () => {
    const res = await get("");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.json()).toEqual(SUBJECTS);
    expect(res.headers.get("x-has-more")).toBe("false");
    expect(await (await get("?prefix=p/b")).json()).toEqual(["p/b", "p/b/1", "p/b/2", "p/b/é", "p/ba"]);
  });

  it("pages over REST with limit and after, the cursor percent-encoded in X-Next-After", async () => {
    expect(await restPages("limit=3")).toEqual([
      SUBJECTS.slice(0, 3),
      SUBJECTS.slice(3, 6),
      SUBJECTS.slice(6, 9),
      ["é/1"],
    ]);
    expect((await restPages("limit=2&prefix=p/b/")).flat()).toEqual(["p/b/1", "p/b/2", "p/b/é"]);
    const res = await get("?limit=5&prefix=p/b");
    expect(res.headers.get("x-has-more")).toBe("false");
    const page = await get("?limit=4&prefix=p/b");
    expect(page.headers.get("x-has-more")).toBe("true");
    expect(page.headers.get("x-next-after")).toBe(encodeURIComponent("p/b/é"));
    // `after` alone: the rest, unpaged.
    expect(await (await get("?after=p/c")).json()).toEqual(["q", "r/1", "é/1"]);
  });

  it("pages a narrow token's readable subjects only, each page full, to the end", async () => {
    expect(await (await get("", NARROW)).json()).toEqual(READABLE);
    expect(await restPages("limit=1", NARROW)).toEqual(READABLE.map((s) => [s]));
    expect(await restPages("limit=3", NARROW)).toEqual([READABLE.slice(0, 3), READABLE.slice(3)]);
  });

  it("refuses bad limits and repeated parameters with 400 invalid_argument", async () => {
    for (const query of [
      "?limit=0",
      "?limit=1001",
      "?limit=abc",
      "?limit=-1",
      "?limit=",
      "?limit=1&limit=2",
      "?after=a&after=b",
    ]) {
      const res = await get(query);
      expect(res.status, query).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code, query).toBe("invalid_argument");
    }
    expect((await get(`?limit=1&after=${"x".repeat(1025)}`)).status).toBe(400);
    // Odd cursors are just strings to sort after: a NUL, a lone surrogate, the last code point.
    for (const after of ["%00", "%ED%A0%80", "%F4%8F%BF%BF", "%FF"]) {
      const res = await get(`?limit=2&after=${after}`);
      expect(res.status, after).toBe(200);
      expect(Array.isArray(await res.json())).toBe(true);
    }
    expect(await (await get("?limit=2&after=%00")).json()).toEqual(SUBJECTS.slice(0, 2));
  });

  it.each(CONNECT_KINDS)("pages ListSubjects over %s", async (kind) => {
    const client = (peers.get(kind) as ConnectPeer).client;
    const headers = (token: string) => ({ headers: auth(token) });
    // An old client (no after, no limit): everything, has_more false.
    expect(await client.listSubjects({}, headers(ADMIN))).toMatchObject({
      subjects: SUBJECTS,
      hasMore: false,
      nextAfter: "",
    });
    for (const [token, expected] of [
      [ADMIN, SUBJECTS],
      [NARROW, READABLE],
    ] as const) {
      const seen: string[] = [];
      let after: string | undefined;
      for (let pages = 0; ; pages++) {
        const reply = await client.listSubjects({ limit: 3, after }, headers(token));
        seen.push(...reply.subjects);
        if (!reply.hasMore) break;
        expect(reply.subjects.length).toBe(3);
        expect(reply.nextAfter).toBe(reply.subjects.at(-1));
        after = reply.nextAfter;
        expect(pages).toBeLessThan(SUBJECTS.length);
      }
      expect(seen, token).toEqual(expected);
    }
    expect(
      (await client.listSubjects({ prefix: "p/b/", after: "p/b/1", limit: 1 }, headers(ADMIN))).subjects,
    ).toEqual(["p/b/2"]);
    for (const limit of [0, -1, 1001]) {
      const error = await client.listSubjects({ limit }, headers(ADMIN)).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(error?.code, `limit ${limit}`).toBe(Code.InvalidArgument);
    }
  });
});
