/**
 * A fan-out client process for `npm run bench -- fanout` (started by bench/fanout/hosts.ts, never by
 * hand): one ClientGroup of SSE streams in a process of its own, so that 1000 streams do not share
 * one event loop with each other and with the publishers.
 *
 * Over IPC (advanced serialization): requests `{ seq, call, args }` answered `{ seq, ok, value }`
 * or `{ seq, ok: false, message }`; `call` is one of the ClientGroup steps (see GroupCalls). It
 * exits on "exit", or when the parent goes away (IPC disconnect).
 */
import { ClientGroup, type GroupConfig } from "./clients.js";

export interface GroupRequest {
  seq: number;
  call: "create" | "open" | "start" | "receipts" | "stop" | "result" | "close" | "exit";
  args?: unknown;
}

export type GroupReply =
  | { seq: number; ok: true; value: unknown }
  | { seq: number; ok: false; message: string };

let group: ClientGroup | undefined;

function need(): ClientGroup {
  if (group === undefined) throw new Error("no client group yet (create first)");
  return group;
}

async function answer(request: GroupRequest): Promise<unknown> {
  switch (request.call) {
    case "create":
      group = new ClientGroup(request.args as GroupConfig);
      return undefined;
    case "open":
      return need().open();
    case "start":
      need().start();
      return undefined;
    case "receipts":
      return need().firstReceipts;
    case "stop":
      need().stop();
      return undefined;
    case "result":
      return need().result(request.args as number[]);
    case "close":
      need().close();
      return undefined;
    case "exit":
      group?.close();
      setImmediate(() => process.exit(0));
      return undefined;
  }
}

process.on("message", (request: GroupRequest) => {
  void answer(request).then(
    (value) => process.send?.({ seq: request.seq, ok: true, value } satisfies GroupReply),
    (error: unknown) =>
      process.send?.({
        seq: request.seq,
        ok: false,
        message: error instanceof Error ? error.message : String(error),
      } satisfies GroupReply),
  );
});
process.on("disconnect", () => {
  group?.close();
  process.exit(0);
});
