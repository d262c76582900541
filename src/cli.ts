#!/usr/bin/env node
import { Command, Option } from "commander";
import { addClientCommands } from "./client/commands.js";
import { type Config, ConfigError, describeStore, envName, loadConfig, SERVE_OPTIONS } from "./config.js";
import { startServer } from "./server.js";
import { migrate, SchemaTooNewError } from "./storage/migrate.js";
import { openDialect } from "./storage/open.js";

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

function configFrom(options: Record<string, unknown>): Config {
  try {
    return loadConfig(process.env, flagValues(options));
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
 * The serve options as flags. The environment is not given to commander (Option.env): it would
 * hand env values over as if they were flags, and an error would blame `--rest-port` for a
 * REST_PORT the user set. loadConfig reads the environment itself, once; help still names it.
 */
function addServeOptions(command: Command): Command {
  for (const spec of SERVE_OPTIONS) {
    const extra = [...("default" in spec ? [`default: ${spec.default}`] : []), `env: ${envName(spec.flag)}`];
    command.addOption(
      new Option(
        spec.kind === "boolean" ? `--${spec.flag} [true|false]` : `--${spec.flag} <value>`,
        `${spec.description} (${extra.join(", ")})`,
      ),
    );
  }
  return command;
}

async function serve(options: Record<string, unknown>): Promise<void> {
  const config = configFrom(options);
  const logger = {
    level: config.logLevel,
    // Tokens must never reach a log line.
    redact: ["req.headers.authorization", "req.headers.cookie", 'res.headers["set-cookie"]'],
    // JSON for machines; readable lines for a person at a terminal.
    ...(process.stdout.isTTY
      ? { transport: { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l" } } }
      : {}),
  };
  let server: Awaited<ReturnType<typeof startServer>>;
  try {
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
  process.on("SIGHUP", () => {
    try {
      server.reload();
    } catch (error) {
      server.app.log.error({ err: error }, "reload failed; keeping the previous configuration");
    }
  });
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

async function runMigrate(options: Record<string, unknown>): Promise<void> {
  const config = configFrom(options);
  const dialect = openDialect(config.store, config.dbTimeoutMs);
  try {
    const applied = await migrate(dialect).catch((error: unknown) => {
      exitIfUnusable(error);
      throw error;
    });
    process.stdout.write(
      applied.length === 0
        ? `eventsdb: ${describeStore(config.store)} is up to date\n`
        : `eventsdb: applied ${applied.join(", ")} to ${describeStore(config.store)}\n`,
    );
  } finally {
    await dialect.close();
  }
}

export function buildCli(): Command {
  const program = new Command("eventsdb")
    .description("A CloudEvents store with live streams (REST, SSE, Connect/gRPC)")
    .showHelpAfterError()
    .exitOverride((error) => {
      process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE);
    });
  addServeOptions(program.command("serve", { isDefault: true }).description("run the server")).action(serve);
  addServeOptions(
    program.command("migrate").description("apply pending database migrations and exit"),
  ).action(runMigrate);
  addClientCommands(program);
  return program;
}

buildCli()
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    process.stderr.write(`eventsdb: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
