import { defineConfig } from "vitest/config";
import { common } from "./vitest.config.js";

/**
 * `npm run test:unit`: test/unit/ alone, in seconds. No global setup, so no MariaDB: storage
 * loops there run on SQLite only (test/support/dialects.ts); `npm test` runs the same files on both.
 */
export default defineConfig({
  test: {
    ...common,
    include: ["test/unit/**/*.test.ts"],
  },
});
