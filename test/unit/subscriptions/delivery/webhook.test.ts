import { describe, expect, it } from "vitest";
import type { StoredEvent } from "../../../../src/events/event.js";
import { toStructuredJson } from "../../../../src/events/formats.js";
import { deliveryRequest, encodeHeaderValue } from "../../../../src/subscriptions/delivery/webhook.js";
import type { SubscriptionSpec } from "../../../../src/subscriptions/types.js";

/** One event as the request a sink receives, in both content modes. */

const event: StoredEvent = {
  id: 5,
  source: "urn:shop",
  type: "order.created",
  subject: "orders/1",
  ceId: "a b",
  time: "2026-01-02T03:04:05.000000Z",
  datacontenttype: "text/plain",
  dataschema: undefined,
  extensions: { tenant: "äcme" },
  data: Buffer.from("hello"),
};

function spec(contentmode: "structured" | "binary"): SubscriptionSpec {
  return {
    source: undefined,
    types: undefined,
    config: { subject: undefined, recursive: false, type: undefined, window: 1 },
    filters: [],
    sink: "http://sink.test/",
    sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "s3cret" },
    protocol: "HTTP",
    protocolsettings: {
      method: "PUT",
      headers: { "X-Team": "blue", Host: "evil.test", "Content-Length": "1", "ce-id": "forged" },
      contentmode,
    },
    description: undefined,
  };
}

describe("delivery requests", () => {
  it("sends structured mode as the store's CloudEvents JSON, with method, headers and the credential", () => {
    const request = deliveryRequest(spec("structured"), event, "events.example");
    expect(request.method).toBe("PUT");
    expect(request.body).toBe(toStructuredJson(event));
    expect(request.headers).toEqual({
      "x-team": "blue",
      "webhook-request-origin": "events.example",
      authorization: "Bearer s3cret",
      "content-type": "application/cloudevents+json; charset=utf-8",
    });
  });

  it("sends binary mode as ce- headers (percent-encoded) and the data with its content type", () => {
    const request = deliveryRequest(spec("binary"), event, "events.example");
    expect(request.body).toEqual(Buffer.from("hello"));
    expect(request.headers).toMatchObject({
      "ce-specversion": "1.0",
      "ce-id": "a%20b",
      "ce-source": "urn:shop",
      "ce-type": "order.created",
      "ce-subject": "orders/1",
      "ce-time": "2026-01-02T03:04:05Z",
      "ce-tenant": "%C3%A4cme",
      "content-type": "text/plain",
      "x-team": "blue",
    });
    expect(request.headers["ce-datacontenttype"]).toBeUndefined();
    expect(request.headers.host).toBeUndefined();
  });

  it("sends an Authorization header of the subscription's own when it has no sink credential", () => {
    const basic = { ...spec("structured"), sinkcredential: undefined };
    basic.protocolsettings = { ...basic.protocolsettings, headers: { authorization: "Basic dTpw" } };
    expect(deliveryRequest(basic, event, "events.example").headers.authorization).toBe("Basic dTpw");
    // With a credential, the credential's: never both (the service refuses that pair on write).
    const both = {
      ...basic,
      sinkcredential: { credentialtype: "ACCESSTOKEN" as const, accesstoken: "s3cret" },
    };
    expect(deliveryRequest(both, event, "events.example").headers.authorization).toBe("Bearer s3cret");
  });

  it("percent-encodes space, quote, percent and non-ASCII only", () => {
    expect(encodeHeaderValue('a "b" 100%/é~')).toBe("a%20%22b%22%20100%25/%C3%A9~");
  });
});
