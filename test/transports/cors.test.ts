import { describe, expect, it } from "vitest";
import { serversPerTest, type TestServer } from "../support/server.js";

const ORIGIN = "https://app.example";

describe("CORS", () => {
  const { start } = serversPerTest(() => "sqlite::memory:");
  const preflight = (t: TestServer, origin: string) =>
    fetch(`${t.url}/events`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
      },
    });

  it("is off by default", async () => {
    const t = await start();
    const res = await fetch(`${t.url}/subjects`, { headers: { origin: ORIGIN } });
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    expect((await preflight(t, ORIGIN)).headers.get("access-control-allow-origin")).toBeNull();
  });

  it("allows the configured origins with credentials, and no other origin", async () => {
    const t = await start({ "cors-origin": `${ORIGIN},https://other.example` });
    const ok = await preflight(t, ORIGIN);
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(ok.headers.get("access-control-allow-credentials")).toBe("true");
    const read = await fetch(`${t.url}/events?limit=1`, { headers: { origin: ORIGIN } });
    expect(read.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(read.headers.get("access-control-expose-headers")).toContain("x-next-from-id");
    const evil = await fetch(`${t.url}/subjects`, { headers: { origin: "https://evil.example" } });
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("lets a page send the EventsDB-Preconditions header (the preflight's headers are allowed)", async () => {
    const t = await start({ "cors-origin": ORIGIN });
    const res = await fetch(`${t.url}/events`, {
      method: "OPTIONS",
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,eventsdb-preconditions",
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toContain(
      "eventsdb-preconditions",
    );
  });

  it("never combines * with credentials", async () => {
    const t = await start({ "cors-origin": "*" });
    const res = await fetch(`${t.url}/subjects`, { headers: { origin: ORIGIN } });
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
  });
});
