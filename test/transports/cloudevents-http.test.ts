import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { writeAuthFile } from "../support/auth.js";
import { DIALECTS } from "../support/dialects.js";
import { startTestServer, type TestServer } from "../support/server.js";

/**
 * Issue 12 items 1–3: the CloudEvents HTTP protocol binding as producers use it. The conformance
 * project's receiver cases (test/fixtures/cloudevents-conformance, sent as its `cloudevents send`
 * sends them), the binding spec's examples (binary, structured, batch; charset parameters;
 * extensions with quotes; binary without Content-Type), specversion 0.3, and events without a
 * subject on every REST format.
 */

const FIXTURES = path.join(import.meta.dirname, "../fixtures/cloudevents-conformance");
// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked by value, not by type.
type Json = any;

/** One case as the conformance project's pkg/event.Event reads it (every scalar a string). */
interface ConformanceCase {
  Mode?: string;
  ContextAttributes: Record<string, string> & { Extensions?: Record<string, string> };
  TransportExtensions?: Record<string, string>;
  Data?: string;
}

/** The cases of a fixture file; `failsafe` keeps `1.0` and times as the strings Go's yaml.v2 reads. */
function readCases(file: string): ConformanceCase[] {
  const text = fs.readFileSync(path.join(FIXTURES, file), "utf8");
  return parseAllDocuments(text, { schema: "failsafe" }).map((doc) => doc.toJS() as ConformanceCase);
}

/**
 * The request `cloudevents send` makes of a case: a port of pkg/http/http.go EventToRequest at the
 * fixtures' commit. Values are trimmed and empty ones left out; binary mode (the default) puts
 * the attributes in ce-* headers as they are (no percent-encoding) and Data in the body;
 * structured mode puts them in a JSON object whose `data` is Data as JSON (compacted).
 */
function toRequest(c: ConformanceCase): { headers: Headers; body: Buffer } {
  const headers = new Headers();
  const add = (name: string, value: string | undefined) => {
    const trimmed = value?.trim() ?? "";
    if (trimmed !== "") headers.append(name, trimmed);
  };
  const { Extensions: extensions = {}, ...attributes } = c.ContextAttributes;
  const order = ["specversion", "type", "time", "id", "source", "subject", "schemaurl"] as const;
  if (c.Mode === "structured") {
    const env: Record<string, unknown> = {};
    for (const name of [...order, "datacontenttype", "datacontentencoding"]) {
      const value = attributes[name]?.trim() ?? "";
      if (value !== "") env[name] = value;
    }
    for (const [name, value] of Object.entries(extensions)) if (value.trim() !== "") env[name] = value.trim();
    if ((c.Data ?? "") !== "") env.data = JSON.parse(c.Data as string);
    for (const [name, value] of Object.entries(c.TransportExtensions ?? {})) add(name, value);
    if (!headers.has("content-type")) add("Content-Type", "application/cloudevents+json; charset=UTF-8");
    return { headers, body: Buffer.from(JSON.stringify(env)) };
  }
  for (const name of order) add(`ce-${name}`, attributes[name]);
  add("Content-Type", attributes.datacontenttype);
  add("ce-datacontentencoding", attributes.datacontentencoding);
  for (const [name, value] of Object.entries(extensions)) add(`ce-${name}`, value);
  for (const [name, value] of Object.entries(c.TransportExtensions ?? {})) add(name, value);
  // Bytes: fetch adds no Content-Type of its own, as Go's http.NewRequest adds none.
  return { headers, body: Buffer.from(c.Data ?? "") };
}

const cases = ["v1_minimum.yaml", "v1.yaml", "v03_minimum.yaml", "v03.yaml"].flatMap((file) =>
  readCases(file).map((c, i) => ({ name: `${file} #${i + 1} (${c.Mode ?? "binary"})`, c })),
);

