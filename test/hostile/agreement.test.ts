import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FAST_PATH_MODES } from "../support/grpc.js";
import { type ClientCall, type CreateInit, createRequest, invoke, stringifyBig } from "./connect.js";
import { Hostile } from "./harness.js";
import { MAX_BATCH_EVENTS, params } from "./settings.js";

/**
 * The unary gRPC fast path (--grpc-fast-path) is a second implementation of CreateEvent and
 * CreateEvents over gRPC; the Connect path is the first. The same random calls go to a server
 * with it and to one without, in the same order: each call must get the same answer (status and
 * message, or the same ids) and store the same events.
 */

const FIELDS = ["source", "type", "subject", "id", "time", "datacontenttype", "dataschema", "data"] as const;

/** A valid event with at most one field taken from a random request, so that about half pass. */
const nearlyValid: fc.Arbitrary<CreateInit> = fc
  .tuple(createRequest, fc.option(fc.constantFrom(...FIELDS, "extensions" as const), { nil: undefined }))
  .map(([random, field]) => ({
    source: "s",
    type: "t",
    subject: "fuzz/agree",
    ...(field === undefined || random[field] === undefined ? {} : { [field]: random[field] }),
  }));

const event = fc.oneof({ weight: 3, arbitrary: nearlyValid }, createRequest);

const appendCall: fc.Arbitrary<ClientCall> = fc.oneof(
  event.map((request) => ({ method: "createEvent" as const, request })),
  fc
    .array(event, { maxLength: MAX_BATCH_EVENTS + 2 })
    .map((events) => ({ method: "createEvents" as const, request: { events } })),
);

type Outcome = { ids: number[] } | { code: string; message: string };

describe("the unary gRPC fast path answers as the Connect path does", () => {
  const [on, off] = FAST_PATH_MODES.map(({ flags }) => Hostile.server(flags)) as [Hostile, Hostile];

  const call = async (hostile: Hostile, request: ClientCall): Promise<Outcome> => {
    const grpc = hostile.peers[1];
    if (grpc === undefined) throw new Error("no gRPC peer");
    try {
      return { ids: await invoke(grpc, request) };
    } catch (error) {
      const failure = ConnectError.from(error);
      return { code: Code[failure.code], message: failure.rawMessage };
    }
  };

  /**
   * The stored events as REST shows them, less the time the server chose for those sent without
   * one, and less the chain fields: the hash covers that time, and each predecessor's hash all
   * times before it, so the two servers' chains differ once either chose a time.
   */
  const stored = (hostile: Hostile, ids: readonly number[], sent: readonly CreateInit[]) =>
    Promise.all(
      ids.map(async (id, i) => {
        const stored = (await (await fetch(`${hostile.url}/events/${id}`)).json()) as Record<string, unknown>;
        const time = sent[i]?.time;
        if (time === undefined || time === "") delete stored.time;
        expect(stored.hash, `event ${id} has its chain hash`).toMatch(/^[0-9a-f]{64}$/);
        delete stored.hash;
        delete stored.prevhash;
        return stored;
      }),
    );

  it("the same random CreateEvent and CreateEvents calls: the same answers, the same events stored", async () => {
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(appendCall, async (request) => {
        const label = `${request.method} ${stringifyBig(request.request).slice(0, 300)}`;
        const fast = await call(on, request);
        const connect = await call(off, request);
        expect(fast, label).toEqual(connect);
        const claimed = "ids" in fast ? fast.ids : [];
        if (!("ids" in fast)) refused++;
        await on.settle(label, 200, claimed);
        await off.settle(label, 200, claimed);
        const sent =
          request.method === "createEvent"
            ? [request.request]
            : request.method === "createEvents"
              ? request.request.events
              : [];
        expect(await stored(on, claimed, sent), label).toEqual(await stored(off, claimed, sent));
      }),
      params(),
    );
    // Both sides were compared: calls that were stored and calls that were refused.
    expect(on.acknowledged.size).toBeGreaterThan(20);
    expect(refused).toBeGreaterThan(20);
  }, 60_000);
});
