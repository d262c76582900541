import { createRequire } from "node:module";
import type * as Yaml from "yaml";

let loaded: typeof Yaml | undefined;

/**
 * The yaml package, loaded when a YAML file is first read or written (a config file, an auth
 * file, `eventsdb config`): 73 modules that a start without such a file never uses (README,
 * "Measured": idle memory). Synchronous, as configuration is read synchronously.
 */
export function yaml(): typeof Yaml {
  loaded ??= createRequire(import.meta.url)("yaml") as typeof Yaml;
  return loaded;
}
