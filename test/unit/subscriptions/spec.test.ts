import { describe, expect, it } from "vitest";
import { EventsDbError } from "../../../src/errors.js";
import {
  MAX_FILTER_DEPTH,
  MAX_FILTER_NODES,
  parseSubscription,
  renderSubscription,
} from "../../../src/subscriptions/spec.js";
import type { SubscriptionRecord } from "../../../src/subscriptions/types.js";

/** The subscription object's parser (create and PUT) and its rendering, hostile inputs included. */

const minimal = { sink: "https://sink.example/hook", protocol: "HTTP" };

function refused(body: unknown, mode: "create" | "update" = "create"): string {
  try {
    parseSubscription(body, mode);
  } catch (error) {
    expect(error).toBeInstanceOf(EventsDbError);
    expect((error as EventsDbError).code).toBe("invalid_argument");
    return (error as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(body)}`);
}

function nest(depth: number): unknown {
  let expression: unknown = { exact: { type: "t" } };
  for (let i = 1; i < depth; i++) expression = { not: expression };
  return expression;
}

describe("parseSubscription", () => {
  it("fills the defaults of a minimal subscription", () => {
    const parsed = parseSubscription(minimal, "create");
    expect(parsed.spec).toEqual({
      source: undefined,
      types: undefined,
      config: { subject: undefined, recursive: false, type: undefined, window: 1 },
      filters: [],
      sink: "https://sink.example/hook",
      protocol: "HTTP",
      protocolsettings: { method: "POST", headers: {}, contentmode: "structured" },
      description: undefined,
    });
    expect(parsed.sinkcredential).toBeUndefined();
    expect(parsed.from).toBeUndefined();
  });

  it("takes every field", () => {
    const parsed = parseSubscription(
      {
        id: "ignored",
        status: { state: "parked" },
        source: "/orders",
        types: ["com.example.created", "com.example.paid"],
        config: { subject: "orders", recursive: true, type: "com.example.created", window: 4, from: 17 },
        filters: [
          { prefix: { type: "com.example." } },
          { any: [{ exact: { source: "/a" } }, { not: { suffix: { subject: "/test" } } }] },
          { all: [{ exact: { myext: "x" } }] },
        ],
        sink: "http://sink.example:8080/a?b=c",
        sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "s3cret", accesstokentype: "Bearer" },
        protocol: "HTTP",
        protocolsettings: { method: "PUT", headers: { "X-Team": "billing" }, contentmode: "binary" },
        description: "billing hook",
      },
      "create",
    );
    expect(parsed.spec.config).toEqual({
      subject: "orders",
      recursive: true,
      type: "com.example.created",
      window: 4,
    });
    expect(parsed.from).toBe(17);
    expect(parsed.spec.filters).toHaveLength(3);
    expect(parsed.spec.protocolsettings).toEqual({
      method: "PUT",
      headers: { "x-team": "billing" },
      contentmode: "binary",
    });
    expect(parsed.sinkcredential).toEqual({ credentialtype: "ACCESSTOKEN", accesstoken: "s3cret" });
    expect(parsed.spec.types).toEqual(["com.example.created", "com.example.paid"]);
    expect(parsed.spec.description).toBe("billing hook");
    expect(parseSubscription({ ...minimal, config: { from: "now" } }, "create").from).toBe("now");
    expect(parseSubscription({ ...minimal, types: [] }, "create").spec.types).toBeUndefined();
  });

  const cases: [unknown, string][] = [
    [[], "JSON object"],
    [null, "JSON object"],
    ["x", "JSON object"],
    [{ protocol: "HTTP" }, "sink is required"],
    [{ ...minimal, sink: 42 }, "sink must be a string"],
    [{ ...minimal, sink: "/relative" }, "absolute"],
    [{ ...minimal, sink: "ftp://sink.example/" }, "scheme ftp"],
    [{ ...minimal, sink: "javascript:alert(1)" }, "scheme javascript"],
    [{ ...minimal, sink: "https://user:pw@sink.example/" }, "user or password"],
    [{ ...minimal, sink: "https://user@sink.example/" }, "user or password"],
    [{ ...minimal, sink: "https://sink.example/#frag" }, "fragment"],
    [{ ...minimal, sink: `https://sink.example/${"a".repeat(3000)}` }, "longer than"],
    [{ sink: minimal.sink }, "protocol is required"],
    [{ ...minimal, protocol: "http" }, "case-sensitive"],
    [{ ...minimal, protocol: "MQTT5" }, "MQTT5 is not supported"],
    [{ ...minimal, protocol: "KAFKA" }, "KAFKA is not supported"],
    [{ ...minimal, protocol: 1 }, 'must be "HTTP"'],
    [{ ...minimal, protocolsettings: { method: "GET" } }, "method"],
    [{ ...minimal, protocolsettings: { method: "post" } }, "method"],
    [{ ...minimal, protocolsettings: { contentmode: "batched" } }, "contentmode"],
    [{ ...minimal, protocolsettings: { qos: 1 } }, 'unknown protocolsettings key "qos"'],
    [{ ...minimal, protocolsettings: { headers: { Host: "evil" } } }, "sets this header itself"],
    [{ ...minimal, protocolsettings: { headers: { "content-length": "1" } } }, "sets this header itself"],
    [{ ...minimal, protocolsettings: { headers: { Connection: "close" } } }, "sets this header itself"],
    [{ ...minimal, protocolsettings: { headers: { "Transfer-Encoding": "chunked" } } }, "itself"],
    [{ ...minimal, protocolsettings: { headers: { "ce-type": "x" } } }, "sets this header itself"],
    [{ ...minimal, protocolsettings: { headers: { "WebHook-Request-Origin": "x" } } }, "itself"],
    [{ ...minimal, protocolsettings: { headers: { "x-a": "1\r\nInjected: yes" } } }, "line breaks"],
    [{ ...minimal, protocolsettings: { headers: { "x-a": "caf\u00e9" } } }, "visible ASCII"],
    [{ ...minimal, protocolsettings: { headers: { "bad name": "1" } } }, "not a valid HTTP header name"],
    [{ ...minimal, protocolsettings: { headers: { "X-A": "1", "x-a": "2" } } }, "given twice"],
    [{ ...minimal, protocolsettings: { headers: { "x-a": 1 } } }, "must be a string"],
    [{ ...minimal, protocolsettings: { headers: ["x"] } }, "JSON object"],
    [
      {
        ...minimal,
        protocolsettings: {
          headers: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`x-${i}`, "v"])),
        },
      },
      "more than 32 headers",
    ],
    [{ ...minimal, filters: {} }, "filters must be an array"],
    [{ ...minimal, filters: [{}] }, "exactly one dialect key"],
    [{ ...minimal, filters: [{ exact: { type: "a" }, prefix: { type: "b" } }] }, "exactly one dialect key"],
    [{ ...minimal, filters: [{ sql: "type = 'a'" }] }, 'dialect "sql" is not supported'],
    [{ ...minimal, filters: [{ regex: { type: ".*" } }] }, 'dialect "regex" is not supported'],
    [{ ...minimal, filters: [{ exact: {} }] }, "at least one attribute"],
    [{ ...minimal, filters: [{ exact: { type: "" } }] }, "non-empty string"],
    [{ ...minimal, filters: [{ exact: { type: 5 } }] }, "non-empty string"],
    [{ ...minimal, filters: [{ prefix: { "": "x" } }] }, "not a CloudEvents attribute name"],
    [{ ...minimal, filters: [{ prefix: { Type: "x" } }] }, "not a CloudEvents attribute name"],
    [{ ...minimal, filters: [{ suffix: { __proto__x: "x" } }] }, "not a CloudEvents attribute name"],
    [{ ...minimal, filters: [{ all: [] }] }, "non-empty array"],
    [{ ...minimal, filters: [{ any: {} }] }, "non-empty array"],
    [{ ...minimal, filters: [{ not: [] }] }, "JSON object"],
    [{ ...minimal, filters: [{ not: null }] }, "JSON object"],
    [{ ...minimal, filters: [nest(MAX_FILTER_DEPTH + 1)] }, "deeper than"],
    [
      { ...minimal, filters: Array.from({ length: MAX_FILTER_NODES + 1 }, () => ({ exact: { type: "t" } })) },
      `more than ${MAX_FILTER_NODES} expressions`,
    ],
    [{ ...minimal, types: "a" }, "types must be an array"],
    [{ ...minimal, types: [""] }, "types[0]"],
    [{ ...minimal, types: ["a", 3] }, "types[1]"],
    [{ ...minimal, source: "" }, "source must not be empty"],
    [{ ...minimal, source: 7 }, "source must be a string"],
    [{ ...minimal, source: "a\nb" }, "control characters"],
    [{ ...minimal, config: [] }, "config must be a JSON object"],
    [{ ...minimal, config: { interval: 5 } }, 'unknown config key "interval"'],
    [{ ...minimal, config: { recursive: "yes" } }, "config.recursive"],
    [{ ...minimal, config: { window: 0 } }, "config.window"],
    [{ ...minimal, config: { window: 65 } }, "config.window"],
    [{ ...minimal, config: { window: 1.5 } }, "config.window"],
    [{ ...minimal, config: { subject: "" } }, "subject must not be empty"],
    [{ ...minimal, config: { subject: 3 } }, "subject must be a string"],
    [{ ...minimal, config: { type: "" } }, "config.type must not be empty"],
    [{ ...minimal, config: { from: -1 } }, "config.from"],
    [{ ...minimal, config: { from: "yesterday" } }, "config.from"],
    [{ ...minimal, config: { from: 2 ** 60 } }, "config.from"],
    [{ ...minimal, sinkcredential: "token" }, "sinkcredential must be a JSON object"],
    [
      { ...minimal, sinkcredential: { credentialtype: "PLAIN", identifier: "a" } },
      "unknown sinkcredential key",
    ],
    [{ ...minimal, sinkcredential: { credentialtype: "PLAIN" } }, '"ACCESSTOKEN"'],
    [{ ...minimal, sinkcredential: { credentialtype: "ACCESSTOKEN" } }, "accesstoken is required"],
    [{ ...minimal, sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "a b" } }, "visible ASCII"],
    [
      {
        ...minimal,
        sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "a", accesstokentype: "MAC" },
      },
      "Bearer",
    ],
    [{ ...minimal, description: 5 }, "description must be a string"],
    [{ ...minimal, sinks: "typo" }, 'unknown subscription field "sinks"'],
  ];
  it.each(cases.map(([body, message], i) => ({ body, message, i })))(
    "refuses #$i: $message",
    ({ body, message }) => {
      expect(refused(body)).toContain(message);
    },
  );

  it("stops at the depth cap however deep the nesting is", () => {
    expect(refused({ ...minimal, filters: [nest(100_000)] })).toContain("deeper than");
  });

  it("takes config.from only on create", () => {
    expect(refused({ ...minimal, config: { from: 3 } }, "update")).toContain("redrive");
  });

  it("keeps the stored credential on update when the token is absent, removes it with null", () => {
    expect(parseSubscription(minimal, "update").sinkcredential).toBe("keep");
    expect(
      parseSubscription({ ...minimal, sinkcredential: { credentialtype: "ACCESSTOKEN" } }, "update")
        .sinkcredential,
    ).toBe("keep");
    expect(parseSubscription({ ...minimal, sinkcredential: null }, "update").sinkcredential).toBeUndefined();
    expect(parseSubscription(minimal, "create").sinkcredential).toBeUndefined();
  });

  it("accepts filters at the depth cap and a __proto__ header name without touching prototypes", () => {
    const parsed = parseSubscription(
      JSON.parse(
        JSON.stringify({ ...minimal, filters: [nest(MAX_FILTER_DEPTH)] }).replace(
          '"protocol"',
          '"protocolsettings":{"headers":{"__proto__":"x"}},"protocol"',
        ),
      ),
      "create",
    );
    expect(parsed.spec.filters).toHaveLength(1);
    expect(Object.getPrototypeOf(parsed.spec.protocolsettings.headers)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });
});

