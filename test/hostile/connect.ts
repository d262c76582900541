import { Code, ConnectError } from "@connectrpc/connect";
import fc from "fast-check";
import { expect } from "vitest";
import type { ConnectPeer } from "../support/grpc.js";
import { nastyString, nastyValue } from "./arbitraries.js";
import { type Answer, describeAnswer } from "./harness.js";
import { MAX_BATCH_EVENTS, MAX_EVENT_BYTES } from "./settings.js";

/** Connect and gRPC material: messages, client calls, the end of a Connect stream. */

export const UNARY_METHODS = [
  "CreateEvent",
  "CreateEvents",
  "GetEventByID",
  "GetHistoricEventsFromSubject",
  "DeleteFromSubject",
  "ListSubjects",
  "GetChain",
] as const;

/** int64 fields in Connect JSON: strings or numbers, in and out of range. */
const int64Json = fc.oneof(
  fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
  fc.constantFrom<unknown>(
    0,
    1,
    -1,
    1.5,
    1e300,
    "1e3",
    "0x10",
    "",
    " 1",
    "NaN",
    "9007199254740993",
    true,
    null,
    [],
    {},
  ),
);

export const connectMessage: fc.Arbitrary<[string, unknown][]> = fc.array(
  fc.oneof(
    fc.tuple(
      fc.constantFrom("source", "type", "subject", "id", "time", "datacontenttype", "dataschema", "prefix"),
      nastyValue,
    ),
    fc.tuple(fc.constantFrom("id", "fromId", "from_id", "limit"), int64Json),
    fc.tuple(fc.constantFrom("recursive"), fc.constantFrom<unknown>(true, false, "true", 1, null)),
    fc.tuple(fc.constantFrom("data"), fc.oneof(fc.constantFrom("aGk=", "aGk", "-_8", "", "!!"), nastyValue)),
    fc.tuple(
      fc.constantFrom("extensions"),
      fc.oneof(fc.dictionary(nastyString, nastyValue, { maxKeys: 3 }), nastyValue),
    ),
    fc.tuple(
      fc.constantFrom("events"),
      fc.oneof(
        fc.array(fc.constantFrom<unknown>({ source: "s", type: "t", subject: "fuzz/c" }, null, {}, 1), {
          maxLength: 25,
        }),
        nastyValue,
      ),
    ),
    fc.tuple(fc.string({ maxLength: 10 }), nastyValue),
  ),
  { maxLength: 6 },
);

export const streamMessage: fc.Arbitrary<[string, unknown][]> = fc.array(
  fc.oneof(
    fc.tuple(fc.constantFrom("subject", "type"), nastyValue),
    fc.tuple(fc.constantFrom("fromId", "limit"), int64Json),
    fc.tuple(fc.constantFrom("recursive"), fc.constantFrom<unknown>(true, "x", null)),
  ),
  { maxLength: 4 },
);

export function expectNoInternalCode(answer: Answer): void {
  let code: unknown;
  try {
    code = (JSON.parse(answer.text) as { code?: unknown }).code;
  } catch {
    return;
  }
  expect(["internal", "unknown"], describeAnswer("Connect", answer)).not.toContain(code);
}

/** Reads a Connect stream until its end-stream message (returned) or `ms` of silence (then aborts). */
export async function readEndStream(
  res: Response,
  controller: AbortController,
  ms: number,
): Promise<string | undefined> {
  if (res.body === null) return undefined;
  const reader = res.body.getReader();
  let buffer = Buffer.alloc(0);
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const next = await Promise.race([
      reader.read(),
      new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), ms);
      }),
    ]);
    clearTimeout(timer);
    if (next === "timeout" || next.done) {
      controller.abort();
      await reader.read().catch(() => {});
      return undefined;
    }
    buffer = Buffer.concat([buffer, Buffer.from(next.value)]);
    while (buffer.length >= 5) {
      const flags = buffer.readUInt8(0);
      const length = buffer.readUInt32BE(1);
      if (buffer.length < 5 + length) break;
      const message = buffer.subarray(5, 5 + length).toString("utf8");
      buffer = buffer.subarray(5 + length);
      if ((flags & 0x02) !== 0) {
        controller.abort();
        return message;
      }
    }
  }
}

