import { describe, expect, it } from "vitest";
import { lazyImport } from "../../../src/transports/grpc/lazy.js";

// The RPC handlers and the fast path's codec load through lazyImport: calls that arrive while the
// import runs share it, and a failed import is not kept for the life of the process.

describe("lazyImport", () => {
  it("loads once for every caller, also those that ask while it loads", async () => {
    let loads = 0;
    const load = lazyImport(async () => {
      loads++;
      await new Promise((resolve) => setTimeout(resolve, 10));
      return { loads };
    });
    const [a, b] = await Promise.all([load(), load()]);
    const c = await load();
    expect(loads).toBe(1);
    expect(a).toBe(b);
    expect(c).toBe(a);
  });

  it("tries again after a failed load", async () => {
    let attempts = 0;
    const load = lazyImport(async () => {
      attempts++;
      if (attempts === 1) throw new Error("first import failed");
      return attempts;
    });
    await expect(load()).rejects.toThrow("first import failed");
    expect(await load()).toBe(2);
    expect(await load()).toBe(2);
  });
});
