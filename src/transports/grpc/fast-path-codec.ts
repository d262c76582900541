import { toBinary } from "@bufbuild/protobuf";
import { appendReply } from "../../events/proto.js";
import { CreateEventReplySchema, CreateEventsReplySchema } from "../../gen/grpc/eventsdb_pb.js";

// The protobuf half of the gRPC unary fast path (fast-path.ts), imported with its first call so a
// server that is never called over gRPC does not load @bufbuild/protobuf and the descriptors.

export { decodeAppend, parseAppend } from "../../events/proto.js";

/** CreateEvent's or CreateEvents' reply as protobuf bytes. */
export function encodeAppendReply(batch: boolean, ids: readonly number[]): Uint8Array {
  return batch
    ? toBinary(CreateEventsReplySchema, appendReply(true, ids))
    : toBinary(CreateEventReplySchema, appendReply(false, ids));
}
