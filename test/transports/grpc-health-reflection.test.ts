import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { Readiness } from "../../src/events/event-log.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../src/gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../src/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../src/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { healthService, WATCH_POLL_MS } from "../../src/transports/grpc/health.js";
import { reflectionRoutes } from "../../src/transports/grpc/reflection.js";
import { DIALECTS } from "../support/dialects.js";
import { startTestServer, type TestServer } from "../support/server.js";

const BUF = resolve("node_modules/.bin/buf");
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `buf curl` over h2c gRPC, schema from server reflection; returns stdout. */
async function bufCurl(args: readonly string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], {
    timeout: 20_000,
  });
  return stdout;
}

const ready = (status: Readiness["status"]): Readiness => ({
  status,
  checks: { store: { status }, writer: { status: "ok" } },
});

/** Collects what `iterable` yields until `count` messages arrived, then aborts the call. */
async function take<T>(iterable: AsyncIterable<T>, count: number, abort: AbortController): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) {
    out.push(item);
    if (out.length === count) {
      abort.abort();
      break;
    }
  }
  return out;
}

describe("grpc.health.v1.Health with a fake readiness probe", () => {
  let probe: () => Promise<Readiness>;
  let probes = 0;
  const client = createClient(
    Health,
    createRouterTransport((router) =>
      router.service(
        Health,
        healthService(
          () => {
            probes++;
            return probe();
          },
          { pollMs: 10 },
        ),
      ),
    ),
  );

  it("Check answers SERVING or NOT_SERVING for the server and grpc.EventsDB", async () => {
    probe = async () => ready("ok");
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect((await client.check({ service: "grpc.EventsDB" })).status).toBe(ServingStatus.SERVING);
    probe = async () => ready("unavailable");
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.NOT_SERVING);
    probe = () => Promise.reject(new Error("probe broke"));
    expect((await client.check({ service: "grpc.EventsDB" })).status).toBe(ServingStatus.NOT_SERVING);
  });

  it("Check fails with NOT_FOUND for an unknown service", async () => {
    probe = async () => ready("ok");
    const error = await client.check({ service: "no.Such" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.NotFound);
  });

  it("Watch sends the status at once, then only changes", async () => {
    const statuses: Readiness["status"][] = ["ok", "ok", "unavailable", "unavailable", "ok"];
    probe = async () => ready(statuses.shift() ?? "ok");
    const abort = new AbortController();
    const got = await take(client.watch({ service: "" }, { signal: abort.signal }), 3, abort);
    expect(got.map((m) => m.status)).toEqual([
      ServingStatus.SERVING,
      ServingStatus.NOT_SERVING,
      ServingStatus.SERVING,
    ]);
  });

  it("Watch stops polling when the client cancels while nothing changes", async () => {
    probe = async () => ready("ok");
    const abort = new AbortController();
    const stream = client.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.status).toBe(ServingStatus.SERVING);
    const waiting = stream.next();
    const before = probes;
    await sleep(100);
    expect(probes).toBeGreaterThan(before);
    abort.abort();
    await expect(waiting).rejects.toMatchObject({ code: Code.Canceled });
    await sleep(30);
    const after = probes;
    await sleep(100);
    expect(probes).toBe(after);
  });

  it("Watch of an unknown service sends SERVICE_UNKNOWN and stays open", async () => {
    probe = async () => ready("ok");
    const abort = new AbortController();
    const got = await take(client.watch({ service: "no.Such" }, { signal: abort.signal }), 1, abort);
    expect(got.map((m) => m.status)).toEqual([ServingStatus.SERVICE_UNKNOWN]);
  });

  it("List reports every known service", async () => {
    probe = async () => ready("unavailable");
    const { statuses } = await client.list({});
    expect(Object.keys(statuses).sort()).toEqual(["", "grpc.EventsDB"]);
    expect(statuses["grpc.EventsDB"]?.status).toBe(ServingStatus.NOT_SERVING);
  });
});

describe("gRPC server reflection, in-band errors", () => {
  const transport = createRouterTransport((router) => {
    router.service(Health, {});
    reflectionRoutes(router);
  });

  it("answers list_services and unknown symbols on both versions", async () => {
    for (const version of [v1, v1alpha]) {
      const client = createClient(version.ServerReflection, transport);
      async function* requests() {
        yield { messageRequest: { case: "listServices" as const, value: "" } };
        yield { messageRequest: { case: "fileContainingSymbol" as const, value: "no.Such" } };
        yield {
          messageRequest: { case: "fileContainingSymbol" as const, value: "grpc.health.v1.Health.Check" },
        };
        yield { messageRequest: { case: "fileByFilename" as const, value: "grpc/health/v1/health.proto" } };
        yield { messageRequest: { case: "allExtensionNumbersOfType" as const, value: "no.Such" } };
      }
      const responses = [];
      for await (const response of client.serverReflectionInfo(requests())) responses.push(response);
      const [list, unknown, method, file, extensions] = responses.map((r) => r.messageResponse);
      expect(list?.case).toBe("listServicesResponse");
      expect(list?.case === "listServicesResponse" && list.value.service.map((s) => s.name)).toEqual([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]);
      expect(unknown).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
      expect(method?.case).toBe("fileDescriptorResponse");
      expect(file?.case === "fileDescriptorResponse" && file.value.fileDescriptorProto).toHaveLength(1);
      expect(extensions).toMatchObject({ case: "errorResponse", value: { errorCode: Code.NotFound } });
      expect(responses[1]?.originalRequest?.messageRequest.value).toBe("no.Such");
    }
  });
});

