#!/usr/bin/env node
import { randomBytes } from "node:crypto";
import { Command, Option } from "commander";
import type { addClientCommands } from "./client/commands.js";
import type { Progress, progress } from "./client/progress.js";
import {
  type Config,
  ConfigError,
  describeStore,
  envName,
  loadConfig,
  readConfigFiles,
  restartNeeded,
  SERVE_OPTIONS,
  type ServeFlag,
  settingName,
} from "./config.js";
import { errorReason } from "./log.js";
// The server, the store and their drivers load only for the commands that use them (serve, migrate):
// client commands (publish, tail, verify…) start in a fraction of the time without them.
import type { startServer } from "./server.js";
import type { BackfillProgress } from "./storage/repository.js";
import { SchemaTooNewError } from "./storage/schema-too-new.js";
import { suggestion } from "./suggest.js";
import { version } from "./version.js";
import { yaml } from "./yaml.js";

const EXIT_USAGE = 2;

/** Options as commander hands them over (camelCase keys) → the flag table's names. */
function flagValues(options: Record<string, unknown>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const spec of SERVE_OPTIONS) {
    const key = spec.flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const value = options[key];
    out[spec.flag] = value === undefined ? undefined : String(value);
  }
  return out;
}

/** Flags over the environment over the config files (--config, else EVENTSDB_CONFIG) over defaults. */
function readConfig(options: Record<string, unknown>): Config {
  const files = readConfigFiles(process.env, (options.config as string[] | undefined) ?? []);
  return loadConfig(process.env, flagValues(options), files);
}

function configFrom(options: Record<string, unknown>): Config {
  try {
    return readConfig(options);
  } catch (error) {
    exitIfUnusable(error);
    throw error;
  }
}

/**
 * What the operator must change before this can run — the configuration, or which eventsdb runs
 * against this database — ends the process with one line and exit code 2; anything else is thrown.
 */
function exitIfUnusable(error: unknown): void {
  if (error instanceof ConfigError) {
    process.stderr.write(`eventsdb: invalid configuration: ${error.message}\n`);
    process.exit(EXIT_USAGE);
  }
  if (error instanceof SchemaTooNewError) {
    process.stderr.write(`eventsdb: ${error.message}\n`);
    process.exit(EXIT_USAGE);
  }
}

/**
 * The serve options as flags (`only`: those a command lists in its help; it accepts all, so
 * serve's command line works for migrate), and --config. The environment is not given to
 * commander (Option.env): it would hand env values over as if they were flags, and an error would
 * blame `--rest-port` for a REST_PORT the user set. loadConfig reads the environment itself, once;
 * help still names it.
 */
function addServeOptions(command: Command, only?: readonly ServeFlag[]): Command {
  command.option(
    "--config <file>",
    "config file, YAML or JSON; repeat to layer them, a later file wins (env: EVENTSDB_CONFIG)",
    (file: string, previous: string[] = []) => [...previous, file],
  );
  for (const spec of SERVE_OPTIONS) {
    const extra = [...("default" in spec ? [`default: ${spec.default}`] : []), `env: ${envName(spec.flag)}`];
    const option = new Option(
      spec.kind === "boolean" ? `--${spec.flag} [true|false]` : `--${spec.flag} <value>`,
      `${spec.description} (${extra.join(", ")})`,
    );
    // The others are accepted but not listed: serve's command line works for migrate too.
    command.addOption(only === undefined || only.includes(spec.flag) ? option : option.hideHelp());
  }
  return command;
}

/** What the environment alone sets (no flag): listed after `serve --help`'s options. */
const ENV_ONLY_HELP = `
Environment only:
  AUTH_TOKEN           (compat) one token with full access; unset and no auth file = open API
  MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD, MYSQL_DATABASE_NAME
                       (compat) MySQL without --database-url (defaults localhost, 3306, root, -, eventsdb)
  EVENTSDB_CONFIG      config files when --config is not given (several: separated by ":")

Precedence: flags > environment > config files (a later one wins) > defaults.
`;

