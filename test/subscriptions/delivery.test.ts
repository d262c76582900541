import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tokenDigest } from "../../src/auth/tokens.js";
import { SubscriptionStore } from "../../src/subscriptions/store.js";
import type { SubscriptionRecord } from "../../src/subscriptions/types.js";
import { DIALECTS } from "../support/dialects.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { append, Sink, subscribe, subscriptionSpec, waitFor, withoutRepeats } from "./sinks.js";

/**
 * Push delivery end to end on both stores: a real server (its delivery manager claims the
 * subscriptions) and real web hook sinks on 127.0.0.1 that acknowledge, fail, throttle, hang,
 * refuse and die.
 */

/** Loopback sinks need --webhook-allow-private; short leases and backoff keep the tests quick. */
const FLAGS = {
  "webhook-allow-private": "true",
  "subscription-lease-seconds": "1",
  "webhook-backoff-ms": "20",
  "webhook-backoff-max-seconds": "1",
  "webhook-timeout-seconds": "2",
};

describe.each(DIALECTS)("push delivery on $name", (dialect) => {
  const servers: TestServer[] = [];
  const sinks: Sink[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await Promise.all(sinks.splice(0).map((s) => s.close()));
  });
  const start = async (flags: Record<string, string> = {}, url?: string) => {
    const t = await startTestServer(url ?? (await dialect.url()), { ...FLAGS, ...flags });
    servers.push(t);
    return t.server;
  };
  const sink = async () => {
    const s = await new Sink().start();
    sinks.push(s);
    return s;
  };
  const record = async (server: { eventLog: { dialect: never } } | TestServer["server"], id: string) =>
    (await new SubscriptionStore((server as TestServer["server"]).eventLog.dialect).get(
      id,
    )) as SubscriptionRecord;

  it("delivers every matching event to each sink in id order, structured and binary, after one handshake", async () => {
    const server = await start({ "webhook-origin": "events.test" });
    const structured = await sink();
    const binary = await sink();
    const a = await subscribe(
      server,
      subscriptionSpec(structured.url, {
        filters: [{ prefix: { id: "keep" } }],
        sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "tok" },
        protocolsettings: { method: "POST", headers: { "X-Team": "blue" }, contentmode: "structured" },
      }),
    );
    const b = await subscribe(
      server,
      subscriptionSpec(binary.url, {
        protocolsettings: { method: "PUT", headers: {}, contentmode: "binary" },
      }),
    );
    const kept1 = await append(server, 5, "keep-a");
    const other = await append(server, 3, "skip");
    const kept2 = await append(server, 5, "keep-b");
    await waitFor("both sinks", () => structured.received.length >= 10 && binary.received.length >= 13);
    expect(structured.ids).toEqual([...kept1, ...kept2]);
    expect(binary.ids).toEqual([...kept1, ...other, ...kept2]);
    expect(structured.handshakes).toHaveLength(1);
    expect(structured.handshakes[0]?.headers["webhook-request-origin"]).toBe("events.test");
    const first = structured.received[0];
    expect(first?.method).toBe("POST");
    expect(first?.headers.authorization).toBe("Bearer tok");
    expect(first?.headers["x-team"]).toBe("blue");
    expect(first?.headers["webhook-request-origin"]).toBe("events.test");
    expect(first?.headers["content-type"]).toBe("application/cloudevents+json; charset=utf-8");
    expect(JSON.parse(first?.body.toString() ?? "")).toMatchObject({ specversion: "1.0", data: { n: 1 } });
    const firstBinary = binary.received[0];
    expect(firstBinary?.method).toBe("PUT");
    expect(firstBinary?.headers["ce-specversion"]).toBe("1.0");
    expect(firstBinary?.headers["content-type"]).toBe("application/json");
    expect(firstBinary?.body.toString()).toBe('{"n":1}');
    // The checkpoint reaches the last event (past the skipped ones too).
    const last = (
      await server.eventLog.page({ subjects: [], recursive: false, type: undefined, fromId: 0, limit: 100 })
    ).nextFromId;
    await waitFor("checkpoints", async () => (await record(server, a.id)).position === last);
    await waitFor("checkpoints", async () => (await record(server, b.id)).position === last);
    expect((await record(server, a.id)).validatedSink).toBe(structured.url);
    const metrics = await server.metrics.registry.metrics();
    expect(metrics).toContain(`eventsdb_subscription_deliveries_total{subscription="${a.id}"} 10`);
    expect(metrics).toContain(`eventsdb_subscription_lag_events{subscription="${a.id}"} 0`);
    expect(metrics).toContain(`eventsdb_subscription_lag_seconds{subscription="${a.id}"} 0`);
    expect(metrics).toContain(`eventsdb_subscription_parked{subscription="${a.id}"} 0`);
    expect(metrics).toContain('eventsdb_subscription_handshakes_total{result="accepted"} 2');
  });

  it("retries a failing event (500, then ok) and redelivers only it", async () => {
    const server = await start();
    const s = await sink();
    let failures = 2;
    s.answer = (request) => (request.id === "e-2" && failures-- > 0 ? { status: 500 } : { status: 200 });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    const ids = await append(server, 4, "e");
    await waitFor("all events", () => s.received.length >= 6);
    expect(s.ids).toEqual(["e-1", "e-2", "e-2", "e-2", "e-3", "e-4"]);
    expect(await server.metrics.registry.metrics()).toContain(
      `eventsdb_subscription_failures_total{subscription="${sub.id}",reason="http_500"} 2`,
    );
    expect(withoutRepeats(s.ids)).toEqual(ids);
  });

  it("honours Retry-After of a 429 (the backoff alone would wait an hour)", async () => {
    const server = await start({ "webhook-backoff-ms": "3600000", "webhook-backoff-max-seconds": "3600" });
    const s = await sink();
    let throttled = false;
    s.answer = () => {
      if (throttled) return { status: 200 };
      throttled = true;
      return { status: 429, headers: { "Retry-After": "1" } };
    };
    await subscribe(server, subscriptionSpec(s.url));
    await append(server, 2, "t");
    await waitFor("delivery after Retry-After", () => s.received.length >= 3);
    expect(s.ids).toEqual(["t-1", "t-1", "t-2"]);
  });

  it("times a hanging sink out (--webhook-timeout-seconds) and delivers on the next attempt", async () => {
    const server = await start({ "webhook-timeout-seconds": "1" });
    const s = await sink();
    s.answer = (_, index) => (index === 0 ? { hang: true } : { status: 200 });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 2, "h");
    await waitFor("delivery after the timeout", () => s.received.length >= 3);
    expect(s.ids).toEqual(["h-1", "h-1", "h-2"]);
    expect(await server.metrics.registry.metrics()).toContain(
      `eventsdb_subscription_failures_total{subscription="${sub.id}",reason="timeout"} 1`,
    );
  });

  it("parks a subscription whose sink refuses the handshake, delivering nothing", async () => {
    const server = await start({ "webhook-max-attempts": "2" });
    const s = await sink();
    s.consent = "refuse";
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 1, "r");
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    expect((await record(server, sub.id)).parked?.reason).toMatch(/handshake refused.*\(2 attempts\)/);
    expect(s.handshakes).toHaveLength(2);
    expect(s.received).toHaveLength(0);
  });

  it("parks after --webhook-max-attempts with the reason and event id; redrive resumes in order", async () => {
    const server = await start({ "webhook-max-attempts": "3" });
    const s = await sink();
    let down = true;
    s.answer = () => ({ status: down ? 500 : 200 });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    const ids = await append(server, 3, "p");
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    const parked = await record(server, sub.id);
    expect(parked.parked?.reason).toBe("HTTP 500 (3 attempts)");
    const firstId = (
      await server.eventLog.page({ subjects: [], recursive: false, type: undefined, fromId: 0, limit: 1 })
    ).nextFromId;
    expect(parked.parked?.eventId).toBe(firstId);
    expect(parked.position).toBe(0);
    expect(s.ids).toEqual(["p-1", "p-1", "p-1"]);
    expect(await server.metrics.registry.metrics()).toContain(
      `eventsdb_subscription_parked{subscription="${sub.id}"} 1`,
    );
    down = false;
    await new SubscriptionStore(server.eventLog.dialect).redrive(sub.id);
    await server.delivery.poke();
    await waitFor("redriven delivery", () => s.received.length >= 6);
    expect(withoutRepeats(s.ids)).toEqual(ids);
    expect((await record(server, sub.id)).state).toBe("active");
  });

  it("parks after --webhook-max-retry-seconds of failing one event", async () => {
    const server = await start({ "webhook-max-attempts": "1000000", "webhook-max-retry-seconds": "1" });
    const s = await sink();
    s.answer = () => ({ status: 503 });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 1, "m");
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    expect((await record(server, sub.id)).parked?.reason).toMatch(/^HTTP 503 \(failing for \d+ s\)$/);
  });

  it("parks at once on 410 Gone (the sink wants no more)", async () => {
    const server = await start({ "webhook-max-attempts": "100" });
    const s = await sink();
    s.answer = () => ({ status: 410 });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 2, "g");
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    expect((await record(server, sub.id)).parked?.reason).toBe("HTTP 410");
    expect(s.ids).toEqual(["g-1"]);
  });

  it("survives a sink that dies mid-run and comes back: nothing lost, in order", async () => {
    const server = await start();
    const s = await sink();
    const sub = await subscribe(server, subscriptionSpec(s.url));
    const before = await append(server, 5, "d1");
    await waitFor("first events", () => s.received.length >= 5);
    await s.close();
    const during = await append(server, 5, "d2");
    await waitFor("a failed attempt", async () =>
      (await server.metrics.registry.metrics()).includes(`subscription="${sub.id}",reason="connection"`),
    );
    await s.start(); // same port
    const after = await append(server, 5, "d3");
    await waitFor("all events", () => new Set(s.ids).size >= 15);
    expect(withoutRepeats(s.ids)).toEqual([...before, ...during, ...after]);
  });

  it("moves the checkpoint only past a contiguous acknowledged prefix with a window > 1", async () => {
    const server = await start({ "webhook-max-attempts": "1000000" });
    const s = await sink();
    let holdFirst = true;
    s.answer = (request) => ({ status: request.id === "w-1" && holdFirst ? 500 : 200 });
    const sub = await subscribe(
      server,
      subscriptionSpec(s.url, {
        config: { subject: undefined, recursive: false, type: undefined, window: 4 },
      }),
    );
    await append(server, 4, "w");
    await waitFor("the others acknowledged", () => ["w-2", "w-3", "w-4"].every((id) => s.ids.includes(id)));
    await waitFor("w-1 retried", () => s.ids.filter((id) => id === "w-1").length >= 3);
    expect((await record(server, sub.id)).position).toBe(0);
    holdFirst = false;
    const last = (
      await server.eventLog.page({ subjects: [], recursive: false, type: undefined, fromId: 0, limit: 100 })
    ).nextFromId;
    await waitFor("checkpoint", async () => (await record(server, sub.id)).position === last);
  });

  it("resumes after the last acknowledged id when the server starts again", async () => {
    const url = await dialect.url();
    const first = await start({}, url);
    const s = await sink();
    const sub = await subscribe(first, subscriptionSpec(s.url));
    const before = await append(first, 4, "c1");
    await waitFor("first events", () => s.received.length >= 4);
    await waitFor("checkpoint", async () => (await record(first, sub.id)).position === 4);
    await (servers.pop() as TestServer).close();
    const second = await start({}, url);
    const after = await append(second, 3, "c2");
    await second.delivery.poke();
    await waitFor("the rest", () => s.received.length >= 7);
    expect(s.ids).toEqual([...before, ...after]);
    expect(s.handshakes).toHaveLength(1);
  });

  it("refuses private sinks without --webhook-allow-private, before any connection", async () => {
    const server = await start({ "webhook-allow-private": "false", "webhook-max-attempts": "100" });
    const s = await sink();
    const targets = [s.url, "http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]:1/hook"];
    const subs = [];
    for (const target of targets) subs.push(await subscribe(server, subscriptionSpec(target)));
    await append(server, 1, "x");
    for (const sub of subs) {
      await waitFor(`parked ${sub.spec.sink}`, async () => (await record(server, sub.id)).state === "parked");
      expect((await record(server, sub.id)).parked?.reason).toMatch(/private or local address/);
    }
    expect(s.handshakes).toHaveLength(0);
    expect(s.received).toHaveLength(0);
  });

  it("refuses a name that resolves to loopback without --webhook-allow-private", async () => {
    const server = await start({ "webhook-allow-private": "false" });
    const s = await sink();
    const sub = await subscribe(server, subscriptionSpec(`http://localhost:${s.port}/hook`));
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    expect((await record(server, sub.id)).parked?.reason).toMatch(/resolves to .*private or local address/);
    expect(s.handshakes).toHaveLength(0);
  });

  it("does not follow redirects", async () => {
    const server = await start({ "webhook-max-attempts": "2" });
    const target = await sink();
    const s = await sink();
    s.answer = () => ({ status: 307, headers: { Location: target.url } });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 1, "redirect");
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    expect((await record(server, sub.id)).parked?.reason).toBe(
      "HTTP 307 redirect (not followed) (2 attempts)",
    );
    expect(target.received).toHaveLength(0);
  });

  it("reads a response body only up to --webhook-response-bytes, then cuts the connection", async () => {
    const server = await start({ "webhook-response-bytes": "1024", "webhook-timeout-seconds": "30" });
    const s = await sink();
    s.answer = () => ({ status: 200, endless: true });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 2, "big");
    await waitFor("checkpoint", async () => (await record(server, sub.id)).position === 2);
    expect(s.ids).toEqual(["big-1", "big-2"]);
    await waitFor("responses cut", () => s.responseClosed === 2);
  });

  it("spaces requests by the rate the handshake granted", async () => {
    const server = await start();
    const s = await sink();
    s.allowedRate = "600"; // one request per 100 ms
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 3, "rate");
    await waitFor("delivered", () => s.received.length >= 3);
    expect((await record(server, sub.id)).validatedRate).toBe(600);
  });

  it("delivers only what the owner may still read, and parks when its token is gone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "eventsdb-auth-"));
    const authFile = join(dir, "auth.json");
    const token = (name: string, read: string[]) => ({
      name,
      sha256: tokenDigest(`${name}-secret`).toString("hex"),
      read,
      write: ["*"],
    });
    writeFileSync(authFile, JSON.stringify({ tokens: [token("alice", ["orders"]), token("admin", ["*"])] }));
    const server = await start({ "auth-file": authFile });
    const s = await sink();
    const sub = await subscribe(server, subscriptionSpec(s.url), { owner: "alice", ownerScopes: ["*"] });
    const orders = await append(server, 2, "o");
    await append(server, 2, "u", { subject: "users/1" });
    await waitFor("orders", () => s.received.length >= 2);
    writeFileSync(authFile, JSON.stringify({ tokens: [token("admin", ["*"])] }));
    server.reload();
    await append(server, 1, "later");
    await waitFor("parked", async () => (await record(server, sub.id)).state === "parked");
    expect((await record(server, sub.id)).parked?.reason).toBe("the owner token alice no longer exists");
    expect(s.ids).toEqual(orders);
  });

  it("starts over with the new spec when the API changes a subscription (a new sink gets a handshake)", async () => {
    const server = await start();
    const first = await sink();
    const second = await sink();
    const sub = await subscribe(server, subscriptionSpec(first.url));
    const before = await append(server, 2, "v1");
    await waitFor("first sink", () => first.received.length >= 2);
    await waitFor("checkpoint", async () => (await record(server, sub.id)).position === 2);
    await new SubscriptionStore(server.eventLog.dialect).update(sub.id, {
      spec: subscriptionSpec(second.url),
      ownerScopes: ["*"],
    });
    await server.delivery.poke();
    const after = await append(server, 2, "v2");
    await waitFor("second sink", () => second.received.length >= 2);
    expect(first.ids).toEqual(before);
    expect(second.ids).toEqual(after);
    expect(second.handshakes).toHaveLength(1);
  });

  it("delivers at most --subscriptions-per-process here and leaves the rest to other processes", async () => {
    const url = await dialect.url();
    const first = await start({ "subscriptions-per-process": "1" }, url);
    const sinkA = await sink();
    const sinkB = await sink();
    const a = await subscribe(first, subscriptionSpec(sinkA.url));
    const b = await subscribe(first, subscriptionSpec(sinkB.url));
    await append(first, 2, "cap");
    await waitFor("one delivered", () => sinkA.received.length + sinkB.received.length >= 2);
    expect(first.delivery.delivering).toHaveLength(1);
    const [held] = first.delivery.delivering;
    const other = held === a.id ? b : a;
    expect((await record(first, other.id)).lease).toBeUndefined();
    const second = await start({ "subscriptions-per-process": "1" }, url);
    await second.delivery.poke();
    expect(second.delivery.delivering).toEqual([other.id]);
    await waitFor("both delivered", () => sinkA.received.length >= 2 && sinkB.received.length >= 2);
    expect(sinkA.ids).toEqual(["cap-1", "cap-2"]);
    expect(sinkB.ids).toEqual(["cap-1", "cap-2"]);
  });

  it("stops at once when its lease is taken (a checkpoint write finds another token)", async () => {
    const server = await start({ "subscription-lease-seconds": "60" });
    const s = await sink();
    // l-3 is answered late: the lease is taken while it is in flight.
    s.answer = (request) => ({ status: 204, delayMs: request.id === "l-3" ? 1500 : 20 });
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 200, "l");
    await waitFor("l-3 in flight", () => s.ids.includes("l-3"));
    // Another process's claim after an expiry, as the database sees it.
    await server.eventLog.dialect.db
      .updateTable("eventsdb_subscriptions")
      .set({ lease_token: "another", lease_holder: "elsewhere:1", lease_expires_at: Date.now() + 3_600_000 })
      .where("id", "=", sub.id)
      .execute();
    // The next renewal is 20 s away: only the fenced checkpoint write can stop it this soon.
    // Under a loaded machine the write after l-3 may wait its turn: a bound well below the test's.
    await waitFor("deliverer stopped", () => !server.delivery.delivering.includes(sub.id), 25_000);
    const atStop = s.received.length;
    expect(atStop).toBeLessThan(200);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(s.received.length).toBe(atStop);
    expect((await record(server, sub.id)).lease?.holder).toBe("elsewhere:1");
  });

  it("stops delivering a deleted subscription", async () => {
    const server = await start();
    const s = await sink();
    const sub = await subscribe(server, subscriptionSpec(s.url));
    await append(server, 1, "del");
    await waitFor("delivered", () => s.received.length >= 1);
    await new SubscriptionStore(server.eventLog.dialect).delete(sub.id);
    await waitFor("deliverer stopped", () => !server.delivery.delivering.includes(sub.id));
    await append(server, 1, "gone");
    await server.delivery.poke();
    expect(s.ids).toEqual(["del-1"]);
  });
});
