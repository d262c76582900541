import { afterAll, describe, expect, it } from "vitest";
import { ANYONE, type Principal } from "../../../src/auth/tokens.js";
import { EventsDbError } from "../../../src/errors.js";
import { FailureLog } from "../../../src/failure-log.js";
import { SILENT_LOGGER } from "../../../src/log.js";
import { requireReadable, SubscriptionService } from "../../../src/subscriptions/service.js";
import { DIALECTS } from "../../support/dialects.js";
import { removeTempDirs, tempDir } from "../../support/process.js";
import { openTestStore } from "../../support/server.js";

/** The service's own rules, below the transports: the scope rule, and a failing store answered 503. */

afterAll(() => removeTempDirs());

const principal = (read: string[]): Principal => ({ name: "p", read, write: [] });
const config = (subject: string | undefined, recursive = false) => ({
  config: { subject, recursive, type: undefined, window: 1 },
});

describe("requireReadable", () => {
  it.each([
    [["*"], undefined, false, true],
    [["orders"], undefined, false, false],
    [["orders"], "orders", true, true],
    [["orders"], "orders/eu", false, true],
    [["orders"], "orders/eu", true, true],
    [["orders/eu"], "orders", false, false],
    [["orders/eu"], "orders", true, false],
    [["orders"], "ordersx", false, false],
    [[], "orders", false, false],
  ] as const)("read %j, subject %s, recursive %s → %s", (read, subject, recursive, allowed) => {
    const check = () => requireReadable(principal([...read]), config(subject, recursive));
    if (allowed) expect(check).not.toThrow();
    else expect(check).toThrow(expect.objectContaining({ code: "permission_denied" }));
  });
});

describe("SubscriptionService on a failing store", () => {
  it("answers 503 (unavailable) and counts the failure once per call", async () => {
    const { store } = await openTestStore(`sqlite:${tempDir("eventsdb-subs-svc-")}/events.db`);
    const counted: string[] = [];
    const service = new SubscriptionService({
      dialect: store.dialect,
      lastId: () => store.repository.lastId(),
      maxSubscriptions: 10,
      allowPrivateSinks: false,
      failures: new FailureLog(SILENT_LOGGER, (operation) => counted.push(operation)),
    });
    expect(await service.list(ANYONE)).toEqual([]);
    await store.close();
    const failure = await service.list(ANYONE).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(EventsDbError);
    expect(failure).toMatchObject({ code: "unavailable", retryAfterSeconds: 1 });
    expect(counted).toEqual(["subscriptions"]);
    // Bad input stays a 400 and is no store failure.
    const invalid = await service.create(ANYONE, { sink: "ftp://x/" }).catch((error: unknown) => error);
    expect(invalid).toMatchObject({ code: "invalid_argument" });
    expect(counted).toEqual(["subscriptions"]);
  });
});

describe("SubscriptionService and private sinks", () => {
  const service = async (allowPrivateSinks: boolean) => {
    const { store } = await openTestStore(`sqlite:${tempDir("eventsdb-subs-sink-")}/events.db`);
    return {
      store,
      service: new SubscriptionService({
        dialect: store.dialect,
        lastId: () => store.repository.lastId(),
        maxSubscriptions: 10,
        allowPrivateSinks,
        failures: new FailureLog(SILENT_LOGGER, () => {}),
      }),
    };
  };
  const body = (sink: string) => ({ sink, protocol: "HTTP", config: { subject: "orders" } });

  it.each([
    "http://127.0.0.1:8080/hook",
    "http://10.1.2.3/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/hook",
    "http://[::ffff:192.168.0.1]/hook",
  ])("refuses the literal private or local address of %s with 400 and stores nothing", async (sink) => {
    const { store, service: subscriptions } = await service(false);
    try {
      await expect(subscriptions.create(ANYONE, body(sink))).rejects.toMatchObject({
        code: "invalid_argument",
        message: expect.stringContaining("--webhook-allow-private"),
      });
      expect(await subscriptions.list(ANYONE)).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it("takes them with --webhook-allow-private, and names (checked when they resolve) without it", async () => {
    const allowed = await service(true);
    const strict = await service(false);
    try {
      await expect(allowed.service.create(ANYONE, body("http://127.0.0.1:8080/hook"))).resolves.toMatchObject(
        {
          sink: "http://127.0.0.1:8080/hook",
        },
      );
      await expect(strict.service.create(ANYONE, body("https://hooks.example.com/x"))).resolves.toMatchObject(
        {
          sink: "https://hooks.example.com/x",
        },
      );
    } finally {
      await allowed.store.close();
      await strict.store.close();
    }
  });
});

describe.each(DIALECTS)("SubscriptionService's cap under concurrent creates on $name", (dialect) => {
  it("never holds more than --max-subscriptions, whichever of two services (processes) creates", async () => {
    const url = await dialect.url();
    // Two stores on one database: two processes' pools and services.
    const stores = await Promise.all([openTestStore(url), openTestStore(url)]);
    try {
      const [first, second] = stores.map(
        ({ store }) =>
          new SubscriptionService({
            dialect: store.dialect,
            lastId: () => store.repository.lastId(),
            maxSubscriptions: 5,
            allowPrivateSinks: true,
            failures: new FailureLog(SILENT_LOGGER, () => {}),
          }),
      ) as [SubscriptionService, SubscriptionService];
      const body = (i: number) => ({
        sink: `http://sink.test/${i}`,
        protocol: "HTTP",
        config: { subject: "o" },
      });
      const outcomes = await Promise.all(
        Array.from({ length: 24 }, (_, i) =>
          (i % 2 === 0 ? first : second).create(ANYONE, body(i)).then(
            () => "created",
            (error: unknown) => (error as EventsDbError).code,
          ),
        ),
      );
      expect(outcomes.filter((o) => o === "created")).toHaveLength(5);
      expect(outcomes.filter((o) => o === "too_many_requests")).toHaveLength(19);
      expect(await first.list(ANYONE)).toHaveLength(5);
    } finally {
      await Promise.all(stores.map(({ store }) => store.close()));
    }
  });
});
