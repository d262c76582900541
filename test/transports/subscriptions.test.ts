import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { type RunningServer, startServer } from "../../src/server.js";
import type { SubscriptionResource } from "../../src/subscriptions/spec.js";
import { SubscriptionStore } from "../../src/subscriptions/store.js";
import { writeAuthFile } from "../support/auth.js";
import { DIALECTS } from "../support/dialects.js";
import { CONNECT_KINDS, type ConnectPeer, connectPeer } from "../support/grpc.js";
import { Scrape } from "../support/metrics.js";
import { testFlags } from "../support/server.js";

/**
 * Issue 14, managing subscriptions: the CloudEvents Subscriptions API on REST and on every
 * Connect kind (Connect over HTTP/1.1 and HTTP/2, gRPC-Web, gRPC), on both stores — CRUD and
 * redrive, 400s that store nothing, the scope rule (a token subscribes only to what it reads),
 * owners (others' ids are 404), the write-only sink credential, and --max-subscriptions.
 */

const ADMIN = "subs-admin-token-000";
const ALICE = { name: "alice", token: "subs-alice-token-111", read: ["orders"], write: ["orders"] };
const BOB = { name: "bob", token: "subs-bob-token-222", read: ["orders"], write: [] };
const READER = { name: "reader", token: "subs-reader-token-333", read: ["*"], write: [] };
const NOBODY = { name: "nobody", token: "subs-nobody-token-444", read: ["payments"], write: [] };

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe.each(DIALECTS)("subscriptions on $name", (dialect) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-subs-"));
  const authFile = writeAuthFile(dir, [ALICE, BOB, READER, NOBODY]);
  let server: RunningServer;
  let url: string;
  const peers: ConnectPeer[] = [];

  const rest = async (
    token: string,
    method: string,
    route: string,
    body?: unknown,
  ): Promise<{ status: number; body: unknown; headers: Headers }> => {
    const res = await fetch(`${url}${route}`, {
      method,
      headers: { ...bearer(token), ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text === "" ? undefined : JSON.parse(text), headers: res.headers };
  };
  const ids = async (token: string): Promise<string[]> =>
    ((await rest(token, "GET", "/subscriptions")).body as SubscriptionResource[]).map((s) => s.id);

  beforeAll(async () => {
    server = await startServer(
      loadConfig(
        { AUTH_TOKEN: ADMIN },
        {
          ...testFlags(await dialect.url()),
          "auth-file": authFile,
          "max-subscriptions": "40",
          // The API alone: this process delivers none (delivery: test/subscriptions/).
          "subscriptions-per-process": "0",
        },
      ),
      { logger: false, defaultMetrics: false },
    );
    url = `http://127.0.0.1:${server.restPort}`;
    const res = await fetch(`${url}/events`, {
      method: "POST",
      headers: { ...bearer(ADMIN), "content-type": "application/json" },
      body: JSON.stringify([1, 2, 3].map((n) => ({ source: "s", type: "t", subject: `orders/${n}` }))),
    });
    expect(res.status).toBe(200);
  });

  afterAll(async () => {
    for (const peer of peers) peer.close();
    await server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("creates, lists, reads, replaces, redrives and deletes over REST", async () => {
    const created = await rest(ALICE.token, "POST", "/subscriptions", {
      id: "chosen-by-client",
      sink: "http://sink.test:9/hook",
      protocol: "HTTP",
      config: { subject: "orders", recursive: true },
      filters: [{ prefix: { type: "t" } }],
      sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "sink-secret" },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const resource = created.body as SubscriptionResource;
    expect(resource.id).not.toBe("chosen-by-client");
    expect(resource.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(created.headers.get("location")).toBe(`/subscriptions/${resource.id}`);
    expect(resource).toMatchObject({
      sink: "http://sink.test:9/hook",
      protocol: "HTTP",
      config: { subject: "orders", recursive: true, window: 1 },
      sinkcredential: { credentialtype: "ACCESSTOKEN" },
      protocolsettings: { method: "POST", headers: {}, contentmode: "structured" },
      // "from now": after the 3 events stored before.
      status: { state: "active", position: 3, lag: 0, owner: "alice" },
    });
    expect(JSON.stringify(created.body)).not.toContain("sink-secret");

    const route = `/subscriptions/${resource.id}`;
    expect((await rest(ALICE.token, "GET", route)).body).toEqual(resource);
    expect(await ids(ALICE.token)).toContain(resource.id);

    const replaced = await rest(ALICE.token, "PUT", route, {
      ...resource,
      protocolsettings: { contentmode: "binary", headers: { "x-team": "a" } },
    });
    expect(replaced.status, JSON.stringify(replaced.body)).toBe(200);
    expect(replaced.body).toMatchObject({
      id: resource.id,
      protocolsettings: { method: "POST", contentmode: "binary", headers: { "x-team": "a" } },
      // Kept: absent token, same sink.
      sinkcredential: { credentialtype: "ACCESSTOKEN" },
    });
    // A sink at a private address is refused on a server without --webhook-allow-private.
    const inside = await rest(ALICE.token, "PUT", route, { ...resource, sink: "http://10.0.0.7/" });
    expect(inside.status).toBe(400);
    expect(JSON.stringify(inside.body)).toContain("--webhook-allow-private");
    // A new sink with a stored credential must name the credential again.
    const moved = await rest(ALICE.token, "PUT", route, { ...resource, sink: "http://sink.test:10/" });
    expect(moved.status).toBe(400);
    expect(JSON.stringify(moved.body)).toContain("sinkcredential");

    const redriven = await rest(ALICE.token, "POST", `${route}/redrive`, { from: 1 });
    expect(redriven.status, JSON.stringify(redriven.body)).toBe(200);
    expect(redriven.body).toMatchObject({ status: { state: "active", position: 1, lag: 2 } });
    const plain = await fetch(`${url}${route}/redrive`, { method: "POST", headers: bearer(ALICE.token) });
    expect(plain.status).toBe(200);
    expect(((await plain.json()) as SubscriptionResource).status.position).toBe(1);

    const deleted = await rest(ALICE.token, "DELETE", route);
    expect(deleted.status).toBe(204);
    expect((await rest(ALICE.token, "GET", route)).status).toBe(404);
    expect((await rest(ALICE.token, "DELETE", route)).status).toBe(404);
  });

  it("refuses bad subscriptions with 400 and stores nothing", async () => {
    const before = await ids(ADMIN);
    const bad: unknown[] = [
      { sink: "ftp://x/", protocol: "HTTP" },
      { sink: "http://x/", protocol: "MQTT5" },
      { sink: "http://x/", protocol: "HTTP", filters: [{ sql: "type = 'x'" }] },
      { sink: "http://x/", protocol: "HTTP", config: { interval: 5 } },
      { sink: "http://x/", protocol: "HTTP", protocolsettings: { headers: { Host: "y" } } },
      {
        sink: "http://x/",
        protocol: "HTTP",
        protocolsettings: { headers: { Authorization: "Basic eDp5" } },
        sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "t" },
      },
      "{not json",
      "[]",
    ];
    for (const body of bad) {
      const res = await rest(ADMIN, "POST", "/subscriptions", body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body).toMatchObject({ error: { code: "invalid_argument" } });
    }
    const wrongType = await fetch(`${url}/subscriptions`, {
      method: "POST",
      headers: { ...bearer(ADMIN), "content-type": "text/yaml" },
      body: "sink: x",
    });
    expect(wrongType.status).toBe(415);
    expect(await ids(ADMIN)).toEqual(before);
  });

  it("lets a token subscribe only to what it may read, and shows each owner only its own", async () => {
    const body = (config: Record<string, unknown>) => ({
      sink: "http://sink.test:9/",
      protocol: "HTTP",
      config,
    });
    expect((await rest(ALICE.token, "POST", "/subscriptions", body({ subject: "payments" }))).status).toBe(
      403,
    );
    expect((await rest(ALICE.token, "POST", "/subscriptions", body({}))).status).toBe(403);
    expect((await rest(ALICE.token, "POST", "/subscriptions", body({ subject: "ordersx" }))).status).toBe(
      403,
    );
    const unauthenticated = await fetch(`${url}/subscriptions`);
    expect(unauthenticated.status).toBe(401);

    const own = await rest(
      ALICE.token,
      "POST",
      "/subscriptions",
      body({ subject: "orders/eu", recursive: true }),
    );
    expect(own.status).toBe(201);
    const id = (own.body as SubscriptionResource).id;
    // A token that may read every subject may subscribe to all of them.
    const all = await rest(READER.token, "POST", "/subscriptions", body({}));
    expect(all.status, JSON.stringify(all.body)).toBe(201);

    const route = `/subscriptions/${id}`;
    expect((await rest(BOB.token, "GET", route)).status).toBe(404);
    expect((await rest(BOB.token, "PUT", route, body({ subject: "orders" }))).status).toBe(404);
    expect((await rest(BOB.token, "POST", `${route}/redrive`)).status).toBe(404);
    expect((await rest(BOB.token, "DELETE", route)).status).toBe(404);
    // Unknown and foreign ids answer alike.
    expect((await rest(BOB.token, "GET", route)).body).toEqual({
      error: { code: "not_found", message: `no subscription ${id}` },
    });
    expect(await ids(BOB.token)).not.toContain(id);
    expect(await ids(ALICE.token)).toContain(id);
    expect(await ids(ALICE.token)).not.toContain((all.body as SubscriptionResource).id);
    // The administrator (write "*") sees and manages everyone's.
    expect(await ids(ADMIN)).toEqual(expect.arrayContaining([id, (all.body as SubscriptionResource).id]));
    // An update is checked against the updater's scopes too.
    expect((await rest(ALICE.token, "PUT", route, body({ subject: "payments" }))).status).toBe(403);
    // An administrator may change it, but not past what its owner may read; the owner's scopes stay.
    expect((await rest(ADMIN, "PUT", route, body({ subject: "payments" }))).status).toBe(403);
    const changed = await rest(ADMIN, "PUT", route, body({ subject: "orders/us" }));
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ config: { subject: "orders/us" }, status: { owner: "alice" } });
    const stored = await new SubscriptionStore(server.eventLog.dialect).get(id);
    expect(stored?.ownerScopes).toEqual(ALICE.read);
    expect((await rest(ADMIN, "DELETE", route)).status).toBe(204);
  });

  describe.each(CONNECT_KINDS)("over %s", (kind) => {
    let peer: ConnectPeer;
    beforeAll(() => {
      peer = connectPeer(kind, { url, grpcUrl: `http://127.0.0.1:${server.grpcPort}` });
      peers.push(peer);
    });
    const code = async (call: Promise<unknown>): Promise<Code | undefined> =>
      call.then(
        () => undefined,
        (error: unknown) => ConnectError.from(error).code,
      );

    it("manages a subscription through the same rules", async () => {
      const alice = { headers: bearer(ALICE.token) };
      const created = await peer.client.createSubscription(
        {
          subscription: {
            sink: "https://sink.example/hook",
            protocol: "HTTP",
            config: { subject: "orders", recursive: true, from: "0", window: 2 },
            filters: [
              {
                dialect: {
                  case: "any",
                  value: {
                    filters: [
                      { dialect: { case: "exact", value: { attributes: { type: "t" } } } },
                      {
                        dialect: {
                          case: "not",
                          value: { dialect: { case: "suffix", value: { attributes: { subject: "/2" } } } },
                        },
                      },
                    ],
                  },
                },
              },
            ],
            protocolsettings: { headers: { "x-a": "b" }, contentmode: "binary" },
            sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "grpc-secret" },
          },
        },
        alice,
      );
      expect(created.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(created.status).toMatchObject({ state: "active", position: 0n, lag: 3n, owner: "alice" });
      expect(created.config).toMatchObject({ subject: "orders", recursive: true, window: 2 });
      expect(created.protocolsettings).toMatchObject({
        method: "POST",
        contentmode: "binary",
        headers: { "x-a": "b" },
      });
      expect(created.sinkcredential?.accesstoken).toBe("");
      expect(created.filters[0]?.dialect.case).toBe("any");

      // The same object over REST.
      const viaRest = (await rest(ALICE.token, "GET", `/subscriptions/${created.id}`))
        .body as SubscriptionResource;
      expect(viaRest.filters).toEqual([
        { any: [{ exact: { type: "t" } }, { not: { suffix: { subject: "/2" } } }] },
      ]);

      const listed = await peer.client.listSubscriptions({}, alice);
      expect(listed.subscriptions.map((s) => s.id)).toContain(created.id);
      expect((await peer.client.getSubscription({ id: created.id }, alice)).sink).toBe(
        "https://sink.example/hook",
      );

      const updated = await peer.client.updateSubscription(
        {
          id: created.id,
          subscription: {
            sink: "https://sink.example/hook",
            protocol: "HTTP",
            config: { subject: "orders/1" },
          },
          removeSinkcredential: true,
        },
        alice,
      );
      expect(updated.config?.subject).toBe("orders/1");
      expect(updated.sinkcredential).toBeUndefined();
      expect(updated.filters).toEqual([]);

      const redriven = await peer.client.redriveSubscription({ id: created.id, fromNow: true }, alice);
      expect(redriven.status?.position).toBe(3n);
      const back = await peer.client.redriveSubscription({ id: created.id, fromId: 2n }, alice);
      expect(back.status?.position).toBe(2n);

      // Errors: invalid (nothing stored), forbidden, someone else's, gone.
      const before = (await peer.client.listSubscriptions({}, alice)).subscriptions.length;
      expect(
        await code(
          peer.client.createSubscription({ subscription: { sink: "http://x/", protocol: "NATS" } }, alice),
        ),
      ).toBe(Code.InvalidArgument);
      expect(
        await code(
          peer.client.createSubscription(
            {
              subscription: {
                sink: "http://x/",
                protocol: "HTTP",
                filters: [{ dialect: { case: undefined } }],
              },
            },
            alice,
          ),
        ),
      ).toBe(Code.InvalidArgument);
      expect((await peer.client.listSubscriptions({}, alice)).subscriptions.length).toBe(before);
      expect(
        await code(
          peer.client.createSubscription(
            { subscription: { sink: "http://x/", protocol: "HTTP", config: { subject: "payments" } } },
            alice,
          ),
        ),
      ).toBe(Code.PermissionDenied);
      expect(
        await code(peer.client.getSubscription({ id: created.id }, { headers: bearer(BOB.token) })),
      ).toBe(Code.NotFound);
      expect(
        await code(peer.client.deleteSubscription({ id: created.id }, { headers: bearer(BOB.token) })),
      ).toBe(Code.NotFound);
      expect(await code(peer.client.listSubscriptions({}))).toBe(Code.Unauthenticated);

      await peer.client.deleteSubscription({ id: created.id }, alice);
      expect(await code(peer.client.getSubscription({ id: created.id }, alice))).toBe(Code.NotFound);
    });
  });

  it("refuses subscriptions beyond --max-subscriptions with 429, counted", async () => {
    const body = { sink: "http://sink.test:9/", protocol: "HTTP", config: { subject: "payments" } };
    let status = 201;
    let made = 0;
    while (status === 201 && made < 100) {
      const res = await rest(NOBODY.token, "POST", "/subscriptions", body);
      status = res.status;
      if (status === 201) made++;
    }
    expect(status).toBe(429);
    expect(made).toBeGreaterThan(0);
    expect(await ids(ADMIN)).toHaveLength(40);
    const scrape = new Scrape(await server.metrics.registry.metrics());
    expect(scrape.counter("eventsdb_subscription_refusals_total")).toBe(1);
    for (const id of await ids(NOBODY.token)) {
      expect((await rest(NOBODY.token, "DELETE", `/subscriptions/${id}`)).status).toBe(204);
    }
  });
});
