import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliRun, cleanEnv, removeTempDirs, runCli, tempDir } from "./support/process.js";
import { startTestServer, type TestServer } from "./support/server.js";

// `eventsdb publish --if-pristine / --if-populated / --if-on-event N` of the built CLI (`npm run
// build` first) against a real server on SQLite: a failed condition exits 1 with the server's message.

describe("eventsdb publish with preconditions", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer(`sqlite:${tempDir()}/events.db`);
  });
  afterAll(async () => {
    await t.close();
    removeTempDirs();
  });

  const publish = (subject: string, ...flags: string[]): Promise<CliRun> => {
    const env = cleanEnv({ EVENTSDB_URL: t.url });
    delete env.EVENTSDB_TOKEN;
    return runCli(["publish", "--subject", subject, "--type", "t", "--source", "cli", ...flags, "data"], {
      env,
    });
  };
  const expectRefused = (run: CliRun, fragment: string) => {
    expect(run.code, run.stderr).toBe(1);
    expect(run.out).toBe("");
    expect(run.stderr).toMatch(/^eventsdb: precondition failed: .*\(409 failed_precondition\)\n$/);
    expect(run.stderr).toContain(fragment);
  };
  const count = async (subject: string) => {
    const res = await fetch(`${t.url}/events?subject=${encodeURIComponent(subject)}`);
    return ((await res.json()) as { events: unknown[] }).events.length;
  };

  it.each([{ mode: [] as string[] }, { mode: ["--ce"] }])(
    "publishes only while the condition holds, $mode",
    async ({ mode }) => {
      const subject = `cli/${mode.length}`;
      expectRefused(await publish(subject, ...mode, "--if-populated"), "has no events");
      const first = await publish(subject, ...mode, "--if-pristine");
      expect(first.code, first.stderr).toBe(0);
      const id = Number(first.out);
      expectRefused(await publish(subject, ...mode, "--if-pristine"), "not pristine");
      const second = await publish(subject, ...mode, "--if-on-event", String(id));
      expect(second.code, second.stderr).toBe(0);
      expectRefused(
        await publish(subject, ...mode, "--if-on-event", String(id)),
        `on event ${Number(second.out)}`,
      );
      expect((await publish(subject, ...mode, "--if-populated")).code).toBe(0);
      expect(await count(subject)).toBe(3);
    },
  );

  it("refuses a bad id and two conditions at once as usage errors (exit 2)", async () => {
    const bad = await publish("cli/usage", "--if-on-event", "0");
    expect(bad.code).toBe(2);
    const both = await publish("cli/usage", "--if-pristine", "--if-populated");
    expect(both.code).toBe(2);
    expect(await count("cli/usage")).toBe(0);
  });
});
