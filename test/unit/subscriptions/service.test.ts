import { afterAll, describe, expect, it } from "vitest";
import { ANYONE, type Principal } from "../../../src/auth/tokens.js";
import { EventsDbError } from "../../../src/errors.js";
import { FailureLog } from "../../../src/failure-log.js";
import { SILENT_LOGGER } from "../../../src/log.js";
import { requireReadable, SubscriptionService } from "../../../src/subscriptions/service.js";
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