async function serve(options: Record<string, unknown>): Promise<void> {
  const config = configFrom(options);
  if (options.checkConfig === true) return checkConfig(config);
  const logger = {
    level: config.logLevel,
    // Tokens must never reach a log line.
    redact: ["req.headers.authorization", "req.headers.cookie", 'res.headers["set-cookie"]'],
    // JSON for machines; readable lines for a person at a terminal. pino-pretty loads only then, and
    // formats in this thread: as a pino transport it ran in a worker thread, a second V8 heap
    // (~15 MB of RSS) for a few lines a minute.
    ...(process.stdout.isTTY ? { stream: await prettyStream() } : {}),
  };
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
    const { startServer } = await import("./server.js");
    server = await startServer(config, { logger });
  } catch (error) {
    exitIfUnusable(error);
    throw error;
  }
  if (config.auth.token === undefined && config.auth.file === undefined) {
    server.app.log.warn("AUTH_TOKEN is not set: the API is open to anyone who can reach it");
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, "shutting down");
    // A last resort: whatever hangs, the process ends within --shutdown-timeout.
    setTimeout(() => {
      server.app.log.error("shutdown timed out");
      process.exit(1);
    }, config.shutdownTimeoutSeconds * 1000).unref();
    server.close().then(
      () => process.exit(0),
      (error: unknown) => {
        server.app.log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  // SIGHUP: the config files, the auth file and the TLS files are read again; what can change live
  // does, and what needs a restart is named (compared with what the process started with).
  process.on("SIGHUP", () => {
    try {
      const next = readConfig(options);
      server.reload(next);
      const restart = restartNeeded(config, next);
      if (restart.length > 0) {
        server.app.log.warn(
          { keys: restart },
          `configuration reloaded; these changes need a restart: ${restart.join(", ")}`,
        );
      }
    } catch (error) {
      server.app.log.error(
        { err: error },
        `reload failed; keeping the previous configuration: ${(error as Error).message}`,
      );
    }
  });
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

/** pino-pretty as a stream in this thread, for a person at a terminal. */
async function prettyStream(): Promise<NodeJS.WritableStream> {
  const { default: pretty } = await import("pino-pretty");
  return pretty({ translateTime: "SYS:HH:MM:ss.l" });
}

async function runMigrate(options: Record<string, unknown>): Promise<void> {
  const config = configFrom(options);
  const [{ openDialect }, { migrate }] = await Promise.all([
    import("./storage/open.js"),
    import("./storage/migrate.js"),
  ]);
  const dialect = openDialect(config.store, config.dbTimeoutMs);
  const backfill = backfillReport(process.stderr, (await import("./client/progress.js")).progress);
  try {
    const applied = await migrate(dialect, backfill.progress)
      .catch((error: unknown) => {
        exitIfUnusable(error);
        throw error;
      })
      .finally(() => backfill.stop());
    if (backfill.hashed() > 0) {
      process.stderr.write(`eventsdb: hashed ${backfill.hashed()} events stored before the chain\n`);
    }
    process.stdout.write(
      applied.length === 0
        ? `eventsdb: ${describeStore(config.store)} is up to date\n`
        : `eventsdb: applied ${applied.join(", ")} to ${describeStore(config.store)}\n`,
    );
  } finally {
    await dialect.close();
  }
}

/**
 * The backfill's progress on `stream`: the bar at a terminal, else a line each time another tenth
 * of the id range is hashed (a large store takes minutes; a log should show it moving).
 */
function backfillReport(
  stream: NodeJS.WriteStream,
  bars: typeof progress,
): {
  progress: BackfillProgress;
  hashed(): number;
  stop(): void;
} {
  let bar: Progress | undefined;
  let tenths = 0;
  let hashed = 0;
  return {
    progress(done, lastId, endId) {
      hashed = done;
      if (stream.isTTY) {
        bar ??= bars("hashing", endId, stream);
        bar.update(lastId, done);
        return;
      }
      const reached = Math.floor((10 * Math.min(lastId, endId)) / Math.max(endId, 1));
      if (reached <= tenths) return;
      tenths = reached;
      stream.write(
        `eventsdb: hashing events stored before the chain: ${10 * reached} % (${done} events, up to id ${lastId} of ${endId})\n`,
      );
    },
    hashed: () => hashed,
    stop: () => bar?.stop(),
  };
}

/**
 * `serve --check-config`: the merged configuration is valid, the tokens and TLS files load and the
 * store answers within --db-timeout; prints it (secrets masked) and exits 0, else one line and 2.
 */
async function checkConfig(config: Config): Promise<void> {
  const [{ loadRegistry, readTls }, { openDialect }, { withTimeout }, { sql }] = await Promise.all([
    import("./server.js"),
    import("./storage/open.js"),
    import("./storage/timeout.js"),
    import("kysely"),
  ]);
  try {
    loadRegistry(config);
    if (config.tls !== undefined) readTls(config.tls);
  } catch (error) {
    exitIfUnusable(error);
    throw error;
  }
  const dialect = openDialect(config.store, config.dbTimeoutMs);
  try {
    await withTimeout(sql`SELECT 1`.execute(dialect.db), config.dbTimeoutMs, "check-config");
  } catch (error) {
    process.stderr.write(`eventsdb: ${describeStore(config.store)} does not answer: ${errorReason(error)}\n`);
    process.exit(EXIT_USAGE);
  } finally {
    await dialect.close().catch(() => {});
  }
  process.stdout.write(
    `# eventsdb ${version()}: configuration valid; ${describeStore(config.store)} answers\n${describeConfig(config)}`,
  );
}

/**
 * The merged configuration as a config file would give it, each value with where it came from;
 * secrets masked (the database password, token hashes, AUTH_TOKEN).
 */
export function describeConfig(config: Config): string {
  let out = "";
  for (const spec of SERVE_OPTIONS) {
    const { value, source } = config.settings[spec.flag];
    if (value === undefined) continue;
    const shown =
      spec.flag === "database-url"
        ? maskPassword(value)
        : spec.kind === "string"
          ? value
          : spec.kind === "boolean"
            ? ["true", "1", "yes"].includes(value.trim().toLowerCase())
            : Number(value.trim());
    const from = source.kind === "default" ? "default" : settingName(spec.flag, source);
    out += `${yaml()
      .stringify({ [spec.flag]: shown })
      .trimEnd()}  # ${from}\n`;
  }
  if (config.auth.token !== undefined) out += "# AUTH_TOKEN is set: one more token with full access\n";
  if (config.auth.tokens !== undefined) {
    const tokens = config.auth.tokens.list.map((entry) => ({ ...(entry as object), sha256: "***" }));
    out += `# tokens from ${config.auth.tokens.where}\n${yaml().stringify({ tokens })}`;
  }
  return out;
}

function maskPassword(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password === "") return databaseUrl;
    url.password = "***";
    return url.toString();
  } catch {
    return databaseUrl;
  }
}

