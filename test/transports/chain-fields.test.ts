import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventsDbClient, EventsDbError } from "../../src/client/lib/index.js";
import {
  type ChainLinkJson,
  ChainVerifier,
  chainHash,
  GENESIS_HASH,
  linkFromJson,
} from "../../src/events/chain.js";
import { writeAuthFile } from "../support/auth.js";
import { DIALECTS } from "../support/dialects.js";
import {
  CONNECT_KINDS,
  type ConnectPeer,
  connectPeer,
  GrpcJsClient,
  openConnectStream,
  type ProtoEvent,
} from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

/**
 * Issue 13, the chain on the wire: every read path shows each event's hash, its predecessor's and
 * its signature without changing the fields old clients know (REST simple and CloudEvents, the
 * CloudEvents batch, SSE in both formats, Connect, gRPC-Web and gRPC — a stored event and a live
 * one); nobody can append those attribute names; a deleted event is gone from every read but its
 * tombstone stays in GET /events/chain and GetChain; the chain is for tokens that read everything;
 * the public key at /.well-known/eventsdb/signing-key verifies the signatures, and the chain read
 * through the client library verifies with ChainVerifier.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh Ed25519 key file (PKCS#8 PEM) and its public key (SPKI PEM). */
function signingKey(): { file: string; publicPem: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-chain-key-"));
  dirs.push(dir);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const file = path.join(dir, "signing.pem");
  fs.writeFileSync(file, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  return { file, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

/** The chain fields as lowercase hex, whatever the transport carried. */
interface Fields {
  readonly hash: string | undefined;
  readonly prevhash: string | undefined;
  readonly signature: string | undefined;
}

const fromSimple = (event: Record<string, unknown>): Fields => ({
  hash: event.hash as string | undefined,
  prevhash: event.prevhash as string | undefined,
  signature: event.signature as string | undefined,
});
const fromCloudEvent = (event: Record<string, unknown>): Fields => ({
  hash: event.eventsdbhash as string | undefined,
  prevhash: event.eventsdbprevhash as string | undefined,
  signature: event.eventsdbsignature as string | undefined,
});
const hex = (bytes: Uint8Array | undefined): string | undefined =>
  bytes === undefined || bytes.length === 0 ? undefined : Buffer.from(bytes).toString("hex");
const fromProto = (event: {
  hash: Uint8Array;
  prevHash?: Uint8Array;
  prev_hash?: Uint8Array;
  signature: Uint8Array;
}): Fields => ({
  hash: hex(event.hash),
  prevhash: hex(event.prevHash ?? event.prev_hash),
  signature: hex(event.signature),
});
const fromLink = (link: ChainLinkJson): Fields => ({
  hash: link.hash,
  prevhash: link.prevhash,
  signature: link.signature,
});

let unique = 0;

describe.each(DIALECTS)("the chain on every read path on $name", (dialect) => {
  let t: TestServer;
  let key: { file: string; publicPem: string };
  let client: EventsDbClient;
  const peers: ConnectPeer[] = [];
  let grpcJs: GrpcJsClient;

  beforeAll(async () => {
    key = signingKey();
    t = await startTestServer(await dialect.url(), { "signing-key-file": key.file });
    client = new EventsDbClient({ url: t.url, timeoutMs: 10_000 });
    for (const kind of CONNECT_KINDS) peers.push(connectPeer(kind, t));
    grpcJs = new GrpcJsClient(t.server.grpcPort);
  });
  afterAll(async () => {
    for (const peer of peers) peer.close();
    grpcJs?.close();
    await t?.close();
  });

  /** The whole chain through the client library: the truth every read is compared with. */
  const chainOf = async (): Promise<Map<number, ChainLinkJson>> => {
    const links = new Map<number, ChainLinkJson>();
    for await (const link of client.chain({ limit: 7 })) links.set(link.id, link);
    return links;
  };

  const appendSimple = async (subject: string, data: string): Promise<number> =>
    client.append({ source: "chain", type: "t", subject, data });

  it("a stored and a live event carry hash, prevhash and signature on REST, SSE, Connect, gRPC-Web and gRPC", async () => {
    const subject = `chain/fields/${++unique}`;
    const stored = await client.appendCloudEvent({
      id: `stored-${unique}`,
      source: "chain",
      type: "t",
      subject,
      datacontenttype: "application/json",
      data: { n: 1 },
      ext1: "kept",
    });

    // Streams from just before the stored event: it comes from the store, the next one live.
    const from = stored - 1;
    const query = `subject=${encodeURIComponent(subject)}&from_id=${from}`;
    const sseSimple = await openStream(`${t.url}/events/stream?${query}`);
    const sseCloud = await openStream(`${t.url}/events/stream?${query}&format=cloudevents`);
    const connectStreams = peers.map((peer) =>
      openConnectStream((signal) =>
        peer.client.streamEventsFromSubject({ subject, fromId: BigInt(from) }, { signal }),
      ),
    );
    const grpcStream = grpcJs.stream({ subject, from_id: String(from) });
    const streamed = (): number[][] => [
      sseSimple.parser.ids(),
      sseCloud.parser.ids(),
      ...connectStreams.map((s) => s.ids()),
      grpcStream.ids(),
    ];
    try {
      await waitUntil(
        () => streamed().every((ids) => ids.includes(stored)),
        "the stored event on every stream",
      );
      const live = await appendSimple(subject, "live");
      await waitUntil(() => streamed().every((ids) => ids.includes(live)), "the live event on every stream");

      const chain = await chainOf();
      for (const id of [stored, live]) {
        const truth = chain.get(id);
        expect(truth, `event ${id} in the chain`).toBeDefined();
        const want = fromLink(truth as ChainLinkJson);
        expect(want.hash).toMatch(/^[0-9a-f]{64}$/);
        expect(want.prevhash).toMatch(/^[0-9a-f]{64}$/);
        expect(want.signature).toMatch(/^[0-9a-f]{128}$/);
        expect(
          verify(
            null,
            Buffer.from(want.hash ?? "", "hex"),
            key.publicPem,
            Buffer.from(want.signature ?? "", "hex"),
          ),
        ).toBe(true);
        const seen: [string, Fields][] = [];

        const simple = (await (await fetch(`${t.url}/events/${id}`)).json()) as Record<string, unknown>;
        seen.push(["REST simple by id", fromSimple(simple)]);
        const compat = (await (await fetch(`${t.url}/events/get?id=${id}`)).json()) as Record<
          string,
          unknown
        >;
        seen.push(["REST simple /events/get", fromSimple(compat)]);
        const page = (await (
          await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}`)
        ).json()) as {
          events: Record<string, unknown>[];
        };
        seen.push(["REST simple page", fromSimple(page.events.find((e) => e.id === id) ?? {})]);
        const ce = (await (
          await fetch(`${t.url}/events/${id}`, { headers: { accept: "application/cloudevents+json" } })
        ).json()) as Record<string, unknown>;
        seen.push(["REST CloudEvent", fromCloudEvent(ce)]);
        const batchResponse = await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}`, {
          headers: { accept: "application/cloudevents-batch+json" },
        });
        const batch = (await batchResponse.json()) as Record<string, unknown>[];
        const position = [stored, live].indexOf(id);
        seen.push(["REST CloudEvents batch", fromCloudEvent(batch[position] ?? {})]);
        const sseAt = (s: typeof sseSimple) =>
          JSON.parse(s.parser.events.find((e) => Number(e.id) === id)?.data ?? "{}") as Record<
            string,
            unknown
          >;
        seen.push(["SSE simple", fromSimple(sseAt(sseSimple))]);
        seen.push(["SSE cloudevents", fromCloudEvent(sseAt(sseCloud))]);
        for (const [i, peer] of peers.entries()) {
          const kind = CONNECT_KINDS[i];
          seen.push([`${kind} GetEventByID`, fromProto(await peer.client.getEventByID({ id: BigInt(id) }))]);
          const historic = await peer.client.getHistoricEventsFromSubject({ subject, fromId: BigInt(from) });
          const inPage = historic.events.find((e) => Number(e.id) === id);
          expect(inPage, `${kind} page holds ${id}`).toBeDefined();
          if (inPage !== undefined) seen.push([`${kind} GetHistoricEventsFromSubject`, fromProto(inPage)]);
          const streamedEvent = (connectStreams[i]?.replies ?? [])
            .flatMap((r) => r.events as unknown as ProtoEventLike[])
            .find((e) => Number(e.id) === id);
          expect(streamedEvent, `${kind} stream holds ${id}`).toBeDefined();
          if (streamedEvent !== undefined)
            seen.push([`${kind} StreamEventsFromSubject`, fromProto(streamedEvent)]);
        }
        const byGrpcJs = await grpcJs.unary("GetEventByID", { id: String(id) });
        seen.push(["grpc-js GetEventByID", fromProto(byGrpcJs)]);
        const grpcStreamed = grpcStream.replies.flatMap((r) => r.events).find((e) => Number(e.id) === id);
        seen.push(["grpc-js stream", fromProto(grpcStreamed as ProtoEvent)]);

        for (const [where, fields] of seen) expect(fields, `${where}, event ${id}`).toEqual(want);
      }
      // What old clients know is unchanged: the simple format's own members keep their values.
      const simple = (await (await fetch(`${t.url}/events/${stored}`)).json()) as Record<string, unknown>;
      expect(simple).toMatchObject({
        id: stored,
        source: "chain",
        type: "t",
        subject,
        ce_id: `stored-${unique}`,
      });
      expect(simple.extensions).toEqual({ ext1: "kept" });
      expect(Object.keys(simple).slice(-3)).toEqual(["hash", "prevhash", "signature"]);
    } finally {
      sseSimple.close();
      sseCloud.close();
      for (const s of connectStreams) s.close();
      grpcStream.cancel();
    }
  });

  it("refuses the chain's attribute names on append, on every content mode and on gRPC, and stores nothing", async () => {
    const subject = `chain/refused/${++unique}`;
    for (const name of ["eventsdbhash", "eventsdbprevhash", "eventsdbsignature"]) {
      const event = {
        specversion: "1.0",
        id: `r-${name}`,
        source: "chain",
        type: "t",
        subject,
        [name]: "00",
      };
      const structured = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/cloudevents+json" },
        body: JSON.stringify(event),
      });
      const batch = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/cloudevents-batch+json" },
        body: JSON.stringify([{ ...event, id: `ok-${name}`, [name]: undefined }, event]),
      });
      const binary = await fetch(`${t.url}/events`, {
        method: "POST",
        headers: {
          "content-type": "text/plain",
          "ce-specversion": "1.0",
          "ce-id": `b-${name}`,
          "ce-source": "chain",
          "ce-type": "t",
          "ce-subject": subject,
          [`ce-${name}`]: "00",
        },
        body: "x",
      });
      for (const [mode, response] of [
        ["structured", structured],
        ["batch", batch],
        ["binary", binary],
      ] as const) {
        expect(response.status, `${mode} ${name}`).toBe(400);
        const body = (await response.json()) as { error: { code: string; message: string } };
        expect(body.error.code).toBe("invalid_argument");
        expect(body.error.message, mode).toContain(`${name} is set by the server`);
      }
      for (const [i, peer] of peers.entries()) {
        const refused = await peer.client
          .createEvent({ source: "chain", type: "t", subject, id: `g-${name}`, extensions: { [name]: "00" } })
          .then(
            () => undefined,
            (error: unknown) => ConnectError.from(error),
          );
        expect(refused?.code, `${CONNECT_KINDS[i]} ${name}`).toBe(Code.InvalidArgument);
        expect(refused?.rawMessage).toContain(`${name} is set by the server`);
      }
    }
    const left = (await (await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}`)).json()) as {
      events: unknown[];
    };
    expect(left.events).toEqual([]);
  });

  it("a deleted event is gone from every read, its tombstone stays in the chain, and the chain verifies", async () => {
    const subject = `chain/deleted/${++unique}`;
    const keep = await appendSimple(`${subject}-kept`, "kept");
    const gone = await appendSimple(subject, "gone");
    const after = await appendSimple(`${subject}-kept`, "after");
    expect(await client.delete({ subject })).toBe(1);

    // Every read skips it.
    expect((await fetch(`${t.url}/events/${gone}`)).status).toBe(404);
    expect((await fetch(`${t.url}/events/get?id=${gone}`)).status).toBe(404);
    const page = (await (await fetch(`${t.url}/events?from_id=${keep - 1}`)).json()) as {
      events: { id: number }[];
    };
    expect(page.events.map((e) => e.id)).toEqual([keep, after]);
    const ceBatch = (await (
      await fetch(`${t.url}/events?from_id=${keep - 1}`, {
        headers: { accept: "application/cloudevents-batch+json" },
      })
    ).json()) as { id: string }[];
    expect(ceBatch.map((e) => e.id)).toEqual([String(keep), String(after)]);
    const sse = await openStream(`${t.url}/events/stream?from_id=${keep - 1}`);
    try {
      await waitUntil(() => sse.parser.ids().includes(after), "the stream's catch-up");
      expect(sse.parser.ids()).toEqual([keep, after]);
    } finally {
      sse.close();
    }
    for (const [i, peer] of peers.entries()) {
      const missing = await peer.client.getEventByID({ id: BigInt(gone) }).then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      );
      expect(missing?.code, CONNECT_KINDS[i]).toBe(Code.NotFound);
      const historic = await peer.client.getHistoricEventsFromSubject({
        subject: "",
        fromId: BigInt(keep - 1),
      });
      expect(historic.events.map((e) => Number(e.id))).toEqual([keep, after]);
    }

    // The chain keeps its tombstone: REST (through the client library) and GetChain.
    const chain = await chainOf();
    const tombstone = chain.get(gone);
    expect(tombstone).toMatchObject({ id: gone, deleted: true });
    expect(Object.keys(tombstone ?? {}).sort()).toEqual(["deleted", "hash", "id", "prevhash", "signature"]);
    expect(chain.get(after)?.prevhash).toBe(tombstone?.hash);
    for (const [i, peer] of peers.entries()) {
      const reply = await peer.client.getChain({ fromId: BigInt(keep - 1), limit: 3 });
      expect(
        reply.links.map((l) => Number(l.id)),
        CONNECT_KINDS[i],
      ).toEqual([keep, gone, after]);
      const [, dead, last] = reply.links;
      expect(dead?.deleted).toBe(true);
      expect(dead?.event).toBeUndefined();
      expect(fromProto(dead ?? { hash: new Uint8Array(), signature: new Uint8Array() })).toEqual(
        fromLink(tombstone as ChainLinkJson),
      );
      expect(last?.deleted).toBe(false);
      expect(fromProto(last?.event ?? { hash: new Uint8Array(), signature: new Uint8Array() })).toEqual(
        fromLink(chain.get(after) as ChainLinkJson),
      );
    }
    const byGrpcJs = await grpcJs.unary("GetChain", { from_id: String(keep - 1), limit: 3 });
    expect(byGrpcJs.links.map((l) => [Number(l.id), l.deleted, l.event === null])).toEqual([
      [keep, false, false],
      [gone, true, true],
      [after, false, false],
    ]);

    // The whole chain, tombstone included, verifies with the served key.
    const served = await client.signingKey();
    expect(served).toBe(key.publicPem);
    const verifier = new ChainVerifier(served);
    for (const link of chain.values())
      expect(verifier.check(linkFromJson(link)), `link ${link.id}`).toBeUndefined();
    expect(verifier.checked).toBe(chain.size);
    expect(verifier.lastId).toBe(after);
  });

  it("GetChain carries what recomputes each hash: the event, its canonical extensions, its predecessor's hash", async () => {
    const subject = `chain/grpc/${++unique}`;
    const id = await client.appendCloudEvent({
      id: `g-${unique}`,
      source: "chain",
      type: "t",
      subject,
      time: "2026-01-02T03:04:05.5Z",
      n: 7,
      flag: true,
      s: "text",
      data: "plain",
      datacontenttype: "text/plain",
    });
    const peer = peers[0] as ConnectPeer;
    const reply = await peer.client.getChain({ fromId: BigInt(id - 1), limit: 1 });
    const link = reply.links[0];
    const event = link?.event;
    expect(link?.extensionsJson).toBe('{"flag":true,"n":7,"s":"text"}');
    if (link === undefined || event === undefined) throw new Error("no link");
    const recomputed = chainHash(id, Buffer.from(link.prevHash), {
      source: event.source,
      type: event.type,
      subject: event.subject,
      ceId: event.ceId,
      time: "2026-01-02T03:04:05.500000Z",
      datacontenttype: event.datacontenttype,
      dataschema: undefined,
      extensions: JSON.parse(link.extensionsJson),
      data: Buffer.from(event.data),
    });
    expect(recomputed.toString("hex")).toBe(hex(link.hash));
    expect(Buffer.from(link.hash).equals(Buffer.from(event.hash))).toBe(true);
    expect(reply.hasMore).toBe(false);
    expect(Number(reply.nextFromId)).toBe(id);
  });
});

/** An Event message as connect-node decodes it (the fields the comparison reads). */
interface ProtoEventLike {
  id: bigint;
  hash: Uint8Array;
  prevHash: Uint8Array;
  signature: Uint8Array;
}

describe("GET /events/chain and GetChain: pages, limits and the byte budget", () => {
  const dialect = DIALECTS[0];
  let t: TestServer;
  const BUDGET = 3000;

  beforeAll(async () => {
    if (dialect === undefined) throw new Error("no dialect");
    t = await startTestServer(await dialect.url(), { "client-buffer-bytes": String(BUDGET) });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("pages like GET /events: limit, from_id, next_from_id, has_more, at most the byte budget (one link always)", async () => {
    const client = new EventsDbClient({ url: t.url });
    const big = "x".repeat(BUDGET - 100);
    const ids: number[] = [];
    for (let i = 0; i < 3; i++)
      ids.push(await client.append({ source: "s", type: "t", subject: "budget", data: big }));
    const first = (await (await fetch(`${t.url}/events/chain?limit=10`)).json()) as {
      links: ChainLinkJson[];
      has_more: boolean;
      next_from_id: number;
    };
    expect(first.links.map((l) => l.id)).toEqual([ids[0]]);
    expect(first).toMatchObject({ has_more: true, next_from_id: ids[0] });
    expect(first.links[0]?.prevhash).toBe(GENESIS_HASH.toString("hex"));
    const last = (await (await fetch(`${t.url}/events/chain?from_id=${ids[1]}&limit=10`)).json()) as {
      links: ChainLinkJson[];
      has_more: boolean;
      next_from_id: number;
    };
    expect(last).toMatchObject({ has_more: false, next_from_id: ids[2] });
    const empty = (await (await fetch(`${t.url}/events/chain?from_id=${ids[2]}`)).json()) as object;
    expect(empty).toEqual({ links: [], has_more: false, next_from_id: ids[2] });
    // The pager follows next_from_id to the end; without a signing key there are no signatures.
    const all: ChainLinkJson[] = [];
    for await (const link of client.chain()) all.push(link);
    expect(all.map((l) => l.id)).toEqual(ids);
    expect(all.every((l) => l.signature === undefined)).toBe(true);

    for (const bad of ["limit=0", "limit=1001", "from_id=-1", "limit=x", "from_id=1&from_id=2"]) {
      const response = await fetch(`${t.url}/events/chain?${bad}`);
      expect(response.status, bad).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe("invalid_argument");
    }
    const peer = connectPeer("connect (HTTP/1.1)", t);
    try {
      const paged = await peer.client.getChain({ limit: 10 });
      expect(paged.links.map((l) => Number(l.id))).toEqual([ids[0]]);
      expect(paged.hasMore).toBe(true);
      const refused = await peer.client.getChain({ limit: 0 }).then(
        () => undefined,
        (error: unknown) => ConnectError.from(error),
      );
      expect(refused?.code).toBe(Code.InvalidArgument);
    } finally {
      peer.close();
    }
  });

  it("serves no signing key without --signing-key-file: 404 with the error JSON, and signingKey() is undefined", async () => {
    const response = await fetch(`${t.url}/.well-known/eventsdb/signing-key`);
    expect(response.status).toBe(404);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await response.json()).toEqual({
      error: { code: "not_found", message: "this server does not sign events (no --signing-key-file)" },
    });
    expect(await new EventsDbClient({ url: t.url }).signingKey()).toBeUndefined();
  });
});

describe("who may read the chain and the key", () => {
  const dialect = DIALECTS[0];
  const ADMIN = "chain-admin-token-0123456";
  const NARROW = "chain-narrow-token-789012";
  let t: TestServer;
  let key: { file: string; publicPem: string };

  beforeAll(async () => {
    if (dialect === undefined) throw new Error("no dialect");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-chain-auth-"));
    dirs.push(dir);
    const authFile = writeAuthFile(dir, [
      { name: "admin", token: ADMIN, read: ["*"], write: ["*"] },
      { name: "narrow", token: NARROW, read: ["a", "b"], write: ["a"] },
    ]);
    key = signingKey();
    t = await startTestServer(await dialect.url(), { "auth-file": authFile, "signing-key-file": key.file });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("only a token with the read scope * reads the chain: 403 permission_denied otherwise, 401 without a token", async () => {
    const admin = new EventsDbClient({ url: t.url, token: ADMIN });
    const narrow = new EventsDbClient({ url: t.url, token: NARROW });
    await narrow.append({ source: "s", type: "t", subject: "a", data: "mine" });
    const links: ChainLinkJson[] = [];
    for await (const link of admin.chain()) links.push(link);
    expect(links).toHaveLength(1);

    const refused = await fetch(`${t.url}/events/chain`, { headers: { authorization: `Bearer ${NARROW}` } });
    expect(refused.status).toBe(403);
    const body = (await refused.json()) as { error: { code: string; message: string } };
    expect(body.error).toEqual({
      code: "permission_denied",
      message: 'token narrow may not read the chain: that needs the read scope "*"',
    });
    await expect(narrow.chain().next()).rejects.toSatisfy(
      (error: unknown) => error instanceof EventsDbError && error.status === 403,
    );
    expect((await fetch(`${t.url}/events/chain`)).status).toBe(401);

    for (const kind of CONNECT_KINDS) {
      const peer = connectPeer(kind, t);
      try {
        const denied = await peer.client
          .getChain({}, { headers: { authorization: `Bearer ${NARROW}` } })
          .then(
            () => undefined,
            (error: unknown) => ConnectError.from(error),
          );
        expect(denied?.code, kind).toBe(Code.PermissionDenied);
        const allowed = await peer.client.getChain({}, { headers: { authorization: `Bearer ${ADMIN}` } });
        expect(
          allowed.links.map((l) => Number(l.id)),
          kind,
        ).toEqual([links[0]?.id]);
      } finally {
        peer.close();
      }
    }
  });

  it("serves the public key without a token, and it verifies the events' signatures", async () => {
    const response = await fetch(`${t.url}/.well-known/eventsdb/signing-key`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/x-pem-file/);
    const pem = await response.text();
    expect(pem).toBe(key.publicPem);
    expect(await new EventsDbClient({ url: t.url }).signingKey()).toBe(pem);

    const admin = new EventsDbClient({ url: t.url, token: ADMIN });
    await admin.append({ source: "s", type: "t", subject: "b", data: "signed" });
    const publicKey = createPublicKey(pem);
    const verifier = new ChainVerifier(publicKey);
    let count = 0;
    for await (const json of admin.chain()) {
      const link = linkFromJson(json);
      expect(link.signature).toBeDefined();
      expect(verify(null, link.hash, publicKey, link.signature as Buffer)).toBe(true);
      expect(verifier.check(link)).toBeUndefined();
      count++;
    }
    expect(count).toBeGreaterThanOrEqual(2);
    // A signature by another key is caught.
    const other = generateKeyPairSync("ed25519").publicKey;
    const stranger = new ChainVerifier(other);
    let first: ChainLinkJson | undefined;
    for await (const json of admin.chain({ limit: 1 })) {
      first = json;
      break;
    }
    expect(stranger.check(linkFromJson(first))).toMatchObject({ problem: "signature", id: first?.id });
  });
});