const dialect = DIALECTS[0];
if (dialect === undefined) throw new Error("no test dialect selected");

describe(`gRPC health and reflection on a real server (${dialect.name})`, () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(await dialect.url());
  });
  afterAll(async () => {
    await t?.close();
  });

  const health = () => createClient(Health, createGrpcTransport({ baseUrl: t.grpcUrl }));

  it("Health.Check and List say SERVING", async () => {
    expect((await health().check({})).status).toBe(ServingStatus.SERVING);
    expect((await health().check({ service: "grpc.EventsDB" })).status).toBe(ServingStatus.SERVING);
    const { statuses } = await health().list({});
    expect(statuses[""]?.status).toBe(ServingStatus.SERVING);
    expect(statuses["grpc.EventsDB"]?.status).toBe(ServingStatus.SERVING);
  });

  it("Health.Watch sends SERVING first; cancelling it ends the call and its polling", async () => {
    const readiness = vi.spyOn(t.server.eventLog, "readiness");
    try {
      const client = health();
      const abort = new AbortController();
      const stream = client
        .watch({ service: "grpc.EventsDB" }, { signal: abort.signal })
        [Symbol.asyncIterator]();
      expect((await stream.next()).value?.status).toBe(ServingStatus.SERVING);
      const waiting = stream.next();
      await sleep(WATCH_POLL_MS * 1.5);
      expect(readiness.mock.calls.length).toBeGreaterThanOrEqual(2);
      abort.abort();
      await expect(waiting).rejects.toMatchObject({ code: Code.Canceled });
      await sleep(100);
      const after = readiness.mock.calls.length;
      await sleep(WATCH_POLL_MS * 1.5);
      expect(readiness.mock.calls.length).toBe(after);
      expect((await client.check({})).status).toBe(ServingStatus.SERVING);
    } finally {
      readiness.mockRestore();
    }
  });

  for (const reflect of ["grpc-v1", "grpc-v1alpha"]) {
    describe(`buf curl with --reflect-protocol ${reflect}`, () => {
      const curl = (args: readonly string[]) => bufCurl(["--reflect-protocol", reflect, ...args]);

      it("lists services and methods", async () => {
        const services = (await curl(["--list-services", t.grpcUrl])).trim().split("\n");
        expect(services).toEqual(
          expect.arrayContaining([
            "grpc.EventsDB",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
          ]),
        );
        const methods = (await curl(["--list-methods", t.grpcUrl])).trim().split("\n");
        expect(methods).toEqual(
          expect.arrayContaining(["grpc.EventsDB/CreateEvent", "grpc.EventsDB/GetEventByID"]),
        );
      });

      it("calls CreateEvent and GetEventByID without a local schema", async () => {
        const subject = `buf/${reflect}`;
        const created = JSON.parse(
          await curl([
            "-d",
            JSON.stringify({ source: "s", type: "t", subject, data: "aGk=" }),
            `${t.grpcUrl}/grpc.EventsDB/CreateEvent`,
          ]),
        ) as { id: string };
        expect(Number(created.id)).toBeGreaterThan(0);
        const event = JSON.parse(
          await curl(["-d", JSON.stringify({ id: created.id }), `${t.grpcUrl}/grpc.EventsDB/GetEventByID`]),
        ) as Record<string, unknown>;
        expect(event).toMatchObject({ id: created.id, source: "s", type: "t", subject, data: "aGk=" });
      });

      it("knows GetHistoricEventsFromSubject's next_from_id (field 3) from the served descriptors", async () => {
        const subject = `buf-page/${reflect}`;
        const body = JSON.stringify({ source: "s", type: "t", subject });
        const first = JSON.parse(await curl(["-d", body, `${t.grpcUrl}/grpc.EventsDB/CreateEvent`])) as {
          id: string;
        };
        const second = JSON.parse(await curl(["-d", body, `${t.grpcUrl}/grpc.EventsDB/CreateEvent`])) as {
          id: string;
        };
        const page = JSON.parse(
          await curl([
            "-d",
            JSON.stringify({ subject, limit: 1 }),
            `${t.grpcUrl}/grpc.EventsDB/GetHistoricEventsFromSubject`,
          ]),
        ) as Record<string, unknown>;
        expect(page).toMatchObject({ events: [{ id: first.id }], hasMore: true, nextFromId: first.id });
        const next = JSON.parse(
          await curl([
            "-d",
            JSON.stringify({ subject, limit: 1, fromId: page.nextFromId }),
            `${t.grpcUrl}/grpc.EventsDB/GetHistoricEventsFromSubject`,
          ]),
        ) as Record<string, unknown>;
        expect(next).toMatchObject({ events: [{ id: second.id }], nextFromId: second.id });
      });
    });
  }
});
