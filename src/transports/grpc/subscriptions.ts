import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type FilterExpressionSchema,
  type FilterExpression as ProtoFilter,
  type Subscription,
  SubscriptionSchema,
} from "../../gen/grpc/eventsdb_pb.js";
import type { SubscriptionResource } from "../../subscriptions/spec.js";
import type { FilterExpression } from "../../subscriptions/types.js";

/**
 * grpc.Subscription ⇄ the Subscriptions API's JSON object. Requests become the JSON a REST client
 * would send, so spec.ts's one parser (and its messages) decides for every transport; answers are
 * spec.ts's one rendering, copied into the message. Unset proto3 fields become absent keys (the
 * parser's defaults apply); nothing here validates.
 */
export function subscriptionFromProto(message: Subscription | undefined): Record<string, unknown> {
  if (message === undefined) return {};
  const json: Record<string, unknown> = {};
  if (message.id !== "") json.id = message.id;
  if (message.source !== undefined) json.source = message.source;
  if (message.types.length > 0) json.types = [...message.types];
  if (message.config !== undefined) {
    const c = message.config;
    json.config = {
      ...(c.subject === undefined ? {} : { subject: c.subject }),
      recursive: c.recursive,
      ...(c.type === undefined ? {} : { type: c.type }),
      ...(c.window === undefined ? {} : { window: c.window }),
      ...(c.from === undefined ? {} : { from: c.from }),
    };
  }
  if (message.filters.length > 0) json.filters = message.filters.map(filterFromProto);
  if (message.sink !== "") json.sink = message.sink;
  if (message.sinkcredential !== undefined) {
    const { credentialtype, accesstoken } = message.sinkcredential;
    json.sinkcredential = { credentialtype, ...(accesstoken === "" ? {} : { accesstoken }) };
  }
  if (message.protocol !== "") json.protocol = message.protocol;
  if (message.protocolsettings !== undefined) {
    const { method, headers, contentmode } = message.protocolsettings;
    json.protocolsettings = {
      ...(method === "" ? {} : { method }),
      headers: { ...headers },
      ...(contentmode === "" ? {} : { contentmode }),
    };
  }
  if (message.description !== undefined) json.description = message.description;
  return json;
}

/** A filter message as the spec's JSON; an empty oneof becomes `{}`, which the parser refuses. */
function filterFromProto(filter: ProtoFilter): unknown {
  const { dialect } = filter;
  switch (dialect.case) {
    case "exact":
    case "prefix":
    case "suffix":
      return { [dialect.case]: { ...dialect.value.attributes } };
    case "all":
    case "any":
      return { [dialect.case]: dialect.value.filters.map(filterFromProto) };
    case "not":
      return { not: filterFromProto(dialect.value) };
    default:
      return {};
  }
}

export function subscriptionToProto(resource: SubscriptionResource): Subscription {
  const { status } = resource;
  return create(SubscriptionSchema, {
    id: resource.id,
    source: resource.source,
    types: [...(resource.types ?? [])],
    config: {
      subject: resource.config.subject,
      recursive: resource.config.recursive,
      type: resource.config.type,
      window: resource.config.window,
    },
    filters: resource.filters.map(filterToProto),
    sink: resource.sink,
    sinkcredential: resource.sinkcredential,
    protocol: resource.protocol,
    protocolsettings: { ...resource.protocolsettings, headers: { ...resource.protocolsettings.headers } },
    description: resource.description,
    status: {
      state: status.state,
      position: BigInt(status.position),
      lag: BigInt(status.lag),
      parked:
        status.parked === undefined
          ? undefined
          : {
              reason: status.parked.reason,
              eventId: status.parked.eventid === undefined ? undefined : BigInt(status.parked.eventid),
              at: status.parked.at,
            },
      leaseHolder: status.lease?.holder ?? "",
      leaseExpiresAt: status.lease?.expiresat ?? "",
      owner: status.owner,
      createdAt: status.createdat,
      updatedAt: status.updatedat,
    },
  });
}

function filterToProto(filter: FilterExpression): MessageInitShape<typeof FilterExpressionSchema> {
  if ("exact" in filter) return { dialect: { case: "exact", value: { attributes: { ...filter.exact } } } };
  if ("prefix" in filter) return { dialect: { case: "prefix", value: { attributes: { ...filter.prefix } } } };
  if ("suffix" in filter) return { dialect: { case: "suffix", value: { attributes: { ...filter.suffix } } } };
  if ("all" in filter) return { dialect: { case: "all", value: { filters: filter.all.map(filterToProto) } } };
  if ("any" in filter) return { dialect: { case: "any", value: { filters: filter.any.map(filterToProto) } } };
  return { dialect: { case: "not", value: filterToProto(filter.not) } };
}
