import path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { EventsDbClient, EventsDbError, type Subscription } from "../src/client/lib/index.js";
import { cleanEnv, removeTempDirs, runCli, tempDir } from "./support/process.js";
import { startTestServer, type TestServer } from "./support/server.js";

// Push subscriptions from the client side: the library's six methods and the built CLI's
// `eventsdb subscriptions list|create|delete|redrive` (`npm run build` first), on SQLite.

const servers: TestServer[] = [];

async function server(): Promise<TestServer> {
  const started = await startTestServer(`sqlite:${path.join(tempDir("eventsdb-subs-lib-"), "events.db")}`, {
    // The library alone: this process delivers none (delivery: test/subscriptions/).
    "subscriptions-per-process": "0",
  });
  servers.push(started);
  const client = new EventsDbClient({ url: started.url });
  for (let i = 0; i < 4; i++) await client.append({ source: "s", type: "t", subject: "orders/1", data: "x" });
  return started;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});
afterAll(() => removeTempDirs());

describe("client library", () => {
  it("creates, lists, reads, updates, redrives and deletes subscriptions", async () => {
    const { url } = await server();
    const client = new EventsDbClient({ url });
    const created = await client.createSubscription({
      sink: "https://hooks.example.com/a",
      config: { subject: "orders", recursive: true, from: 1 },
      filters: [{ prefix: { type: "t" } }],
      sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: "secret" },
    });
    expect(created).toMatchObject({
      protocol: "HTTP",
      sinkcredential: { credentialtype: "ACCESSTOKEN" },
      status: { state: "active", position: 1, lag: 3 },
    });
    expect((await client.listSubscriptions()).map((s) => s.id)).toEqual([created.id]);
    expect(await client.getSubscription(created.id)).toEqual(created);

    const updated = await client.updateSubscription(created.id, {
      sink: created.sink,
      config: { subject: "orders/1" },
      protocolsettings: { contentmode: "binary" },
    });
    expect(updated).toMatchObject({
      config: { subject: "orders/1", recursive: false },
      protocolsettings: { contentmode: "binary" },
      sinkcredential: { credentialtype: "ACCESSTOKEN" },
    });
    expect((await client.redriveSubscription(created.id, "now")).status.position).toBe(4);
    expect((await client.redriveSubscription(created.id, 2)).status.position).toBe(2);
    expect((await client.redriveSubscription(created.id)).status.position).toBe(2);

    await client.deleteSubscription(created.id);
    const gone = await client.getSubscription(created.id).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(gone).toBeInstanceOf(EventsDbError);
    expect(gone).toMatchObject({ status: 404, code: "not_found" });
    const invalid = await client.createSubscription({ sink: "ftp://x/" }).catch((error: unknown) => error);
    expect(invalid).toMatchObject({ status: 400, code: "invalid_argument" });
    expect(await client.listSubscriptions()).toEqual([]);
  });
});

describe("eventsdb subscriptions", () => {
  const cli = (url: string, args: readonly string[]) =>
    runCli(["subscriptions", ...args], { env: { ...cleanEnv(), EVENTSDB_URL: url } });

  it("create, list (table and --json), redrive and delete", async () => {
    const { url } = await server();
    const created = await cli(url, [
      "create",
      "--sink",
      "https://hooks.example.com/b",
      "--subject",
      "orders",
      "--recursive",
      "--filter",
      '{"prefix":{"type":"t"}}',
      "--header",
      "x-team=billing",
      "--content-mode",
      "binary",
      "--method",
      "PUT",
      "--from",
      "1",
      "--window",
      "2",
    ]);
    expect(created.code, created.stderr).toBe(0);
    const id = created.out.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);

    const listed = await cli(url, ["list", "--json"]);
    const [subscription] = JSON.parse(listed.out) as Subscription[];
    expect(subscription).toMatchObject({
      id,
      config: { subject: "orders", recursive: true, window: 2 },
      filters: [{ prefix: { type: "t" } }],
      protocolsettings: { method: "PUT", contentmode: "binary", headers: { "x-team": "billing" } },
      status: { position: 1, lag: 3 },
    });
    const table = (await cli(url, ["list"])).out.split("\n");
    expect(table[0]).toMatch(/^ID\s+SINK\s+STATE\s+POSITION\s+LAG$/);
    expect(table[1]).toMatch(new RegExp(`^${id}\\s+https://hooks.example.com/b\\s+active\\s+1\\s+3$`));

    const redriven = await cli(url, ["redrive", id, "--from", "now"]);
    expect(redriven.code, redriven.stderr).toBe(0);
    expect(redriven.out).toMatch(/active\s+4\s+0\n$/);

    // The server's refusal: exit 1, one line; the command line's own: exit 2.
    const refused = await cli(url, ["create", "--sink", "https://x/", "--filter", '{"sql":"x"}']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^eventsdb: .*dialect "sql" is not supported.*\n$/);
    const usage = await cli(url, ["create", "--sink", "https://x/", "--header", "novalue"]);
    expect(usage.code).toBe(2);

    expect((await cli(url, ["delete", id])).code).toBe(0);
    expect((await cli(url, ["delete", id])).code).toBe(1);
    expect(JSON.parse((await cli(url, ["list", "--json"])).out)).toEqual([]);
  });
});
