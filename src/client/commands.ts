import { type Command, InvalidArgumentError, Option } from "commander";
import { deleteEvents } from "./delete.js";
import { connection, EXIT_OK, exitCodeOf, usageError } from "./http.js";
import { flushed } from "./io.js";
import type { EventsDbClient } from "./lib/client.js";
import { oneLine } from "./lib/errors.js";
import type { EventQuery } from "./lib/types.js";
import { publish } from "./publish.js";
import { get, subjects } from "./read.js";
import {
  type CreateFlags,
  createSubscription,
  listSubscriptions,
  redriveSubscription,
} from "./subscriptions.js";
import { tail } from "./tail.js";
import { exportEvents, importEvents } from "./transfer.js";
import { summaryLine, verifyChain } from "./verify.js";

interface ConnectionOptions {
  readonly url: string;
  readonly token?: string;
}

interface FilterOptions {
  readonly subject: string[];
  readonly recursive?: boolean;
  readonly type?: string;
  readonly fromId?: number;
}

/**
 * The client commands (`publish`, `get`, `tail`, `subjects`, `export`, `import`, `delete`,
 * `verify`, `subscriptions …`): the same binary talking to a running server through the client library
 * (src/client/lib/). Exit codes: 0 ok, 1 server or network error (and a broken chain), 2 usage
 * error; every error is one `eventsdb: …` line on stderr.
 */
