import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  ConfigError,
  loadConfig,
  readConfigFile,
  readConfigFiles,
  restartNeeded,
  SERVE_OPTIONS,
} from "../../src/config.js";
import { closest } from "../../src/suggest.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-config-file-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Writes a file in the test directory and returns its path. */
function file(name: string, text: string): string {
  const at = path.join(dir, name);
  fs.writeFileSync(at, text);
  return at;
}

const HASH = "a".repeat(64);

/** The ConfigError message of `fn`, or a failure when it does not throw one. */
function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("no ConfigError thrown");
}

describe("config files", () => {
  it("take every flag as a key, in the flag's spelling or camelCase, YAML or JSON", () => {
    const yaml = file("a.yaml", "rest-port: 9000\nlogLevel: debug\nprotect-metrics: true\n");
    const json = file(
      "b.json",
      JSON.stringify({ grpcPort: 9001, "cors-origin": ["https://a", "https://b"] }),
    );
    const config = loadConfig({}, {}, [readConfigFile(yaml), readConfigFile(json)]);
    expect(config).toMatchObject({
      restPort: 9000,
      grpcPort: 9001,
      logLevel: "debug",
      corsOrigins: ["https://a", "https://b"],
      auth: { protectMetrics: true },
    });
    expect(config.settings["rest-port"]).toEqual({
      value: "9000",
      source: { kind: "file", file: yaml, key: "rest-port" },
    });
    expect(config.settings["grpc-port"].source).toEqual({ kind: "file", file: json, key: "grpcPort" });
    expect(config.settings.host.source).toEqual({ kind: "default" });
  });

  it("rank flags over the environment over files over defaults; a later file wins", () => {
    const base = readConfigFile(
      file("base.yaml", "rest-port: 1\ngrpc-port: 2\nhost: 10.0.0.1\nrate-limit: 5\n"),
    );
    const prod = readConfigFile(file("prod.yaml", "rest-port: 11\ngrpc-port: 12\nhost: 10.0.0.2\n"));
    const config = loadConfig({ GRPC_PORT: "22", HOST: "" }, { "rest-port": "31" }, [base, prod]);
    expect(config).toMatchObject({ restPort: 31, grpcPort: 22, host: "10.0.0.2", rateLimitPerMinute: 5 });
    expect(loadConfig({}, {}, [prod, base]).restPort).toBe(1);
  });

  it("come from --config, else EVENTSDB_CONFIG (several separated by the path delimiter)", () => {
    const a = file("env-a.yaml", "rest-port: 1\n");
    const b = file("env-b.yaml", "rest-port: 2\n");
    const env = { EVENTSDB_CONFIG: [a, b].join(path.delimiter) };
    expect(readConfigFiles(env).map((f) => f.path)).toEqual([a, b]);
    expect(readConfigFiles(env, [b]).map((f) => f.path)).toEqual([b]);
    expect(readConfigFiles({})).toEqual([]);
    expect(loadConfig(env, {}, readConfigFiles(env)).restPort).toBe(2);
  });

  it("an empty file sets nothing", () => {
    expect(loadConfig({}, {}, [readConfigFile(file("empty.yaml", ""))]).restPort).toBe(8080);
  });

  it.each([
    [
      "unknown.yaml",
      "rest_port: 1\n",
      "config file {file}: rest_port: unknown key (did you mean rest-port?)",
    ],
    ["far.yaml", "colour: red\n", "config file {file}: colour: unknown key"],
    ["value.yaml", "rest-port: abc\n", 'rest-port in config file {file} must be a whole number, got "abc"'],
    [
      "camel.yaml",
      "restPort: 70000\n",
      "restPort in config file {file} must be between 0 and 65535, got 70000",
    ],
    [
      "bool.json",
      '{"protectMetrics": "maybe"}',
      'protectMetrics in config file {file} must be true or false, got "maybe"',
    ],
    ["list.yaml", "rest-port: [1]\n", "config file {file}: rest-port must be a number, not a list"],
    ["null.yaml", "host:\n", "config file {file}: host must be a string, not empty"],
    [
      "twice.yaml",
      "rest-port: 1\nrestPort: 2\n",
      "config file {file}: restPort: given twice (as rest-port too)",
    ],
    ["top.yaml", "- 1\n", "config file {file} must be a mapping of option names to values"],
    ["syntax.json", '{"rest-port": ', "config file {file} is not valid JSON"],
    ["syntax.yaml", "a: [\n", "config file {file} is not valid YAML"],
    [
      "tokens.yaml",
      "tokens: {}\n",
      "config file {file}: tokens must be a list of tokens, like the auth file's",
    ],
    [
      "token.yaml",
      "tokens:\n  - name: x\n",
      "config file {file}: tokens[0]: sha256 must be the token's SHA-256",
    ],
    [
      "cross.yaml",
      "header-timeout: 200\n",
      "header-timeout in config file {file} must not exceed --request-timeout",
    ],
  ])("name the file, the key and the reason: %s", (name, text, expected) => {
    const at = file(name, text);
    const message = configError(() => loadConfig({}, {}, [readConfigFile(at)]));
    expect(message).toContain(expected.replace("{file}", at));
  });

  it("say where a syntax error is without quoting the file (it may hold a password)", () => {
    const at = file("secret.json", '{"database-url": "mysql://u:hunter2@db/e" x}');
    const message = configError(() => readConfigFile(at));
    expect(message).toBe(
      `config file ${at} is not valid JSON: Unexpected scalar at node end at line 1, column 43`,
    );
    expect(message).not.toContain("hunter2");
  });

  it("name an unreadable file", () => {
    const missing = path.join(dir, "missing.yaml");
    expect(configError(() => readConfigFile(missing))).toBe(`cannot read config file ${missing}: ENOENT`);
  });

  it("hold tokens in the auth file's shape; the last file with tokens gives them", () => {
    const one = readConfigFile(
      file("t1.yaml", `tokens:\n  - name: ci\n    sha256: ${HASH}\n    write: ["ci"]\n`),
    );
    const two = readConfigFile(file("t2.yaml", `tokens:\n  - name: ops\n    sha256: ${HASH}\n`));
    const none = readConfigFile(file("t3.yaml", "rest-port: 1\n"));
    const config = loadConfig({}, {}, [one, two, none]);
    expect(config.auth.tokens?.where).toBe(`config file ${two.path}`);
    expect(config.auth.tokens?.list).toEqual([{ name: "ops", sha256: HASH }]);
    expect(loadConfig({}, {}, [none]).auth.tokens).toBeUndefined();
  });

  it("restartNeeded names changed settings that cannot change live", () => {
    const running = loadConfig({}, { "log-level": "info" });
    const next = loadConfig({}, { "log-level": "debug", "rate-limit": "5", "auth-file": "/x" });
    expect(restartNeeded(running, next)).toEqual(["rate-limit"]);
    expect(restartNeeded(running, running)).toEqual([]);
    // TLS files change live, but switching TLS on needs a restart.
    const tls = loadConfig({}, { "tls-cert-file": "/c", "tls-key-file": "/k" });
    expect(restartNeeded(running, tls)).toEqual(["tls-cert-file", "tls-key-file"]);
    const rotated = loadConfig({}, { "tls-cert-file": "/c2", "tls-key-file": "/k2" });
    expect(restartNeeded(tls, rotated)).toEqual([]);
  });

  it("every option has a setting with its source", () => {
    const config = loadConfig({ REST_PORT: "1" });
    expect(Object.keys(config.settings)).toEqual(SERVE_OPTIONS.map((spec) => spec.flag));
    expect(config.settings["rest-port"]).toEqual({ value: "1", source: { kind: "env" } });
  });
});

describe("closest", () => {
  it("suggests a near word and nothing for a far one", () => {
    expect(closest("publsh", ["publish", "serve", "tail"])).toBe("publish");
    expect(closest("srvee", ["publish", "serve"])).toBe("serve");
    expect(closest("frobnicate", ["publish", "serve"])).toBeUndefined();
  });
});
