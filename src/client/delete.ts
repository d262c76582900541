import { createInterface } from "node:readline/promises";
import { ClientError, usageError } from "./http.js";
import type { EventsDbClient } from "./lib/client.js";
import type { EventQuery } from "./lib/types.js";

export interface DeleteOptions {
  readonly query: EventQuery & { readonly subject: string };
  /** Skip the question. */
  readonly yes: boolean;
}

/**
 * `eventsdb delete`: `DELETE /events` through the library. Without `--yes` it asks on the
 * terminal, and refuses (exit 2) when stdin is not one: a script must say --yes. Resolves with
 * how many events went.
 */
export async function deleteEvents(client: EventsDbClient, options: DeleteOptions): Promise<number> {
  if (!options.yes) {
    const what = describe(options.query);
    if (!process.stdin.isTTY) {
      throw usageError(`refusing to delete ${what} without confirmation: stdin is not a terminal; add --yes`);
    }
    const prompt = createInterface({ input: process.stdin, output: process.stderr });
    let answer: string;
    try {
      answer = await prompt.question(`Delete ${what} from ${client.url.slice(0, -1)}? [y/N] `);
    } finally {
      prompt.close();
    }
    if (!/^y(es)?$/i.test(answer.trim())) throw new ClientError("nothing deleted (not confirmed)");
  }
  return client.delete(options.query);
}

/** `the events of orders/42 and every subject below it, of type t, after id 9` */
function describe(query: DeleteOptions["query"]): string {
  let text = `the events of ${query.subject}`;
  if (query.recursive) text += " and every subject below it";
  if (query.type !== undefined) text += `, of type ${query.type}`;
  if (query.fromId !== undefined) text += `, after id ${query.fromId}`;
  return text;
}
