import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { loadConfig } from "../../src/config.js";
import {
  CreateEventRequestSchema,
  StreamEventsFromSubjectRequestSchema,
} from "../../src/gen/grpc/eventsdb_pb.js";
import { type RunningServer, startServer } from "../../src/server.js";
import { encodeGrpcMessage } from "../../src/transports/render-error.js";
import { type ConnectKind, connectPeer, GrpcJsClient, grpcMessage, rawGrpcCall } from "../support/grpc.js";

/**
 * Item 24 of issue 10 (gRPC part): grpc-message is percent-encoded as the gRPC over HTTP/2 spec
 * says — only bytes outside 0x20–0x7E and "%" — so every client decodes it to exactly the
 * message. It used to be encodeURIComponent'd, and grpc-js (which decodes with decodeURI) showed
 * `orders%2F1`. Both the unary fast path and the Connect path, each client library.
 */

const TOKEN = "grpc-message-token-012345";
const ODD = "elsewhere/ü 100%/1";

describe("grpc-message", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-grpc-message-"));
  let server: RunningServer;
  let grpcUrl: string;
  const auth = { authorization: `Bearer ${TOKEN}` };

  beforeAll(async () => {
    const authFile = path.join(dir, "tokens.json");
    fs.writeFileSync(
      authFile,
      JSON.stringify({
        tokens: [
          { name: "w", sha256: tokenDigest(TOKEN).toString("hex"), read: ["orders"], write: ["orders"] },
        ],
      }),
    );
    server = await startServer(
      loadConfig(
        {},
        {
          "database-url": "sqlite::memory:",
          "rest-port": "0",
          "grpc-port": "0",
          host: "127.0.0.1",
          "auth-file": authFile,
        },
      ),
      { logger: false, defaultMetrics: false },
    );
    grpcUrl = `http://127.0.0.1:${server.grpcPort}`;
  });

  afterAll(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("encodes only bytes outside 0x20–0x7E and %", () => {
    expect(encodeGrpcMessage("orders/1")).toBe("orders/1");
    expect(encodeGrpcMessage("100% ü\n")).toBe("100%25 %C3%BC%0A");
  });

  const writeDenied = `token w may not write subject ${ODD}`;
  const readDenied = `token w may not read subject ${ODD}`;

  it("is sent spec-encoded on the fast path and on the Connect path", async () => {
    const create1 = await rawGrpcCall(
      grpcUrl,
      "/grpc.EventsDB/CreateEvent",
      grpcMessage(
        toBinary(
          CreateEventRequestSchema,
          create(CreateEventRequestSchema, { source: "s", type: "t", subject: ODD }),
        ),
      ),
      auth,
    );
    expect(create1.grpcStatus).toBe(String(grpc.status.PERMISSION_DENIED));
    expect(create1.rawMessage).toBe("token w may not write subject elsewhere/%C3%BC 100%25/1");
    const historic = await rawGrpcCall(
      grpcUrl,
      "/grpc.EventsDB/GetHistoricEventsFromSubject",
      grpcMessage(
        toBinary(
          StreamEventsFromSubjectRequestSchema,
          create(StreamEventsFromSubjectRequestSchema, { subject: ODD }),
        ),
      ),
      auth,
    );
    expect(historic.grpcStatus).toBe(String(grpc.status.PERMISSION_DENIED));
    expect(historic.rawMessage).toBe("token w may not read subject elsewhere/%C3%BC 100%25/1");
  });

  it("reaches grpc-js exactly (fast path and Connect path)", async () => {
    const client = new GrpcJsClient(server.grpcPort, true);
    try {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${TOKEN}`);
      const call = (method: string, request: object) =>
        new Promise<grpc.ServiceError>((resolve, reject) =>
          (client.client[method] as (...args: unknown[]) => void).call(
            client.client,
            request,
            metadata,
            (error: grpc.ServiceError | null) =>
              error === null ? reject(new Error("succeeded")) : resolve(error),
          ),
        );
      const created = await call("CreateEvent", { source: "s", type: "t", subject: ODD });
      expect([created.code, created.details]).toEqual([grpc.status.PERMISSION_DENIED, writeDenied]);
      const historic = await call("GetHistoricEventsFromSubject", { subject: ODD });
      expect([historic.code, historic.details]).toEqual([grpc.status.PERMISSION_DENIED, readDenied]);
    } finally {
      client.close();
    }
  });

  it("reaches connect-node exactly over gRPC, gRPC-Web and Connect", async () => {
    const kinds: ConnectKind[] = ["grpc (HTTP/2)", "grpc-web (HTTP/1.1)", "connect (HTTP/1.1)"];
    for (const kind of kinds) {
      const peer = connectPeer(kind, { url: `http://127.0.0.1:${server.restPort}`, grpcUrl });
      try {
        const created = await peer.client
          .createEvent({ source: "s", type: "t", subject: ODD }, { headers: auth })
          .then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
        expect(created?.rawMessage, kind).toBe(writeDenied);
        const historic = await peer.client
          .getHistoricEventsFromSubject({ subject: ODD }, { headers: auth })
          .then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
        expect(historic?.rawMessage, kind).toBe(readDenied);
      } finally {
        peer.close();
      }
    }
  });
});
