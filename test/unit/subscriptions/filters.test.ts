import { describe, expect, it } from "vitest";
import type { StoredEvent } from "../../../src/events/event.js";
import {
  attribute,
  evaluate,
  intersectScopes,
  matches,
  OwnerRevoked,
  ownerPrincipal,
} from "../../../src/subscriptions/filters.js";
import type { FilterExpression, SubscriptionSpec } from "../../../src/subscriptions/types.js";

/** Which events a subscription delivers: the spec's dialects (§3.2.4), source/types, and the owner's scopes. */

function event(overrides: Partial<StoredEvent> = {}): StoredEvent {
  return {
    id: 42,
    source: "https://shop.example/orders",
    type: "com.example.order.created",
    subject: "orders/7",
    ceId: "ce-1",
    time: "2026-01-02T03:04:05.120000Z",
    datacontenttype: "application/json",
    dataschema: undefined,
    extensions: { tenant: "acme", priority: 3, urgent: true },
    data: Buffer.from("{}"),
    ...overrides,
  };
}

function spec(overrides: Partial<SubscriptionSpec> = {}): SubscriptionSpec {
  return {
    source: undefined,
    types: undefined,
    config: { subject: undefined, recursive: false, type: undefined, window: 1 },
    filters: [],
    sink: "http://sink.test/",
    sinkcredential: undefined,
    protocol: "HTTP",
    protocolsettings: { method: "POST", headers: {}, contentmode: "structured" },
    description: undefined,
    ...overrides,
  };
}

describe("CloudEvents attributes of a stored event", () => {
  it("gives the producer's id, the canonical time, specversion and extensions as strings", () => {
    const e = event();
    expect(attribute(e, "id")).toBe("ce-1");
    expect(attribute(e, "specversion")).toBe("1.0");
    expect(attribute(e, "time")).toBe("2026-01-02T03:04:05.12Z");
    expect(attribute(e, "priority")).toBe("3");
    expect(attribute(e, "urgent")).toBe("true");
    expect(attribute(e, "dataschema")).toBeUndefined();
    expect(attribute(e, "missing")).toBeUndefined();
  });

  it("gives the server id as the id of an event without a producer id (as sinks receive it)", () => {
    expect(attribute(event({ ceId: undefined }), "id")).toBe("42");
  });
});

describe("filter dialects", () => {
  const cases: [string, FilterExpression, boolean][] = [
    ["exact on type", { exact: { type: "com.example.order.created" } }, true],
    ["exact is case-sensitive", { exact: { type: "com.example.Order.created" } }, false],
    ["exact needs every pair", { exact: { type: "com.example.order.created", subject: "orders/8" } }, false],
    ["exact on an extension", { exact: { tenant: "acme" } }, true],
    ["exact on an integer extension", { exact: { priority: "3" } }, true],
    ["attribute names are lower case", { exact: { TYPE: "com.example.order.created" } }, true],
    ["prefix", { prefix: { type: "com.example.", subject: "orders/" } }, true],
    ["prefix is case-sensitive", { prefix: { type: "COM." } }, false],
    ["suffix", { suffix: { type: ".created" } }, true],
    ["suffix mismatch", { suffix: { type: ".deleted" } }, false],
    ["an absent attribute never matches exact", { exact: { dataschema: "" } }, false],
    ["an absent attribute never matches prefix", { prefix: { region: "e" } }, false],
    ["an absent attribute never matches suffix", { suffix: { region: "u" } }, false],
    ["all", { all: [{ exact: { tenant: "acme" } }, { suffix: { type: "created" } }] }, true],
    ["all with one false", { all: [{ exact: { tenant: "acme" } }, { suffix: { type: "x" } }] }, false],
    ["any", { any: [{ exact: { tenant: "other" } }, { prefix: { subject: "orders" } }] }, true],
    ["any all false", { any: [{ exact: { tenant: "other" } }, { prefix: { subject: "users" } }] }, false],
    ["not", { not: { exact: { tenant: "other" } } }, true],
    ["not of an absent attribute", { not: { exact: { region: "eu" } } }, true],
    ["nested", { not: { any: [{ exact: { tenant: "acme" } }] } }, false],
    ["specversion", { exact: { specversion: "1.0" } }, true],
    ["id", { prefix: { id: "ce-" } }, true],
    ["time", { prefix: { time: "2026-01-02T" } }, true],
  ];
  it.each(cases)("%s", (_, expression, expected) => {
    expect(evaluate(expression, event())).toBe(expected);
  });

  it("treats an unknown dialect as false (delivers nothing rather than everything)", () => {
    expect(evaluate({ sql: "TRUE" } as unknown as FilterExpression, event())).toBe(false);
  });
});

describe("a subscription's match", () => {
  it("needs source, one of the types, the config type and every filter", () => {
    expect(matches(spec(), event())).toBe(true);
    expect(matches(spec({ source: "https://shop.example/orders" }), event())).toBe(true);
    expect(matches(spec({ source: "https://shop.example" }), event())).toBe(false);
    expect(matches(spec({ types: ["a", "com.example.order.created"] }), event())).toBe(true);
    expect(matches(spec({ types: ["a"] }), event())).toBe(false);
    expect(matches(spec({ types: [] }), event())).toBe(true);
    expect(
      matches(spec({ config: { subject: undefined, recursive: false, type: "other", window: 1 } }), event()),
    ).toBe(false);
    expect(
      matches(spec({ filters: [{ exact: { tenant: "acme" } }, { exact: { urgent: "false" } }] }), event()),
    ).toBe(false);
  });
});

describe("the owner's scopes", () => {
  it("intersects recorded and current scopes to the narrower of each covering pair", () => {
    expect(intersectScopes(["*"], ["orders", "users"])).toEqual(["orders", "users"]);
    expect(intersectScopes(["orders", "users"], ["*"])).toEqual(["orders", "users"]);
    expect(intersectScopes(["orders"], ["orders/eu", "users"])).toEqual(["orders/eu"]);
    expect(intersectScopes(["orders/eu"], ["orders"])).toEqual(["orders/eu"]);
    expect(intersectScopes(["orders"], ["users"])).toEqual([]);
    expect(intersectScopes(["orders"], ["ordersx"])).toEqual([]);
    expect(intersectScopes(["*"], ["*"])).toEqual(["*"]);
  });

  const record = { owner: "alice", ownerScopes: ["orders"] };
  it("keeps the recorded scopes on an open server", () => {
    expect(ownerPrincipal(record, { open: true, readScopes: () => undefined }).read).toEqual(["orders"]);
  });
  it("cuts them to the token's current read scopes (a token that gained scopes delivers no more)", () => {
    expect(ownerPrincipal(record, { open: false, readScopes: () => ["*"] }).read).toEqual(["orders"]);
    expect(ownerPrincipal(record, { open: false, readScopes: () => ["orders/eu"] }).read).toEqual([
      "orders/eu",
    ]);
  });
  it("revokes when the token is gone or may read none of it", () => {
    expect(() => ownerPrincipal(record, { open: false, readScopes: () => undefined })).toThrow(OwnerRevoked);
    expect(() => ownerPrincipal(record, { open: false, readScopes: () => ["users"] })).toThrow(
      /may read nothing/,
    );
  });
});
