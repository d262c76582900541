import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { connection } from "../../src/client/http.js";
import { exportEvents } from "../../src/client/transfer.js";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { DIALECTS } from "../support/dialects.js";
import { type ConnectKind, type ConnectPeer, connectPeer, openConnectStream } from "../support/grpc.js";
import { testFlags } from "../support/server.js";
import { openStream, waitUntil } from "../support/sse.js";

/**
 * Item 1 and 5 of issue 10: a token reads nothing outside its read scopes, on every read path, and
 * an event it may not read is answered exactly like a missing one. Random scope sets (none, "*",
 * nested prefixes, write-only) × random filters × every read path: REST pages (simple JSON and
 * CloudEvents batch), by id (both routes, both formats), SSE catch-up and live (both formats),
 * Connect / gRPC-Web / gRPC GetEventByID, GetHistoricEventsFromSubject and
 * StreamEventsFromSubject (empty subject included), subjects, ListSubjects and export. The model
 * says, from the scopes alone, whether a read is refused (403 / PERMISSION_DENIED) and what it may
 * return; the server must agree.
 */

const ADMIN = "scopes-admin-token-0123";
const PROBE = "scopes-probe-token-4567";
/** undefined: events without a subject (issue 12), which only a read scope "*" reads. */
const SUBJECTS = [
  "a",
  "a/1",
  "a/1/x",
  "a/2",
  "ab",
  "ab/1",
  "b",
  "b/1",
  "b/1/y",
  "c/d/e",
  "a%",
  "a_",
  undefined,
];
const TYPES = ["t1", "t2"];
const SCOPE_POOL = ["*", "a", "a/1", "a/1/x", "ab", "b", "b/1", "c", "c/d", "zzz"];
const REQUEST_SUBJECTS = ["", "a", "a/1", "ab", "b/1", "c", "zzz", "a/1/x", "c/d/e"];
const KINDS: readonly ConnectKind[] = ["connect (HTTP/1.1)", "grpc-web (HTTP/1.1)", "grpc (HTTP/2)"];
const RUNS = 25;

interface Scopes {
  readonly read: readonly string[];
  readonly write: readonly string[];
}
interface ReadRequest {
  readonly subject: string;
  readonly recursive: boolean;
  readonly type: string | undefined;
}

// ---- the model: written from the README's rules, not from the implementation ----

/** An event's subject as read: undefined = none (REST leaves the member out, gRPC sends ""). */
type Subject = string | undefined;
function covers(scope: string, subject: Subject): boolean {
  if (scope === "*") return true;
  return subject !== undefined && (subject === scope || subject.startsWith(`${scope}/`));
}
/** gRPC's "" is no subject. */
const fromGrpc = (subject: string): Subject => (subject === "" ? undefined : subject);
function readable(scopes: Scopes, subject: Subject): boolean {
  return scopes.read.some((scope) => covers(scope, subject));
}
/** A subject the filtered read may return and the token may read (the live marker), or undefined = 403. */
function markerSubject(scopes: Scopes, request: ReadRequest): string | undefined {
  if (scopes.read.length === 0) return undefined; // no read scope: reads nothing
  if (request.subject === "") return scopes.read.includes("*") ? "m/any" : scopes.read[0];
  if (readable(scopes, request.subject)) return request.subject;
  if (!request.recursive) return undefined;
  return scopes.read.find((scope) => scope !== "*" && scope.startsWith(`${request.subject}/`));
}

const arbScopes: fc.Arbitrary<Scopes> = fc.record({
  read: fc.uniqueArray(fc.constantFrom(...SCOPE_POOL), { maxLength: 3 }),
  write: fc.uniqueArray(fc.constantFrom(...SCOPE_POOL), { maxLength: 2 }),
});
const arbRequest: fc.Arbitrary<ReadRequest> = fc.record({
  subject: fc.constantFrom(...REQUEST_SUBJECTS),
  recursive: fc.boolean(),
  type: fc.constantFrom(undefined, "t1"),
});