export function addClientCommands(program: Command): void {
  clientCommand(program, "publish", "append one event; prints its id")
    .argument("[data]", "the data as text (else --file, else stdin)")
    .requiredOption("--subject <subject>", "the event's subject")
    .requiredOption("--type <type>", "the event's type")
    .requiredOption("--source <source>", "the event's source")
    .option("--file <file>", "read the data from a file")
    .option("--ce", "send a structured CloudEvent, idempotent by (source, --id)")
    .option("--id <id>", "CloudEvents id for --ce (default: a random UUID)")
    .option(
      "--content-type <type>",
      "datacontenttype for --ce (default: text/plain for an argument, application/octet-stream for --file or stdin)",
    )
    .addOption(
      new Option(
        "--if-pristine",
        "only if the subject has no events yet (else exit 1, nothing stored)",
      ).conflicts(["ifPopulated", "ifOnEvent"]),
    )
    .addOption(
      new Option("--if-populated", "only if the subject has events (else exit 1, nothing stored)").conflicts(
        "ifOnEvent",
      ),
    )
    .option(
      "--if-on-event <id>",
      "only if the subject's last event has this id (optimistic concurrency; else exit 1, nothing stored)",
      eventId,
    )
    .action(
      action(async (data: string | undefined, options: ConnectionOptions & Parameters<typeof publish>[2]) => {
        const id = await publish(connectionOf(options), data, options);
        process.stdout.write(`${id}\n`);
      }),
    );

  clientCommand(program, "get", "print one event as JSON")
    .argument("<id>", "the event's server id", eventId)
    .option("--raw", "write only the decoded data bytes")
    .addOption(new Option("--ce", "print the structured CloudEvent").conflicts("raw"))
    .action(
      action(async (id: number, options: ConnectionOptions & { raw?: boolean; ce?: boolean }) => {
        await get(connectionOf(options), id, options, process.stdout);
      }),
    );

  clientCommand(program, "subjects", "list subjects, one per line")
    .option("--prefix <prefix>", "only subjects starting with this string")
    .action(
      action(async (options: ConnectionOptions & { prefix?: string }) => {
        await subjects(connectionOf(options), options.prefix, process.stdout);
      }),
    );

  filterOptions(clientCommand(program, "tail", "follow events live, one line per event"))
    .option("--json", "print each event's JSON instead of a summary line")
    .option("--state-file <file>", "keep the last printed id in this file and resume from it")
    .option("--idle-timeout <seconds>", "reconnect after this long without data (0 = never)", wholeNumber, 60)
    .action(
      action(async (options: ConnectionOptions & FilterOptions & TailFlags) => {
        await tail(
          connectionOf(options),
          {
            filter: filterOf(options),
            fromId: options.fromId,
            json: options.json === true,
            stateFile: options.stateFile,
            idleTimeoutMs: options.idleTimeout * 1000,
          },
          process.stdout,
          process.stderr,
        );
      }),
    );

  filterOptions(clientCommand(program, "export", "write events as NDJSON of structured CloudEvents"))
    .option("--output <file>", "write to this file instead of stdout")
    .option("--chain", "write the whole hash chain instead, one link per line (for verify --file)")
    .action(
      action(async (options: ConnectionOptions & FilterOptions & { output?: string; chain?: boolean }) => {
        const chain = options.chain === true;
        const count = await exportEvents(connectionOf(options), {
          filter: filterOf(options),
          fromId: options.fromId ?? 0,
          output: options.output,
          chain,
        });
        const what = chain ? "link" : "event";
        process.stderr.write(`exported ${count} ${what}${count === 1 ? "" : "s"}\n`);
      }),
    );

  clientCommand(program, "import", "append NDJSON of structured CloudEvents (idempotent)")
    .argument("[file]", "the NDJSON file (as export writes it); - or none = stdin")
    .option("--input <file>", "the same as FILE")
    .option("--batch <n>", "events per request (1-1000)", batchSize, 500)
    .action(
      action(
        async (file: string | undefined, options: ConnectionOptions & { input?: string; batch: number }) => {
          if (file !== undefined && options.input !== undefined)
            throw usageError("give FILE or --input, not both");
          const input = file ?? options.input;
          const { imported, fresh } = await importEvents(connectionOf(options), {
            input: input === "-" ? undefined : input,
            batch: options.batch,
          });
          const events = `imported ${imported} event${imported === 1 ? "" : "s"}`;
          process.stderr.write(fresh === undefined ? `${events}\n` : `${events} (${fresh} new)\n`);
        },
      ),
    );

  clientCommand(program, "verify", "check the hash chain and its signatures; names the first broken link")
    .option("--file <file>", "read the chain from this file (`export --chain`; - = stdin), not the server")
    .option("--public-key <file>", "check signatures with this Ed25519 key (PEM) instead of the server's")
    .option(
      "--require-signatures",
      "every event must be covered by a signature (its own or a later one's): the chain must end on a signed event",
    )
    .action(
      action(async (options: ConnectionOptions & VerifyFlags) => {
        const result = await verifyChain(() => connectionOf(options), {
          file: options.file,
          publicKey: options.publicKey,
          requireSignatures: options.requireSignatures === true,
        });
        process.stdout.write(`${summaryLine(result)}\n`);
      }),
    );

  clientCommand(program, "delete", "delete the events of a subject (asks first unless --yes)")
    .requiredOption("--subject <subject>", "the subject whose events go")
    .option("--recursive", "also every subject below it (orders → orders/1/lines)")
    .option("--type <type>", "only events of this type")
    .option("--from-id <id>", "only events after this id", wholeNumber)
    .option("--yes", "do not ask for confirmation")
    .action(
      action(async (options: ConnectionOptions & DeleteFlags) => {
        const deleted = await deleteEvents(connectionOf(options), {
          query: {
            subject: options.subject,
            recursive: options.recursive === true,
            ...(options.type === undefined ? {} : { type: options.type }),
            ...(options.fromId === undefined ? {} : { fromId: options.fromId }),
          },
          yes: options.yes === true,
        });
        process.stderr.write(`deleted ${deleted} event${deleted === 1 ? "" : "s"}\n`);
      }),
    );

  addSubscriptionCommands(program);
}

