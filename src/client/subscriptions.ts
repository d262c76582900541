import { usageError } from "./http.js";
import type { EventsDbClient } from "./lib/client.js";
import type { Subscription, SubscriptionFilter, SubscriptionInput } from "./lib/types.js";

/** The flags of `eventsdb subscriptions create`, as commander hands them over. */
export interface CreateFlags {
  readonly sink: string;
  readonly subject?: string;
  readonly recursive?: boolean;
  readonly type?: string;
  readonly source?: string;
  /** --filter JSON, repeatable: each a filter expression or an array of them. */
  readonly filter: readonly string[];
  readonly contentMode?: string;
  /** --header name=value, repeatable. */
  readonly header: readonly string[];
  readonly method?: string;
  /** "now" or an event id, as typed. */
  readonly from?: string;
  readonly window?: number;
  readonly sinkToken?: string;
  readonly description?: string;
}

/**
 * The subscription a `create` command line describes. Only the command line's own syntax is
 * checked here (JSON of --filter, name=value of --header, --from): everything else is the server's
 * to judge, so the CLI and the API refuse alike.
 */
export function subscriptionOf(flags: CreateFlags): SubscriptionInput {
  const filters: SubscriptionFilter[] = flags.filter.flatMap((text) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw usageError(`--filter must be JSON like '{"prefix":{"type":"com.example."}}', got ${text}`);
    }
    return (Array.isArray(parsed) ? parsed : [parsed]) as SubscriptionFilter[];
  });
  const headers: Record<string, string> = {};
  for (const entry of flags.header) {
    const eq = entry.indexOf("=");
    if (eq <= 0) throw usageError(`--header must be name=value, got ${JSON.stringify(entry)}`);
    headers[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  let from: "now" | number | undefined;
  if (flags.from !== undefined) {
    if (flags.from !== "now" && !/^\d{1,16}$/.test(flags.from)) {
      throw usageError(`--from must be "now" or an event id, got ${JSON.stringify(flags.from)}`);
    }
    from = flags.from === "now" ? "now" : Number(flags.from);
  }
  return {
    sink: flags.sink,
    protocol: "HTTP",
    ...(flags.source === undefined ? {} : { source: flags.source }),
    config: {
      ...(flags.subject === undefined ? {} : { subject: flags.subject }),
      recursive: flags.recursive === true,
      ...(flags.type === undefined ? {} : { type: flags.type }),
      ...(flags.window === undefined ? {} : { window: flags.window }),
      ...(from === undefined ? {} : { from }),
    },
    ...(filters.length === 0 ? {} : { filters }),
    protocolsettings: {
      ...(flags.method === undefined ? {} : { method: flags.method as "POST" | "PUT" }),
      headers,
      ...(flags.contentMode === undefined
        ? {}
        : { contentmode: flags.contentMode as "structured" | "binary" }),
    },
    ...(flags.sinkToken === undefined
      ? {}
      : { sinkcredential: { credentialtype: "ACCESSTOKEN", accesstoken: flags.sinkToken } }),
    ...(flags.description === undefined ? {} : { description: flags.description }),
  };
}

/** `eventsdb subscriptions create`: prints the new id (or, --json, the whole subscription). */
export async function createSubscription(
  client: EventsDbClient,
  flags: CreateFlags,
  json: boolean,
  out: NodeJS.WritableStream,
): Promise<void> {
  const created = await client.createSubscription(subscriptionOf(flags));
  out.write(json ? `${JSON.stringify(created)}\n` : `${created.id}\n`);
}

/** `eventsdb subscriptions list`: a table (id, sink, state, position, lag), or --json the array. */
export async function listSubscriptions(
  client: EventsDbClient,
  json: boolean,
  out: NodeJS.WritableStream,
): Promise<void> {
  const list = await client.listSubscriptions();
  out.write(json ? `${JSON.stringify(list)}\n` : subscriptionTable(list));
}

/** `eventsdb subscriptions redrive`: prints the state line after it (or, --json, the subscription). */
export async function redriveSubscription(
  client: EventsDbClient,
  id: string,
  from: string | undefined,
  json: boolean,
  out: NodeJS.WritableStream,
): Promise<void> {
  if (from !== undefined && from !== "now" && !/^\d{1,16}$/.test(from)) {
    throw usageError(`--from must be "now" or an event id, got ${JSON.stringify(from)}`);
  }
  const redriven = await client.redriveSubscription(
    id,
    from === undefined ? undefined : from === "now" ? "now" : Number(from),
  );
  out.write(json ? `${JSON.stringify(redriven)}\n` : subscriptionTable([redriven]));
}

const COLUMNS = ["ID", "SINK", "STATE", "POSITION", "LAG"] as const;

/** Aligned columns, a header line first; a parked one's reason follows its state. */
export function subscriptionTable(list: readonly Subscription[]): string {
  const rows = list.map((s) => [
    s.id,
    s.sink,
    s.status.state === "parked" ? `parked: ${s.status.parked?.reason ?? ""}` : s.status.state,
    String(s.status.position),
    String(s.status.lag),
  ]);
  const all = [[...COLUMNS], ...rows];
  const widths = COLUMNS.map((_, i) => Math.max(...all.map((row) => (row[i] as string).length)));
  return all
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] as number)))
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}
