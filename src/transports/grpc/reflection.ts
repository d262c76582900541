import {
  create,
  createFileRegistry,
  type DescFile,
  type FileRegistry,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Request = v1.ServerReflectionRequest;
type Response = MessageInitShape<typeof v1.ServerReflectionResponseSchema>;

/**
 * gRPC server reflection (v1 and v1alpha) for every service on this router, so grpcurl, buf curl
 * and grpcui can call grpc.EventsDB without a copy of the .proto. There is no npm package for this
 * on Connect; the protocol is small enough to answer straight from the descriptors protoc-gen-es
 * embeds in src/gen.
 *
 * What is served is read from the router on the first request, not at registration, so services
 * registered after this one are listed too and the list cannot drift from what the router serves.
 */
export function reflectionRoutes(router: ConnectRouter): void {
  let index: { registry: FileRegistry; serviceNames: string[] } | undefined;
  const answer = (request: Request) => {
    if (index === undefined) {
      const services = [...new Set(router.handlers.map((handler) => handler.service))];
      index = {
        registry: fileRegistry(services.map((service) => service.file)),
        serviceNames: services.map((service) => service.typeName),
      };
    }
    return respond(index.registry, index.serviceNames, request);
  };

  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const request of requests) yield answer(request);
    },
  });

  // v1alpha is the same protocol under an older package name, with identical field numbers. Older
  // clients only speak it, so it is served by re-encoding each message as the other version rather
  // than by a second implementation that could drift.
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const alpha of requests) {
        const request = fromBinary(
          v1.ServerReflectionRequestSchema,
          toBinary(v1alpha.ServerReflectionRequestSchema, alpha),
        );
        const response = create(v1.ServerReflectionResponseSchema, answer(request));
        yield fromBinary(
          v1alpha.ServerReflectionResponseSchema,
          toBinary(v1.ServerReflectionResponseSchema, response),
        );
      }
    },
  });
}

/**
 * One registry over the given files and everything they import. Rebuilt from the FileDescriptorProtos
 * (dependencies first, as createFileRegistry requires) because a FileRegistry is what offers
 * lookups by file name as well as by symbol.
 */
function fileRegistry(roots: readonly DescFile[]): FileRegistry {
  const ordered: DescFile[] = [];
  const visit = (file: DescFile) => {
    if (ordered.includes(file)) return;
    for (const dependency of file.dependencies) visit(dependency);
    ordered.push(file);
  };
  for (const file of roots) visit(file);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered.map((file) => file.proto) }));
}

/**
 * Lookup failures are answered in-band with error_response, as the protocol asks, so the stream
 * stays open for the client's next question.
 */
function respond(registry: FileRegistry, serviceNames: readonly string[], request: Request): Response {
  const base = { validHost: request.host, originalRequest: request };
  const notFound = (what: string): Response => ({
    ...base,
    messageResponse: {
      case: "errorResponse",
      value: { errorCode: Code.NotFound, errorMessage: `${what} not found` },
    },
  });
  const files = (file: DescFile | undefined, what: string): Response =>
    file === undefined
      ? notFound(what)
      : {
          ...base,
          messageResponse: {
            case: "fileDescriptorResponse",
            value: { fileDescriptorProto: withDependencies(file).map(serialize) },
          },
        };

  const message = request.messageRequest;
  switch (message.case) {
    case "listServices":
      return {
        ...base,
        messageResponse: {
          case: "listServicesResponse",
          value: { service: serviceNames.map((name) => ({ name })) },
        },
      };
    case "fileByFilename":
      return files(registry.getFile(message.value), `file ${message.value}`);
    case "fileContainingSymbol":
      return files(fileContainingSymbol(registry, message.value), `symbol ${message.value}`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = message.value;
      const extendee = registry.getMessage(containingType);
      const extension = extendee && registry.getExtensionFor(extendee, extensionNumber);
      return files(extension?.file, `extension ${extensionNumber} of ${containingType}`);
    }
    case "allExtensionNumbersOfType": {
      if (registry.getMessage(message.value) === undefined) return notFound(`type ${message.value}`);
      const numbers: number[] = [];
      for (const desc of registry) {
        if (desc.kind === "extension" && desc.extendee.typeName === message.value) numbers.push(desc.number);
      }
      return {
        ...base,
        messageResponse: {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: message.value, extensionNumber: numbers },
        },
      };
    }
    default:
      return {
        ...base,
        messageResponse: {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "no message_request set" },
        },
      };
  }
}

/**
 * Types, services and extensions are in the registry by full name; members (methods, fields) are
 * not, yet clients ask for them (`grpcurl describe grpc.EventsDB.CreateEvent`), so those are found
 * through their parent.
 */
function fileContainingSymbol(registry: FileRegistry, symbol: string): DescFile | undefined {
  const desc = registry.get(symbol);
  if (desc !== undefined) return desc.file;
  const dot = symbol.lastIndexOf(".");
  if (dot < 0) return undefined;
  const parent = registry.get(symbol.slice(0, dot));
  const member = symbol.slice(dot + 1);
  if (parent?.kind === "service" && parent.methods.some((method) => method.name === member))
    return parent.file;
  if (parent?.kind === "message" && parent.members.some((m) => m.name === member)) return parent.file;
  return undefined;
}

/**
 * The file first, then everything it imports transitively: clients need the whole closure to build
 * the types. Files already sent earlier on the stream are sent again; the protocol allows skipping
 * them, but clients cope either way and the saving is a few hundred bytes.
 */
function withDependencies(file: DescFile): DescFile[] {
  const out: DescFile[] = [file];
  // An array iterator also visits what is pushed while iterating: a breadth-first walk.
  for (const current of out) {
    for (const dependency of current.dependencies) if (!out.includes(dependency)) out.push(dependency);
  }
  return out;
}

function serialize(file: DescFile): Uint8Array {
  return toBinary(FileDescriptorProtoSchema, file.proto);
}