/** `eventsdb subscriptions list|create|delete|redrive`: push subscriptions (src/client/subscriptions.ts). */
function addSubscriptionCommands(program: Command): void {
  const group = program
    .command("subscriptions")
    .description("manage push subscriptions (web hooks): list, create, delete, redrive");

  clientCommand(group, "list", "list your subscriptions: id, sink, state, position, lag")
    .option("--json", "print the subscriptions as a JSON array")
    .action(
      action(async (options: ConnectionOptions & { json?: boolean }) => {
        await listSubscriptions(connectionOf(options), options.json === true, process.stdout);
      }),
    );

  clientCommand(group, "create", "create a subscription; prints its id")
    .requiredOption("--sink <url>", "the web hook's http or https URL")
    .option("--subject <subject>", "only this subject (default: every subject, which needs read scope *)")
    .option("--recursive", "the subject and everything below it")
    .option("--type <type>", "only events of this type")
    .option("--source <source>", "only events of this source")
    .option(
      "--filter <json>",
      'a filter expression, e.g. \'{"prefix":{"type":"com."}}\' (repeatable)',
      collect,
      [],
    )
    .option("--content-mode <mode>", "structured (default) or binary")
    .option("--header <name=value>", "an extra request header (repeatable)", collect, [])
    .option("--method <method>", "POST (default) or PUT")
    .option("--from <now|id>", "deliver after the current last event (now, the default) or after this id")
    .option("--window <n>", "deliveries in flight at once (default 1)", wholeNumber)
    .option("--sink-token <token>", "sent to the sink as Authorization: Bearer <token>")
    .option("--description <text>", "a note for people")
    .option("--json", "print the whole subscription as JSON")
    .action(
      action(async (options: ConnectionOptions & CreateFlags & { json?: boolean }) => {
        await createSubscription(connectionOf(options), options, options.json === true, process.stdout);
      }),
    );

  clientCommand(group, "delete", "delete a subscription")
    .argument("<id>", "the subscription's id")
    .action(
      action(async (id: string, options: ConnectionOptions) => {
        await connectionOf(options).deleteSubscription(id);
        process.stderr.write(`deleted subscription ${id}\n`);
      }),
    );

  clientCommand(group, "redrive", "resume a parked subscription (where it stopped, or --from)")
    .argument("<id>", "the subscription's id")
    .option("--from <now|id>", "resume after the current last event (now) or after this id")
    .option("--json", "print the subscription as JSON")
    .action(
      action(async (id: string, options: ConnectionOptions & { from?: string; json?: boolean }) => {
        await redriveSubscription(
          connectionOf(options),
          id,
          options.from,
          options.json === true,
          process.stdout,
        );
      }),
    );
}

interface DeleteFlags {
  readonly subject: string;
  readonly recursive?: boolean;
  readonly type?: string;
  readonly fromId?: number;
  readonly yes?: boolean;
}

interface VerifyFlags {
  readonly file?: string;
  readonly publicKey?: string;
  readonly requireSignatures?: boolean;
}

interface TailFlags {
  readonly json?: boolean;
  readonly stateFile?: string;
  readonly idleTimeout: number;
}

/** A subcommand with --url and --token, and commander's errors as one `eventsdb: …` line. */
function clientCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .addOption(
      new Option("--url <url>", "the server's base URL").env("EVENTSDB_URL").default("http://localhost:8080"),
    )
    .addOption(new Option("--token <token>", "bearer token (Authorization header)").env("EVENTSDB_TOKEN"))
    .showHelpAfterError(false)
    .configureOutput({
      outputError: (text, write) => write(`eventsdb: ${oneLine(text.replace(/^error: /, ""))}\n`),
    });
}

function filterOptions(command: Command): Command {
  return command
    .option("--subject <subject>", "only this subject (repeatable)", collect, [])
    .option("--recursive", "subjects include everything below them (orders → orders/1/lines)")
    .option("--type <type>", "only events of this type")
    .option("--from-id <id>", "start after this id", wholeNumber);
}

function connectionOf(options: ConnectionOptions): EventsDbClient {
  return connection(options.url, options.token);
}

function filterOf(options: FilterOptions): EventQuery {
  return {
    subject: options.subject,
    recursive: options.recursive === true,
    ...(options.type === undefined ? {} : { type: options.type }),
  };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function wholeNumber(value: string): number {
  if (!/^\d{1,16}$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new InvalidArgumentError("it must be a non-negative integer");
  }
  return Number(value);
}

function eventId(value: string): number {
  if (!/^\d{1,16}$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < 1) {
    throw new InvalidArgumentError("it must be a positive integer");
  }
  return Number(value);
}

function batchSize(value: string): number {
  const n = wholeNumber(value);
  if (n < 1 || n > 1000) throw new InvalidArgumentError("it must be between 1 and 1000");
  return n;
}

/**
 * Runs a command body; reports a failure as one line with its exit code, then exits once stdout
 * has been handed over (an open keep-alive socket must not hold the process).
 */
function action<A extends unknown[]>(body: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    // A closed stdout (`| head`) fails the next write; it must not also crash as an 'error' event.
    process.stdout.on("error", () => {});
    let code = EXIT_OK;
    try {
      await body(...args);
    } catch (error) {
      code = exitCodeOf(error);
      const message = error instanceof Error ? error.message : String(error);
      process.stderr.write(`eventsdb: ${oneLine(message)}\n`);
    }
    await flushed(process.stdout);
    process.exit(code);
  };
}
