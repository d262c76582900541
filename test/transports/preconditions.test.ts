import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventsDbClient, EventsDbError } from "../../src/client/lib/index.js";
import { PreconditionSchema } from "../../src/gen/grpc/eventsdb_pb.js";
import { DIALECTS } from "../support/dialects.js";
import { CONNECT_KINDS, connectPeer, FAST_PATH_MODES, GrpcJsClient } from "../support/grpc.js";
import { startTestServer, type TestServer } from "../support/server.js";

/**
 * Issue 13 capability 1 on the wire: the EventsDB-Preconditions header on every REST content mode,
 * the preconditions fields of CreateEvent(s) on Connect, gRPC-Web and gRPC (fast path on and off),
 * requests without them unchanged, and the client library's option. A failed precondition is 409
 * / FAILED_PRECONDITION with the core's message, and stores nothing.
 */

let unique = 0;
const fresh = (name: string) => `/pre/${name}/${++unique}`;

const header = (...items: unknown[]) => ({ "eventsdb-preconditions": JSON.stringify(items) });
const pristine = (subject: string) => ({ type: "isSubjectPristine", payload: { subject } });
const populated = (subject: string) => ({ type: "isSubjectPopulated", payload: { subject } });
const onEvent = (subject: string, eventId: number) => ({
  type: "isSubjectOnEventId",
  payload: { subject, eventId: String(eventId) },
});

/** The REST content modes, each as a request for one subject (two events in the batch modes). */
const MODES: {
  name: string;
  request: (subject: string) => { headers: Record<string, string>; body: string };
}[] = [
  {
    name: "simple JSON",
    request: (subject) => ({
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ source: "pre", type: "t", subject }),
    }),
  },
  {
    name: "simple JSON batch",
    request: (subject) => ({
      headers: { "content-type": "application/json" },
      body: JSON.stringify([
        { source: "pre", type: "t", subject },
        { source: "pre", type: "t", subject },
      ]),
    }),
  },
  {
    name: "CloudEvents structured",
    request: (subject) => ({
      headers: { "content-type": "application/cloudevents+json" },
      body: JSON.stringify({ specversion: "1.0", id: `s${++unique}`, source: "pre", type: "t", subject }),
    }),
  },
  {
    name: "CloudEvents binary",
    request: (subject) => ({
      headers: {
        "content-type": "text/plain",
        "ce-specversion": "1.0",
        "ce-id": `b${++unique}`,
        "ce-source": "pre",
        "ce-type": "t",
        "ce-subject": subject,
      },
      body: "data",
    }),
  },
  {
    name: "CloudEvents batch",
    request: (subject) => ({
      headers: { "content-type": "application/cloudevents-batch+json" },
      body: JSON.stringify([
        { specversion: "1.0", id: `c${++unique}`, source: "pre", type: "t", subject },
        { specversion: "1.0", id: `c${++unique}`, source: "pre", type: "t", subject },
      ]),
    }),
  },
];

describe.each(DIALECTS)("preconditions over REST on $name", (dialect) => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(await dialect.url());
  });
  afterAll(async () => {
    await t.close();
  });

  const post = (mode: (typeof MODES)[number], subject: string, extra: Record<string, string> = {}) => {
    const { headers, body } = mode.request(subject);
    return fetch(`${t.url}/events`, { method: "POST", headers: { ...headers, ...extra }, body });
  };
  const count = async (subject: string) => {
    const res = await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}&limit=1000`);
    return ((await res.json()) as { events: unknown[] }).events.length;
  };
  const lastId = async (subject: string) => {
    const res = await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}&limit=1000`);
    const events = ((await res.json()) as { events: { id: number }[] }).events;
    return events.at(-1)?.id ?? 0;
  };
  const expectConflict = async (res: Response, message: string) => {
    expect(res.status).toBe(409);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("failed_precondition");
    expect(body.error.message).toContain(message);
  };

  describe.each(MODES)("$name", (mode) => {
    it("appends when every precondition holds, answers 409 and stores nothing when one fails", async () => {
      const subject = fresh("rest");
      const other = fresh("rest-other");
      expect((await post(mode, subject, header(pristine(subject)))).status).toBe(200);
      const stored = await count(subject);
      await expectConflict(await post(mode, subject, header(pristine(subject))), "not pristine");
      await expectConflict(await post(mode, subject, header(populated(other))), "has no events");
      const last = await lastId(subject);
      await expectConflict(
        await post(mode, subject, header(onEvent(subject, last + 1000))),
        `on event ${last}`,
      );
      // One failing among holding ones fails the request.
      await expectConflict(
        await post(mode, subject, header(populated(subject), pristine(subject))),
        "not pristine",
      );
      expect(await count(subject)).toBe(stored);
      expect((await post(mode, subject, header(populated(subject), onEvent(subject, last)))).status).toBe(
        200,
      );
      expect(await count(subject)).toBe(stored * 2);
    });

    it("answers 400 naming the header for a malformed value, storing nothing", async () => {
      const subject = fresh("bad");
      for (const value of [
        "[{",
        '{"type":"isSubjectPristine"}',
        '[{"type":"nope","payload":{"subject":"a"}}]',
      ]) {
        const res = await post(mode, subject, { "eventsdb-preconditions": value });
        expect(res.status).toBe(400);
        const body = (await res.json()) as { error: { code: string; message: string } };
        expect(body.error.message).toContain("EventsDB-Preconditions");
      }
      expect(await count(subject)).toBe(0);
    });
  });

  it("leaves requests without the header as they were", async () => {
    const subject = fresh("plain");
    for (const mode of MODES) expect((await post(mode, subject)).status).toBe(200);
    expect(await count(subject)).toBe(7);
  });

  it("gives the client library's preconditions option and the failed_precondition code", async () => {
    const client = new EventsDbClient({ url: t.url });
    const subject = fresh("lib/é");
    const first = await client.append(
      { source: "lib", type: "t", subject },
      { preconditions: [{ kind: "pristine", subject }] },
    );
    const second = await client.appendCloudEvent(
      { specversion: "1.0", id: `l${++unique}`, source: "lib", type: "t", subject },
      { preconditions: [{ kind: "on_event", subject, id: first }] },
    );
    const ids = await client.appendBatch(
      [{ specversion: "1.0", id: `l${++unique}`, source: "lib", type: "t", subject }],
      { preconditions: [{ kind: "populated", subject }] },
    );
    expect(ids).toHaveLength(1);
    const failure = await client
      .appendCloudEvent(
        { specversion: "1.0", id: `l${++unique}`, source: "lib", type: "t", subject },
        { preconditions: [{ kind: "on_event", subject, id: second }] },
      )
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(EventsDbError);
    expect(failure).toMatchObject({ code: "failed_precondition", status: 409 });
    expect(await count(subject)).toBe(3);
  });
});

