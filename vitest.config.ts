import { defineConfig } from "vitest/config";

/** What both tiers share. */
export const common = {
  testTimeout: 30_000,
  hookTimeout: 60_000,
  pool: "forks",
} as const;

/**
 * `npm test`: every test under test/, test/unit/ included, on SQLite and MariaDB. The global
 * setup starts one MariaDB for the run when a test first asks for it.
 */
export default defineConfig({
  test: {
    ...common,
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
  },
});