describe.each(DIALECTS)("read scopes on $name", (dialect) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-scopes-"));
  const authFile = path.join(dir, "tokens.json");
  let server: RunningServer;
  let t: { url: string; grpcUrl: string };
  const peers = new Map<ConnectKind, ConnectPeer>();
  const subjectOf = new Map<number, Subject>();

  const writeScopes = (scopes: Scopes) =>
    fs.writeFileSync(
      authFile,
      JSON.stringify({
        tokens: [
          {
            name: "probe",
            sha256: tokenDigest(PROBE).toString("hex"),
            read: scopes.read,
            write: scopes.write,
          },
        ],
      }),
    );

  const append = async (events: { subject: Subject; type: string }[]): Promise<number[]> => {
    const res = await fetch(`${t.url}/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify(events.map((e) => ({ source: "scopes", ...e }))),
    });
    expect(res.status).toBe(200);
    const { ids } = (await res.json()) as { ids: number[] };
    for (const [i, id] of ids.entries()) subjectOf.set(id, (events[i] as { subject: Subject }).subject);
    return ids;
  };

  beforeAll(async () => {
    writeScopes({ read: [], write: [] });
    server = await startServer(
      loadConfig({ AUTH_TOKEN: ADMIN }, { ...testFlags(await dialect.url()), "auth-file": authFile }),
      { logger: false, defaultMetrics: false },
    );
    t = { url: `http://127.0.0.1:${server.restPort}`, grpcUrl: `http://127.0.0.1:${server.grpcPort}` };
    for (const kind of KINDS) peers.set(kind, connectPeer(kind, t));
    await append(SUBJECTS.flatMap((subject) => TYPES.map((type) => ({ subject, type }))));
  });

  afterAll(async () => {
    for (const peer of peers.values()) peer.close();
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("never returns an event, id or subject outside the read scopes, on any read path", {
    timeout: 240_000,
  }, async () => {
    let nonEmptyReads = 0;
    await fc.assert(
      fc.asyncProperty(
        arbScopes,
        arbRequest,
        fc.array(fc.nat(), { minLength: 3, maxLength: 3 }),
        async (scopes, request, picks) => {
          writeScopes(scopes);
          await server.reload().sessionsEnded;
          const auth = { authorization: `Bearer ${PROBE}` };
          const marker = markerSubject(scopes, request);
          // Whether the read must return events without a subject: all subjects, with scope "*".
          const allWithNone = request.subject === "" && scopes.read.includes("*");
          const expectReadable = (subjects: readonly Subject[], where: string) => {
            for (const subject of subjects)
              expect(readable(scopes, subject), `${where}: ${subject}`).toBe(true);
            if (subjects.length > 0) nonEmptyReads++;
          };
          const params = new URLSearchParams();
          if (request.subject !== "") params.set("subject", request.subject);
          if (request.recursive) params.set("recursive", "true");
          if (request.type !== undefined) params.set("type", request.type);
          const grpcRequest = {
            subject: request.subject,
            recursive: request.recursive,
            ...(request.type === undefined ? {} : { type: request.type }),
          };

          // Streams first (catch-up from 0, then live), so the live batch below reaches them.
          const sse = await Promise.all(
            ["simple", "cloudevents"].map((format) =>
              openStream(`${t.url}/events/stream?${params}&format=${format}`, auth),
            ),
          );
          const grpcStreams = KINDS.map((kind) =>
            openConnectStream((signal) =>
              (peers.get(kind) as ConnectPeer).client.streamEventsFromSubject(grpcRequest, {
                signal,
                headers: auth,
              }),
            ),
          );
          try {
            for (const stream of sse) {
              expect(stream.response.status, `SSE ${params}`).toBe(marker === undefined ? 403 : 200);
            }

            // REST pages, both formats.
            const page = await fetch(`${t.url}/events?${params}&limit=1000`, { headers: auth });
            expect(page.status, `page ${params}`).toBe(marker === undefined ? 403 : 200);
            if (page.status === 200) {
              const body = (await page.json()) as { events: { subject?: string }[] };
              expectReadable(
                body.events.map((e) => e.subject),
                "page",
              );
              // Events without a subject: in every read of all subjects with scope "*", in no other.
              const noSubject = body.events.some((e) => !("subject" in e));
              expect(noSubject, `page ${params} has events without a subject`).toBe(allWithNone);
            } else {
              expect(((await page.json()) as { error: { code: string } }).error.code).toBe(
                "permission_denied",
              );
            }
            const batch = await fetch(`${t.url}/events?${params}&limit=1000`, {
              headers: { ...auth, accept: "application/cloudevents-batch+json" },
            });
            expect(batch.status).toBe(marker === undefined ? 403 : 200);
            if (batch.status === 200) {
              expectReadable(
                ((await batch.json()) as { subject?: string }[]).map((e) => e.subject),
                "batch",
              );
            }

            // gRPC family: one page.
            for (const [kind, peer] of peers) {
              const reply = await peer.client
                .getHistoricEventsFromSubject({ ...grpcRequest, limit: 1000 }, { headers: auth })
                .then(
                  (r) => r,
                  (e: unknown) => ConnectError.from(e),
                );
              if (marker === undefined) {
                expect(reply instanceof ConnectError && reply.code, kind).toBe(Code.PermissionDenied);
              } else {
                expect(reply instanceof ConnectError ? reply.message : "ok", kind).toBe("ok");
                expectReadable(
                  (reply as { events: { subject: string }[] }).events.map((e) => fromGrpc(e.subject)),
                  kind,
                );
              }
            }

            // By id: readable ones come back, the others exactly like a missing id (item 5).
            const ids = [...subjectOf.keys()];
            const missing = 1_000_000_000;
            for (const id of [...picks.map((n) => ids[n % ids.length] as number), missing]) {
              const visible = id !== missing && readable(scopes, subjectOf.get(id));
              for (const [route, accept] of [
                [`/events/${id}`, "application/json"],
                [`/events/get?id=${id}`, "application/json"],
                [`/events/${id}`, "application/cloudevents+json"],
              ] as const) {
                const res = await fetch(`${t.url}${route}`, { headers: { ...auth, accept } });
                const body = (await res.json()) as { subject?: string };
                if (visible) {
                  expect(res.status, route).toBe(200);
                  expectReadable([body.subject], route);
                } else {
                  expect(res.status, `${route} (${subjectOf.get(id)})`).toBe(404);
                  expect(body).toEqual({ error: { code: "not_found", message: `event ${id} not found` } });
                }
              }
              for (const [kind, peer] of peers) {
                const reply = await peer.client.getEventByID({ id: BigInt(id) }, { headers: auth }).then(
                  (r) => r,
                  (e: unknown) => ConnectError.from(e),
                );
                if (visible) {
                  expect(reply instanceof ConnectError ? reply.message : "ok", kind).toBe("ok");
                  expectReadable([fromGrpc((reply as { subject: string }).subject)], kind);
                } else {
                  expect(reply instanceof ConnectError && [reply.code, reply.rawMessage], kind).toEqual([
                    Code.NotFound,
                    `event ${id} not found`,
                  ]);
                }
              }
            }

            // Subjects.
            const subjects = await fetch(`${t.url}/subjects`, { headers: auth });
            expect(subjects.status).toBe(200);
            const listed = (await subjects.json()) as string[];
            expectReadable(listed, "subjects");
            expect(listed, "no empty subject for the events without one").not.toContain("");
            for (const [kind, peer] of peers) {
              const grpcListed = (await peer.client.listSubjects({}, { headers: auth })).subjects;
              expectReadable(grpcListed, `${kind} subjects`);
              expect(grpcListed, `${kind} subjects`).not.toContain("");
            }

            // Export (the CLI's eventsdb export).
            const file = path.join(dir, "export.ndjson");
            const exported = await exportEvents(connection(t.url, PROBE), {
              filter: {
                subject: request.subject === "" ? [] : [request.subject],
                recursive: request.recursive,
                type: request.type,
              },
              fromId: 0,
              output: file,
            }).then(
              () =>
                fs
                  .readFileSync(file, "utf8")
                  .split("\n")
                  .filter(Boolean)
                  .map((l) => JSON.parse(l).subject as Subject),
              (e: Error) => e,
            );
            if (marker === undefined) expect(String(exported)).toContain("403 permission_denied");
            else expectReadable(exported as string[], "export");

            // Live: every subject once more, the marker last; the streams must reach the marker and
            // may carry nothing unreadable before it (ids arrive in order).
            if (marker !== undefined) {
              const live = await append([
                ...SUBJECTS.flatMap((subject) => TYPES.map((type) => ({ subject, type }))),
                { subject: marker, type: request.type ?? "t1" },
              ]);
              const markerId = live.at(-1) as number;
              for (const [i, stream] of sse.entries()) {
                await waitUntil(() => stream.parser.ids().includes(markerId), `SSE ${i} marker`);
                const streamed = stream.parser.events.map((e) => JSON.parse(e.data).subject as Subject);
                expectReadable(streamed, `SSE ${i === 0 ? "simple" : "cloudevents"}`);
                expect(streamed.includes(undefined), `SSE ${i} has events without a subject`).toBe(
                  allWithNone,
                );
              }
              for (const [i, stream] of grpcStreams.entries()) {
                await waitUntil(() => stream.ids().includes(markerId), `${KINDS[i]} stream marker`);
                const replies = stream.replies as unknown as { events: { subject: string }[] }[];
                const streamed = replies.flatMap((r) => r.events.map((e) => fromGrpc(e.subject)));
                expectReadable(streamed, `${KINDS[i]} stream`);
                expect(streamed.includes(undefined), `${KINDS[i]} stream has events without a subject`).toBe(
                  allWithNone,
                );
              }
            } else {
              for (const [i, stream] of grpcStreams.entries()) {
                const error = await stream.ended.then(
                  () => undefined,
                  (e: unknown) => ConnectError.from(e),
                );
                expect(error?.code, `${KINDS[i]} stream`).toBe(Code.PermissionDenied);
              }
            }
          } finally {
            for (const stream of sse) stream.close();
            for (const stream of grpcStreams) stream.close();
          }
        },
      ),
      {
        numRuns: RUNS,
        examples: [
          // The reported hole: write-only, no subject — on every path.
          [{ read: [], write: ["a"] }, { subject: "", recursive: false, type: undefined }, [0, 5, 9]],
          [{ read: [], write: [] }, { subject: "", recursive: true, type: "t1" }, [1, 2, 3]],
          [{ read: ["*"], write: [] }, { subject: "", recursive: false, type: undefined }, [0, 1, 2]],
          [{ read: ["a/1"], write: ["b"] }, { subject: "a", recursive: true, type: undefined }, [1, 4, 7]],
          [{ read: ["a", "a/1"], write: [] }, { subject: "", recursive: false, type: "t1" }, [3, 8, 20]],
        ],
      },
    );
    expect(nonEmptyReads, "some reads returned events (the test is not vacuous)").toBeGreaterThan(0);
  });
});
