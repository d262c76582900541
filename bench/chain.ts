import { generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {
  BATCH_CONNECTIONS,
  BATCH_EVENTS,
  batchBodies,
  cannonMeasurement,
  runCannon,
  singleBodies,
} from "./ingest.js";
import {
  buildDist,
  Cleanup,
  checkArguments,
  checkoutBuild,
  formatRate,
  formatTable,
  machineInfo,
  parseCountOption,
  parseDuration,
  ROOT,
  serverEnv,
  startBenchDatabase,
  startServerChild,
  textOption,
  writeResults,
} from "./support.js";

/** The last commit before the hash chain: the server with hashing off. */
export const PRE_CHAIN_REVISION = "70b13b26796bcc6bcf76380abd530d5d7b0c1b42";
const DEFAULT_SECONDS = 8;
const DEFAULT_ROUNDS = 3;
const WARMUP_SECONDS = 2;
/** Hashing may cost this much of a run's throughput, signing with it this much (issue 13). */
const HASHING_MAX_COST = 0.1;
const SIGNING_MAX_COST = 0.2;

type Variant = "hashing off" | "hashing" | "hashing + signing" | "hashing + signing per commit";
const VARIANTS: readonly Variant[] = [
  "hashing off",
  "hashing",
  "hashing + signing",
  "hashing + signing per commit",
];
const RUNS = ["POST 64 conns", `batch POST ${BATCH_EVENTS}/req`] as const;

/**
 * `npm run bench -- chain`: what the tamper-evident log costs. The same ingest runs (POST at 64
 * connections, batch POST) against three servers in one run: this checkout's build before the
 * chain (PRE_CHAIN_REVISION, or --baseline REV: hashing off), this checkout (hashing), and this
 * checkout with --signing-key-file, signing every event or (--signing-mode commit) each group
 * commit's last. Each round starts every server on a fresh
 * database, in a rotating order so that a noisy neighbour does not favour one; the table gives each
 * variant's median over the rounds and its cost against hashing off.
 */
export async function runChain(args: readonly string[]): Promise<void> {
  checkArguments("chain", args, ["--duration", "--store", "--rounds", "--baseline"], []);
  const seconds = parseDuration(args, DEFAULT_SECONDS);
  const rounds = parseCountOption(args, "--rounds", DEFAULT_ROUNDS, 1);
  const baselineRevision = textOption(args, "--baseline") ?? PRE_CHAIN_REVISION;
  const storeKind = textOption(args, "--store") ?? "mysql";
  if (storeKind !== "mysql" && storeKind !== "sqlite") throw new Error("--store is mysql or sqlite");
  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    const work = await mkdtemp(path.join(os.tmpdir(), "eventsdb-bench-chain-"));
    cleanup.add("remove the bench dir", () => rm(work, { recursive: true, force: true }));
    const baseline = await checkoutBuild(baselineRevision, path.join(work, "baseline"), cleanup);
    const keyFile = path.join(work, "signing.pem");
    const { privateKey } = generateKeyPairSync("ed25519");
    await writeFile(keyFile, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });

    let label: string;
    let databaseUrl: (name: string) => Promise<string>;
    if (storeKind === "mysql") {
      const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup);
      label = `MariaDB ${mariadbVersion}`;
      databaseUrl = async (name) => {
        await admin.query(`CREATE DATABASE \`${name}\``);
        return mariadb.url.replace(/\/[^/]*$/, `/${name}`);
      };
    } else {
      process.stderr.write("bench: building dist/ (tsc -p tsconfig.build.json)\n");
      await buildDist();
      label = "SQLite (WAL, synchronous=FULL)";
      databaseUrl = async (name) => `sqlite:${path.join(work, `${name}.db`)}`;
    }

    const results = new Map<string, number[]>();
    for (let round = 0; round < rounds; round++) {
      // Rotate the order each round: none always runs first (cold) or last (warm).
      const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length] as Variant);
      for (const variant of order) {
        const url = await databaseUrl(`chain_${round}_${VARIANTS.indexOf(variant)}`);
        const env = serverEnv(url);
        if (variant.startsWith("hashing + signing")) env.SIGNING_KEY_FILE = keyFile;
        if (variant === "hashing + signing per commit") env.SIGNING_MODE = "commit";
        process.stderr.write(`bench: round ${round + 1}/${rounds}: ${variant}\n`);
        const server = await startServerChild(env, [], variant === "hashing off" ? baseline : undefined);
        try {
          await runCannon(server, "warm-up", {
            connections: 16,
            duration: WARMUP_SECONDS,
            requests: singleBodies(),
          });
          const single = await runCannon(server, `${variant}: ${RUNS[0]}`, {
            connections: 64,
            duration: seconds,
            requests: singleBodies(),
          });
          const batch = await runCannon(server, `${variant}: ${RUNS[1]}`, {
            connections: BATCH_CONNECTIONS,
            duration: seconds,
            requests: batchBodies(),
          });
          for (const [name, measured, perRequest] of [
            [RUNS[0], single, 1],
            [RUNS[1], batch, BATCH_EVENTS],
          ] as const) {
            const m = cannonMeasurement(name, measured, perRequest, undefined);
            if ((m.errors ?? 0) > 0 || (m.non2xx ?? 0) > 0) {
              throw new Error(`${variant}: ${name}: ${m.errors} errors, ${m.non2xx} non-2xx`);
            }
            const key = `${variant}|${name}`;
            results.set(key, [...(results.get(key) ?? []), m.eventsPerSecond]);
          }
        } finally {
          await server.stop();
        }
      }
    }

    const median = (variant: Variant, name: string) => middle(results.get(`${variant}|${name}`) ?? []);
    const rows: string[][] = [];
    const summary: Record<string, unknown>[] = [];
    for (const name of RUNS) {
      const off = median("hashing off", name);
      for (const variant of VARIANTS) {
        const rate = median(variant, name);
        const cost = off > 0 ? 1 - rate / off : 0;
        const max =
          variant === "hashing off" ? undefined : variant === "hashing" ? HASHING_MAX_COST : SIGNING_MAX_COST;
        const all = (results.get(`${variant}|${name}`) ?? []).map(formatRate).join(" / ");
        rows.push([
          `${name}, ${variant}`,
          formatRate(rate),
          all,
          variant === "hashing off" ? "-" : `${(cost * 100).toFixed(1)} %`,
          max === undefined ? "-" : `≤ ${max * 100} %`,
          max === undefined ? "-" : cost <= max ? "ok" : "MISSED",
        ]);
        summary.push({
          run: name,
          variant,
          eventsPerSecond: rate,
          rounds: results.get(`${variant}|${name}`),
          cost,
          maxCost: max,
        });
      }
    }
    const table = formatTable(
      ["run", "events/s (median)", "each round", "cost", "target", "vs target"],
      rows,
    );
    process.stdout.write(
      `chain: ${seconds} s per run, ${rounds} rounds, ${label}; hashing off = ${baselineRevision.slice(0, 12)}\n${table}\n`,
    );
    const file = await writeResults("chain", {
      machine: { ...machineInfo(), store: label },
      seconds,
      rounds,
      baselineRevision,
      results: summary,
    });
    process.stdout.write(`results: ${path.relative(ROOT, file)}\n`);
  } finally {
    removeSignalHandlers();
    await cleanup.run();
  }
}

/** A build of `revision` in `dir` (a detached git worktree sharing this checkout's node_modules); its CLI. */
function middle(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : (sorted[Math.floor((sorted.length - 1) / 2)] as number);
}