/** Every gRPC wire on both stores, with the unary fast path and without. */
const SERVERS = DIALECTS.flatMap((dialect) => FAST_PATH_MODES.map((mode) => ({ dialect, ...mode })));

describe.each(SERVERS)(
  "preconditions over gRPC on $dialect.name, fast path $fastPath",
  ({ dialect, flags }) => {
    let t: TestServer;
    beforeAll(async () => {
      t = await startTestServer(await dialect.url(), flags);
    });
    afterAll(async () => {
      await t.close();
    });
    const count = async (subject: string) => {
      const res = await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}&limit=1000`);
      return ((await res.json()) as { events: unknown[] }).events.length;
    };
    const condition = (value: Parameters<typeof create<typeof PreconditionSchema>>[1]) =>
      create(PreconditionSchema, value);

    describe.each(CONNECT_KINDS)("@connectrpc/connect-node, %s", (kind) => {
      it("CreateEvent and CreateEvents check their preconditions; FAILED_PRECONDITION stores nothing", async () => {
        const { client, close } = connectPeer(kind, t);
        try {
          const subject = fresh("connect");
          const event = { source: "c", type: "t", subject };
          const first = await client.createEvent({
            ...event,
            preconditions: [condition({ condition: { case: "pristine", value: subject } })],
          });
          const batch = await client.createEvents({
            events: [event, event],
            preconditions: [
              condition({ condition: { case: "populated", value: subject } }),
              condition({ condition: { case: "onEvent", value: { subject, id: first.id } } }),
            ],
          });
          expect(batch.ids).toHaveLength(2);
          const failures = [
            () =>
              client.createEvent({
                ...event,
                preconditions: [condition({ condition: { case: "pristine", value: subject } })],
              }),
            () =>
              client.createEvents({
                events: [event],
                preconditions: [
                  condition({ condition: { case: "onEvent", value: { subject, id: first.id } } }),
                ],
              }),
          ];
          for (const failure of failures) {
            const error = await failure().then(
              () => undefined,
              (e: unknown) => ConnectError.from(e),
            );
            expect(error?.code).toBe(Code.FailedPrecondition);
            expect(error?.rawMessage).toContain("precondition failed");
          }
          // A request without the field (an old client) is as before.
          await client.createEvent(event);
          expect(await count(subject)).toBe(4);
        } finally {
          close();
        }
      });
    });

    it("@grpc/grpc-js from the .proto file: FAILED_PRECONDITION, and old requests unchanged", async () => {
      const client = new GrpcJsClient(t.server.grpcPort);
      try {
        const subject = fresh("grpcjs");
        const event = { source: "g", type: "t", subject };
        const withPre = (preconditions: unknown[]) => ({ ...event, preconditions }) as typeof event;
        const first = await client.unary("CreateEvent", withPre([{ pristine: subject }]));
        const failure = await client.failure("CreateEvent", withPre([{ pristine: subject }]));
        expect(failure.code).toBe(grpc.status.FAILED_PRECONDITION);
        expect(failure.details).toContain("not pristine");
        await client.unary("CreateEvent", withPre([{ on_event: { subject, id: first.id } }]));
        await client.unary("CreateEvent", event);
        expect(await count(subject)).toBe(3);
      } finally {
        client.close();
      }
    });
  },
);
