import { runChain } from "./chain.js";
import { runFanout } from "./fanout/index.js";
import { runGrpc } from "./grpc.js";
import { runIngest } from "./ingest.js";
import { runMemory } from "./memory.js";
import { runOneConnection } from "./one-connection.js";
import { runScale } from "./scale.js";
import { runVolume } from "./volume.js";
import { runWebhooks } from "./webhooks.js";

/** A benchmark suite: gets the arguments after its name (e.g. `--duration 5`). */
type Suite = (args: readonly string[]) => Promise<void>;

/** `npm run bench -- <suite>`. */
const SUITES: Readonly<Record<string, Suite>> = {
  ingest: runIngest,
  fanout: runFanout,
  grpc: runGrpc,
  memory: runMemory,
  chain: runChain,
  scale: runScale,
  webhooks: runWebhooks,
  onecon: runOneConnection,
  volume: runVolume,
};

const EXIT_USAGE = 2;

function usage(): string {
  return (
    "usage: npm run bench -- ingest [--duration S]\n" +
    "       npm run bench -- fanout [--clients N] [--client-processes N] [--idle N] [--catchup N] [--pin]\n" +
    "              [--server-cli PATH]\n" +
    "       npm run bench -- grpc [--duration S] [--connections N] [--processes N] [--retries N]\n" +
    "              [--no-grpc-js] [--no-bare]\n" +
    "       npm run bench -- memory [--scenario idle|stalled|historic|unread] [--streams N] [--connections N]\n" +
    "              [--pipelined N] [--sessions N] [--idle-streams N] [--rounds N] [--settle S] [--baseline REV]\n" +
    "       npm run bench -- chain [--duration S] [--rounds N] [--store mysql|sqlite] [--baseline REV]\n" +
    "       npm run bench -- scale [--instances 1,3,10] [--duration S] [--rate N] [--idle S]\n" +
    "              [--baseline REV | --no-baseline]\n" +
    "       npm run bench -- webhooks [--events N] [--sinks N] [--duration S] [--store mysql|sqlite]\n" +
    "       npm run bench -- onecon [--duration S] [--rounds N] [--store mysql|sqlite|both]\n" +
    "              [--baseline REV | --no-baseline]\n" +
    "       npm run bench -- volume [--sizes 10k,1m,5m] [--store mysql|sqlite] [--keep DIR] [--reads N]\n" +
    "              [--seed N] [--limit N]\n" +
    `suites: ${Object.keys(SUITES).join(", ")}\n`
  );
}

const [name, ...rest] = process.argv.slice(2);
const suite = name !== undefined && Object.hasOwn(SUITES, name) ? SUITES[name] : undefined;
if (suite === undefined) {
  if (name !== undefined) process.stderr.write(`bench: unknown suite ${JSON.stringify(name)}\n`);
  process.stderr.write(usage());
  process.exit(EXIT_USAGE);
}
try {
  await suite(rest);
  process.exit(0);
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
}