describe("renderSubscription", () => {
  const record: SubscriptionRecord = {
    id: "5f1c",
    spec: {
      ...parseSubscription(
        {
          ...minimal,
          config: { subject: "orders", recursive: true },
          filters: [{ prefix: { type: "com." } }],
          protocolsettings: { headers: { "x-team": "a" } },
        },
        "create",
      ).spec,
      sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "s3cret" },
    },
    generation: 3,
    owner: "alice",
    ownerScopes: ["orders"],
    position: 40,
    state: "parked",
    parked: { reason: "HTTP 500 after 10 attempts", eventId: 41, at: Date.UTC(2026, 0, 2, 3, 4, 5) },
    validatedSink: undefined,
    validatedRate: undefined,
    lease: { holder: "host-1:123", expiresAt: Date.UTC(2026, 0, 2, 3, 5, 0) },
    createdAt: Date.UTC(2026, 0, 1),
    updatedAt: Date.UTC(2026, 0, 2),
  };

  it("renders the spec's object with status and never the access token", () => {
    const resource = renderSubscription(record, 50);
    expect(resource).toEqual({
      id: "5f1c",
      config: { subject: "orders", recursive: true, window: 1 },
      filters: [{ prefix: { type: "com." } }],
      sink: "https://sink.example/hook",
      sinkcredential: { credentialtype: "ACCESSTOKEN" },
      protocol: "HTTP",
      protocolsettings: { method: "POST", headers: { "x-team": "a" }, contentmode: "structured" },
      status: {
        state: "parked",
        position: 40,
        lag: 10,
        parked: { reason: "HTTP 500 after 10 attempts", eventid: 41, at: "2026-01-02T03:04:05.000Z" },
        lease: { holder: "host-1:123", expiresat: "2026-01-02T03:05:00.000Z" },
        owner: "alice",
        createdat: "2026-01-01T00:00:00.000Z",
        updatedat: "2026-01-02T00:00:00.000Z",
      },
    });
    expect(JSON.stringify(resource)).not.toContain("s3cret");
  });

  it("round-trips: a rendered subscription PUT back is the same spec, credential kept", () => {
    const resource = JSON.parse(JSON.stringify(renderSubscription(record, 50)));
    const parsed = parseSubscription(resource, "update");
    const { sinkcredential: _, ...spec } = record.spec;
    expect(parsed.spec).toEqual(spec);
    expect(parsed.sinkcredential).toBe("keep");
  });

  it("never reports negative lag", () => {
    expect(renderSubscription({ ...record, position: 60 }, 50).status.lag).toBe(0);
  });
});