describe.each(DIALECTS)("CloudEvents HTTP binding on $name", (dialect) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-ce-http-"));
  let t: TestServer;
  const ADMIN = "ce-admin-token-0123456";
  const SCOPED = "ce-scoped-token-0123456";
  const admin = { authorization: `Bearer ${ADMIN}` };

  beforeAll(async () => {
    const authFile = writeAuthFile(dir, [
      { name: "admin", token: ADMIN, read: ["*"], write: ["*"] },
      { name: "scoped", token: SCOPED, read: ["a"], write: ["a"] },
    ]);
    t = await startTestServer(await dialect.url(), { "auth-file": authFile });
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const post = (body: string | Buffer, headers: Record<string, string> | Headers) => {
    const all = new Headers(headers);
    for (const [name, value] of Object.entries(admin)) all.set(name, value);
    return fetch(`${t.url}/events`, { method: "POST", headers: all, body });
  };
  /** POSTs, expects 200, returns the ids. */
  const accepted = async (body: string | Buffer, headers: Record<string, string> | Headers) => {
    const res = await post(body, headers);
    const answer = (await res.json()) as Json;
    expect(res.status, JSON.stringify(answer)).toBe(200);
    return (answer.ids ?? [answer.id]) as number[];
  };
  const read = async (id: number, accept = "application/json"): Promise<Json> => {
    const res = await fetch(`${t.url}/events/${id}`, { headers: { ...admin, accept } });
    expect(res.status).toBe(200);
    return res.json();
  };
  const refused = async (body: string, headers: Record<string, string>, message: string) => {
    const res = await post(body, headers);
    expect(res.status).toBe(400);
    expect(((await res.json()) as Json).error.message).toContain(message);
  };

  describe("the conformance project's HTTP receiver cases, sent as `cloudevents send` sends them", () => {
    // Each case to a store of its own, as the project sends each to a receiver: several cases share
    // a (source, id), which one store would rightly answer with the first one's id.
    it.each(cases)("$name is stored and reads back as sent (as 1.0)", async ({ c }) => {
      const own = await startTestServer(await dialect.url());
      try {
        await checkCase(own, c);
      } finally {
        await own.close();
      }
    });
  });

  /** Sends a case to an open server and reads it back in both formats. */
  const checkCase = async (own: TestServer, c: ConformanceCase) => {
    const { headers, body } = toRequest(c);
    const res = await fetch(`${own.url}/events`, { method: "POST", headers, body });
    const answer = (await res.json()) as Json;
    expect(res.status, JSON.stringify(answer)).toBe(200);
    const get = async (accept: string) =>
      (await fetch(`${own.url}/events/${answer.id}`, { headers: { accept } })).json() as Promise<Json>;
    const got = await get("application/cloudevents+json");
    const a = c.ContextAttributes;
    expect(got).toMatchObject({ specversion: "1.0", id: a.id, source: a.source, type: a.type });
    expect(got).not.toHaveProperty("subject");
    if (a.time !== undefined) expect(got.time).toBe(a.time);
    const extensions = Object.fromEntries(Object.entries(a.Extensions ?? {}).map(([k, v]) => [k, v.trim()]));
    expect(got).toMatchObject(extensions);
    const simple = await get("application/json");
    const data = Buffer.from(simple.data, "base64").toString("utf8");
    if (c.Mode === "structured") {
      // The JSON value of Data, as the sender's json.Marshal wrote it.
      expect(JSON.parse(data)).toEqual(JSON.parse(c.Data as string));
      expect(simple.datacontenttype).toBe(a.datacontenttype);
    } else {
      expect(data).toBe(c.Data ?? "");
      expect(simple.datacontenttype).toBe(a.datacontenttype?.trim());
    }
  };

  describe("the binding spec's examples (http-protocol-binding.md §3.1.4, §3.2.4, §3.3.3)", () => {
    it("binary mode with a charset parameter on Content-Type", async () => {
      const [id] = await accepted('{"hello": "world"}', {
        "ce-specversion": "1.0",
        "ce-type": "com.example.someevent",
        "ce-time": "2018-04-05T03:56:24Z",
        "ce-id": "spec-binary-1",
        "ce-source": "/mycontext/subcontext",
        "Content-Type": "application/json; charset=utf-8",
      });
      const got = await read(id as number, "application/cloudevents+json");
      expect(got).toEqual({
        specversion: "1.0",
        id: "spec-binary-1",
        source: "/mycontext/subcontext",
        type: "com.example.someevent",
        time: "2018-04-05T03:56:24Z",
        datacontenttype: "application/json; charset=utf-8",
        data: { hello: "world" },
        // The server's chain attributes (unsigned: this server has no signing key).
        eventsdbhash: expect.stringMatching(/^[0-9a-f]{64}$/),
        eventsdbprevhash: expect.stringMatching(/^[0-9a-f]{64}$/),
      });
    });

    it.each([
      "application/cloudevents+json; charset=utf-8",
      "application/cloudevents+json; charset=UTF-8",
      "Application/CloudEvents+JSON;charset=utf-8",
    ])("structured mode as %s", async (contentType) => {
      const ce = {
        specversion: "1.0",
        type: "com.example.someevent",
        id: `spec-structured-${contentType}`,
        source: "/mycontext/subcontext",
        data: { application: "data" },
      };
      const [id] = await accepted(JSON.stringify(ce), { "Content-Type": contentType });
      expect(await read(id as number, "application/cloudevents+json")).toMatchObject(ce);
    });

    it("batched mode with a charset parameter: both events, in order", async () => {
      const batch = [
        {
          specversion: "1.0",
          type: "com.example.someevent",
          id: "spec-batch-1",
          source: "/b",
          data: { n: 1 },
        },
        {
          specversion: "1.0",
          type: "com.example.someotherevent",
          id: "spec-batch-2",
          source: "/b",
          data: { n: 2 },
        },
      ];
      const ids = await accepted(JSON.stringify(batch), {
        "Content-Type": "application/cloudevents-batch+json; charset=utf-8",
      });
      expect(ids).toHaveLength(2);
      for (const [i, id] of ids.entries()) {
        expect(await read(id, "application/cloudevents+json")).toMatchObject(batch[i] as object);
      }
    });

    it("binary mode without Content-Type: the data as sent, no datacontenttype", async () => {
      const res = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { ...admin, "ce-specversion": "1.0", "ce-id": "no-ct", "ce-source": "/s", "ce-type": "t" },
        // A Buffer body: fetch adds no Content-Type of its own.
        body: Buffer.from([0xde, 0xad, 0xbe, 0xef]),
      });
      expect(res.status).toBe(200);
      const got = await read(((await res.json()) as Json).id);
      expect(got.data).toBe("3q2+7w==");
      expect(got).not.toHaveProperty("datacontenttype");
    });

    it("extensions whose values contain quotes: percent-encoded, as a quoted-string, and raw", async () => {
      const [id] = await accepted("x", {
        "ce-specversion": "1.0",
        "ce-id": "quotes-binary",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-encoded": "say%20%22hi%22",
        "ce-quoted": '"say \\"hi\\" \\\\ bye"',
        "ce-raw": '{"othervalue": 5}',
        "content-type": "text/plain",
      });
      expect((await read(id as number)).extensions).toEqual({
        encoded: 'say "hi"',
        quoted: 'say "hi" \\ bye',
        raw: '{"othervalue": 5}',
      });
      const [structured] = await accepted(
        JSON.stringify({
          specversion: "1.0",
          id: "quotes-structured",
          source: "/s",
          type: "t",
          ext: 'a "b" \\ c',
        }),
        { "content-type": "application/cloudevents+json" },
      );
      expect((await read(structured as number, "application/cloudevents+json")).ext).toBe('a "b" \\ c');
    });
  });

  describe("specversion 0.3, stored as 1.0", () => {
    it("structured, batched and binary, with schemaurl and base64 data", async () => {
      const base = { specversion: "0.3", source: "/v03", type: "t", schemaurl: "https://example.com/s.json" };
      const [structured] = await accepted(
        JSON.stringify({
          ...base,
          id: "v03-s",
          datacontenttype: "image/png",
          datacontentencoding: "base64",
          data: "iVBORw==",
        }),
        { "content-type": "application/cloudevents+json" },
      );
      const [batched] = await accepted(JSON.stringify([{ ...base, id: "v03-b", data: { a: 1 } }]), {
        "content-type": "application/cloudevents-batch+json",
      });
      const [binary] = await accepted("iVBORw==", {
        "ce-specversion": "0.3",
        "ce-id": "v03-bin",
        "ce-source": "/v03",
        "ce-type": "t",
        "ce-schemaurl": "https://example.com/s.json",
        "ce-datacontentencoding": "base64",
        "content-type": "image/png",
      });
      for (const id of [structured, batched, binary] as number[]) {
        const got = await read(id, "application/cloudevents+json");
        expect(got).toMatchObject({ specversion: "1.0", dataschema: "https://example.com/s.json" });
        expect(got).not.toHaveProperty("schemaurl");
        expect(got).not.toHaveProperty("datacontentencoding");
      }
      expect((await read(structured as number)).data).toBe("iVBORw==");
      expect((await read(binary as number)).data).toBe("iVBORw==");
      expect((await read(batched as number, "application/cloudevents+json")).data).toEqual({ a: 1 });
    });

    it("refuses other versions with 400 in every mode", async () => {
      const ce = { specversion: "0.2", id: "v02", source: "/s", type: "t" };
      await refused(
        JSON.stringify(ce),
        { "content-type": "application/cloudevents+json" },
        'specversion must be "1.0" or "0.3"',
      );
      await refused(
        JSON.stringify([ce]),
        { "content-type": "application/cloudevents-batch+json" },
        "event 0: specversion",
      );
      await refused(
        "",
        { "ce-specversion": "0.2", "ce-id": "v02", "ce-source": "/s", "ce-type": "t" },
        "ce-specversion",
      );
    });
  });

  describe("events without a subject", () => {
    it("are stored from every REST format, read back without one, and only by all-subject reads", async () => {
      const ids = [
        ...(await accepted(JSON.stringify({ source: "/none", type: "t", data: "" }), {
          "content-type": "application/json",
        })),
        ...(await accepted(JSON.stringify([{ source: "/none", type: "t" }]), {
          "content-type": "application/json",
        })),
        ...(await accepted(JSON.stringify({ specversion: "1.0", id: "none-s", source: "/none", type: "t" }), {
          "content-type": "application/cloudevents+json",
        })),
        ...(await accepted(
          JSON.stringify([{ specversion: "1.0", id: "none-b", source: "/none", type: "t" }]),
          {
            "content-type": "application/cloudevents-batch+json",
          },
        )),
        ...(await accepted("", {
          "ce-specversion": "1.0",
          "ce-id": "none-bin",
          "ce-source": "/none",
          "ce-type": "t",
        })),
      ];
      await accepted(JSON.stringify({ source: "/none", type: "t", subject: "a/1" }), {
        "content-type": "application/json",
      });
      for (const id of ids) {
        expect(await read(id)).not.toHaveProperty("subject");
        expect(await read(id, "application/cloudevents+json")).not.toHaveProperty("subject");
      }
      const page = async (query: string) => {
        const res = await fetch(`${t.url}/events?${query}&limit=1000`, { headers: admin });
        return ((await res.json()) as Json).events.map((e: Json) => e.id) as number[];
      };
      expect(await page("")).toEqual(expect.arrayContaining(ids));
      for (const query of ["subject=a", "subject=a&recursive=true", "subject=a/1"]) {
        expect(await page(query), query).not.toEqual(expect.arrayContaining([ids[0]]));
      }
      const subjects = (await (await fetch(`${t.url}/subjects`, { headers: admin })).json()) as string[];
      expect(subjects).toContain("a/1");
      expect(subjects).not.toContain("");
    });

    it("need the write scope * : a token for some subjects gets 403 and stores nothing", async () => {
      const res = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { authorization: `Bearer ${SCOPED}`, "content-type": "application/json" },
        body: JSON.stringify([
          { source: "/scoped", type: "t", subject: "a/2" },
          { source: "/scoped", type: "t" },
        ]),
      });
      expect(res.status).toBe(403);
      expect(((await res.json()) as Json).error.message).toBe(
        'token scoped may not write events without a subject (that needs the write scope "*")',
      );
      const mine = await fetch(`${t.url}/events?subject=a&recursive=true&limit=1000`, {
        headers: { authorization: `Bearer ${SCOPED}` },
      });
      expect(((await mine.json()) as Json).events.filter((e: Json) => e.source === "/scoped")).toEqual([]);
    });

    it("refuses an empty subject in every format", async () => {
      const message = "subject must not be empty";
      await refused(
        JSON.stringify({ source: "s", type: "t", subject: "" }),
        { "content-type": "application/json" },
        message,
      );
      await refused(
        JSON.stringify({ specversion: "1.0", id: "e", source: "s", type: "t", subject: "" }),
        { "content-type": "application/cloudevents+json" },
        message,
      );
      await refused(
        "",
        { "ce-specversion": "1.0", "ce-id": "e", "ce-source": "s", "ce-type": "t", "ce-subject": "" },
        message,
      );
    });
  });
});