/** `eventsdb token`: a fresh random token, and its SHA-256 for the auth file or a config file's `tokens`. */
async function printToken(): Promise<void> {
  const { tokenDigest } = await import("./auth/tokens.js");
  const token = randomBytes(32).toString("base64url");
  process.stdout.write(`token: ${token}\nsha256: ${tokenDigest(token).toString("hex")}\n`);
}

/** `clients` registers the client commands (publish, tail…); absent for a server command line (see below). */
export function buildCli(clients?: typeof addClientCommands): Command {
  const program = new Command("eventsdb")
    .description("A CloudEvents store with live streams (REST, SSE, Connect/gRPC)")
    .version(version(), "-V, --version", "print the version")
    .showHelpAfterError()
    .exitOverride((error) => {
      process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
    });
  addServeOptions(program.command("serve", { isDefault: true }).description("run the server"))
    .option(
      "--check-config",
      "validate the configuration and reach the store, print it (secrets masked), exit",
    )
    .addHelpText("after", ENV_ONLY_HELP)
    .action(serve);
  addServeOptions(program.command("migrate").description("apply pending database migrations and exit"), [
    "database-url",
    "db-pool-size",
    "db-timeout",
  ])
    .addHelpText(
      "after",
      "\nThe store as for serve: --database-url, else MYSQL_* (compat), else sqlite:./data/events.db.\n",
    )
    .action(runMigrate);
  program
    .command("token")
    .description("print a fresh random token and its SHA-256 (for the auth file or a config file)")
    .action(printToken);
  clients?.(program);
  return program;
}

/**
 * A first argument that is not an option must name a command: `serve` is the default only for
 * flags alone (`eventsdb --rest-port 8080`, as Events DB is started), so a typo is not taken for
 * serve's arguments. The commands are whatever is registered.
 */
function unknownCommand(program: Command, args: readonly string[]): string | undefined {
  const first = args[0];
  if (first === undefined || first.startsWith("-")) return undefined;
  const names = [...program.commands.flatMap((command) => [command.name(), ...command.aliases()]), "help"];
  return names.includes(first) ? undefined : `unknown command '${first}'${suggestion(first, names)}`;
}

/**
 * Command lines that name the server first (`serve`, as npm start and service units do; `migrate`)
 * run without the client commands: their modules (~2 MB of heap, ~10 MB of RSS) are not loaded
 * into a server. Every other command line registers them, so help and suggestions list them.
 */
const SERVER_COMMANDS: ReadonlySet<string> = new Set(["serve", "migrate"]);
const args = process.argv.slice(2);
const program = buildCli(
  SERVER_COMMANDS.has(args[0] ?? "") ? undefined : (await import("./client/commands.js")).addClientCommands,
);
const problem = unknownCommand(program, args);
if (problem !== undefined) {
  process.stderr.write(`eventsdb: ${problem}\n`);
  process.exit(EXIT_USAGE);
}
program.parseAsync(process.argv).catch((error: unknown) => {
  process.stderr.write(`eventsdb: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
