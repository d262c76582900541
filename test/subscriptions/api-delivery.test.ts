import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { writeAuthFile } from "../support/auth.js";
import { DIALECTS } from "../support/dialects.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { Sink, waitFor } from "./sinks.js";

/**
 * The two halves of push subscriptions together, as a user drives them: a subscription created,
 * changed and redriven through the REST API is delivered by the server's own deliverer — at once,
 * not at its next lease tick (the lease here is two minutes, its tick 40 s, longer than a test may
 * wait) — and only with what its narrow token may read.
 */

const ORDERS = { name: "orders", token: "orders-token", read: ["orders"], write: ["*"] };

describe.each(DIALECTS)("subscriptions through the API, delivered on $name", (dialect) => {
  const servers: TestServer[] = [];
  const sinks: Sink[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await Promise.all(sinks.splice(0).map((s) => s.close()));
  });

  const start = async (): Promise<TestServer> => {
    const authFile = writeAuthFile(mkdtempSync(join(tmpdir(), "eventsdb-subs-")), [ORDERS]);
    const t = await startTestServer(await dialect.url(), {
      "auth-file": authFile,
      "webhook-allow-private": "true",
      "subscription-lease-seconds": "120",
      "webhook-backoff-ms": "20",
      "webhook-max-attempts": "2",
    });
    servers.push(t);
    return t;
  };
  const sink = async (): Promise<Sink> => {
    const s = await new Sink().start();
    sinks.push(s);
    return s;
  };
  const call = async (t: TestServer, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${t.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${ORDERS.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: text === "" ? undefined : (JSON.parse(text) as unknown),
    };
  };
  const post = (t: TestServer, subject: string, id: string) =>
    fetch(`${t.url}/events`, {
      method: "POST",
      headers: { authorization: `Bearer ${ORDERS.token}`, "content-type": "application/cloudevents+json" },
      body: JSON.stringify({ specversion: "1.0", id, source: "api-test", type: "order.placed", subject }),
    });

  it("delivers what a created subscription selects at once, within the token's scopes; a PUT to a new sink moves it there", async () => {
    const t = await start();
    const first = await sink();
    const created = await call(t, "POST", "/subscriptions", {
      sink: first.url,
      protocol: "HTTP",
      config: { subject: "orders", recursive: true },
    });
    expect(created.status).toBe(201);
    const id = String((created.body as { id?: string } | undefined)?.id);

    // The token may not read other subjects, so it may not subscribe to them (nothing stored).
    expect((await call(t, "POST", "/subscriptions", { sink: first.url, protocol: "HTTP" })).status).toBe(403);

    expect((await post(t, "orders/1", "o-1")).ok).toBe(true);
    expect((await post(t, "orders/2", "o-2")).ok).toBe(true);
    await waitFor("both orders at the first sink", () => first.ids.length >= 2);
    expect(first.ids).toEqual(["o-1", "o-2"]);

    const second = await sink();
    const moved = await call(t, "PUT", `/subscriptions/${id}`, {
      sink: second.url,
      protocol: "HTTP",
      config: { subject: "orders", recursive: true },
    });
    expect(moved.status).toBe(200);
    expect((await post(t, "orders/3", "o-3")).ok).toBe(true);
    await waitFor("the next order at the new sink, after its own handshake", () =>
      second.ids.includes("o-3"),
    );
    expect(second.handshakes.length).toBe(1);
    expect(first.ids).not.toContain("o-3");

    // Its counter series live while it is delivered here, and go with it: deleted subscriptions
    // do not pile up series in /metrics.
    const series = async () =>
      (await (await fetch(`${t.url}/metrics`)).text())
        .split("\n")
        .filter((line) => line.startsWith("eventsdb_subscription_deliveries_total") && line.includes(id));
    expect(await series()).toHaveLength(1);
    expect((await call(t, "DELETE", `/subscriptions/${id}`)).status).toBe(204);
    await waitFor("its series gone from /metrics", async () => (await series()).length === 0);
  });

  it("parks after the attempts run out, shows why in the API, and a redrive through the API delivers again at once", async () => {
    const t = await start();
    const s = await sink();
    s.answer = () => ({ status: 500 });
    const created = await call(t, "POST", "/subscriptions", {
      sink: s.url,
      protocol: "HTTP",
      config: { subject: "orders", recursive: true },
    });
    const id = String((created.body as { id?: string } | undefined)?.id);
    expect((await post(t, "orders/1", "p-1")).ok).toBe(true);

    const parked = async () => {
      const read = await call(t, "GET", `/subscriptions/${id}`);
      return (read.body as { status?: { state?: string } } | undefined)?.status?.state === "parked";
    };
    await waitFor("the subscription parked", parked);
    const shown = (await call(t, "GET", `/subscriptions/${id}`)).body as {
      status: { parked: { reason: string } };
    };
    expect(shown.status.parked.reason).toMatch(/500/);

    s.answer = () => ({ status: 204 });
    const before = s.ids.length;
    expect((await call(t, "POST", `/subscriptions/${id}/redrive`)).status).toBe(200);
    await waitFor("the parked event delivered after the redrive", () => s.ids.slice(before).includes("p-1"));
    expect(await parked()).toBe(false);
  });
});