const clientString = fc.oneof({ weight: 3, arbitrary: nastyString }, fc.constantFrom("s", "fuzz/grpc", "t"));
const int64 = fc.oneof(
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.constantFrom(0n, 1n, -1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)),
);
const int32 = fc.oneof(fc.integer(), fc.constantFrom(0, -1, 1, 1000, 1001, 2147483647, -2147483648));
export const createRequest: fc.Arbitrary<CreateInit> = fc.record(
  {
    source: clientString,
    type: clientString,
    subject: clientString,
    id: clientString,
    time: fc.oneof(
      clientString,
      fc.constantFrom("2026-01-02T03:04:05Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:60Z"),
    ),
    datacontenttype: clientString,
    dataschema: clientString,
    data: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.constantFrom(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1).map((n) => new Uint8Array(n)),
    ),
    extensions: fc.dictionary(clientString, clientString, { maxKeys: 3 }),
  },
  { requiredKeys: [] },
);
const filterRequest: fc.Arbitrary<FilterInit> = fc.record(
  { subject: clientString, type: clientString, fromId: int64, recursive: fc.boolean(), limit: int32 },
  { requiredKeys: [] },
);

export interface CreateInit {
  source?: string;
  type?: string;
  subject?: string;
  id?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  data?: Uint8Array;
  extensions?: Record<string, string>;
}

interface FilterInit {
  subject?: string;
  type?: string;
  fromId?: bigint;
  recursive?: boolean;
  limit?: number;
}

export type ClientCall =
  | { method: "createEvent"; request: CreateInit }
  | { method: "createEvents"; request: { events: CreateInit[] } }
  | { method: "getEventByID"; request: { id: bigint } }
  | {
      method: "getHistoricEventsFromSubject" | "deleteFromSubject" | "streamEventsFromSubject";
      request: FilterInit;
    }
  | { method: "listSubjects"; request: { prefix: string } };

/** The two append RPCs, the calls the unary gRPC fast path takes. */
export const appendCall: fc.Arbitrary<ClientCall> = fc.oneof(
  createRequest.map((request) => ({ method: "createEvent" as const, request })),
  fc
    .array(createRequest, { maxLength: MAX_BATCH_EVENTS + 2 })
    .map((events) => ({ method: "createEvents" as const, request: { events } })),
);

export const clientCall: fc.Arbitrary<ClientCall> = fc.oneof(
  { weight: 2, arbitrary: appendCall },
  int64.map((id) => ({ method: "getEventByID" as const, request: { id } })),
  fc
    .tuple(
      fc.constantFrom(
        "getHistoricEventsFromSubject",
        "deleteFromSubject",
        "streamEventsFromSubject" as const,
      ),
      filterRequest,
    )
    .map(([method, request]): ClientCall => ({ method, request })),
  clientString.map((prefix) => ({ method: "listSubjects" as const, request: { prefix } })),
);

/** Calls the method; returns the ids a create acknowledged. Streams are cancelled after 30 ms. */
export async function invoke(peer: ConnectPeer, call: ClientCall): Promise<number[]> {
  const client = peer.client;
  switch (call.method) {
    case "createEvent":
      return [Number((await client.createEvent(call.request)).id)];
    case "createEvents":
      return (await client.createEvents(call.request)).ids.map(Number);
    case "getEventByID":
      await client.getEventByID(call.request);
      return [];
    case "getHistoricEventsFromSubject":
      await client.getHistoricEventsFromSubject(call.request);
      return [];
    case "deleteFromSubject":
      await client.deleteFromSubject(call.request);
      return [];
    case "listSubjects":
      await client.listSubjects(call.request);
      return [];
    case "streamEventsFromSubject": {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 30);
      try {
        for await (const _ of client.streamEventsFromSubject(call.request, { signal: controller.signal })) {
          // read until cancelled
        }
      } catch (error) {
        if (!(controller.signal.aborted && ConnectError.from(error).code === Code.Canceled)) throw error;
      } finally {
        clearTimeout(timer);
      }
      return [];
    }
  }
}

export const stringifyBig = (value: unknown) =>
  JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? `<${v.length} bytes>` : v,
  ) ?? "";
