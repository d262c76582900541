import { Code as UpstreamCode } from "@connectrpc/connect";
import * as protoConnect from "@connectrpc/connect/protocol-connect";
import * as protoGrpc from "@connectrpc/connect/protocol-grpc";
import * as protoGrpcWeb from "@connectrpc/connect/protocol-grpc-web";
import { describe, expect, it } from "vitest";
import { EventsDB } from "../../../src/gen/grpc/eventsdb_pb.js";
import { Health } from "../../../src/gen/grpc/health/v1/health_pb.js";
import * as reflectionV1 from "../../../src/gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "../../../src/gen/grpc/reflection/v1alpha/reflection_pb.js";
import {
  CONNECT_CONTENT_TYPE_PATTERNS,
  CONNECT_CONTENT_TYPES,
  RPC_PATHS,
} from "../../../src/transports/grpc/lazy.js";
import {
  Code,
  codeFromConnectName,
  connectCodeName,
  connectHttpStatus,
} from "../../../src/transports/status.js";

// status.ts and grpc/lazy.ts write out what a default start must not load Connect for: the gRPC
// codes and Connect's tables, the RPC paths and the content types upstream leaves unparsed. Each
// is pinned here to its source, so neither can drift from upstream or the proto.

describe("the Connect-free code table (status.ts)", () => {
  it("has @connectrpc/connect's codes, by name and value", () => {
    const upstream = Object.entries(UpstreamCode).filter(([, value]) => typeof value === "number");
    expect(Object.entries(Code)).toEqual(upstream);
  });

  it("names each code and maps it to HTTP as the Connect protocol does", () => {
    for (const code of Object.values(Code)) {
      expect(connectCodeName(code)).toBe(protoConnect.codeToString(code as number as UpstreamCode));
      expect(connectHttpStatus(code)).toBe(protoConnect.codeToHttpStatus(code as number as UpstreamCode));
      expect(codeFromConnectName(connectCodeName(code))).toBe(code);
    }
    expect(codeFromConnectName("no_such_code")).toBeUndefined();
  });
});

describe("the lazy RPC routes (grpc/lazy.ts)", () => {
  it("register every method of every served service", () => {
    const services = [EventsDB, Health, reflectionV1.ServerReflection, reflectionV1alpha.ServerReflection];
    const paths = services.flatMap((service) =>
      service.methods.map((method) => `/${service.typeName}/${method.name}`),
    );
    expect([...RPC_PATHS].sort()).toEqual(paths.sort());
  });

  it("leave unparsed the content types @connectrpc/connect-fastify does", () => {
    expect(CONNECT_CONTENT_TYPES).toEqual([
      protoConnect.contentTypeUnaryJson,
      protoConnect.contentTypeStreamJson,
      protoGrpcWeb.contentTypeProto,
      protoGrpcWeb.contentTypeJson,
      protoGrpc.contentTypeProto,
      protoGrpc.contentTypeJson,
    ]);
    expect(CONNECT_CONTENT_TYPE_PATTERNS.map(String)).toEqual(
      [protoGrpc.contentTypeRegExp, protoGrpcWeb.contentTypeRegExp, protoConnect.contentTypeRegExp].map(
        String,
      ),
    );
  });
});
