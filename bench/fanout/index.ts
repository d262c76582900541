import path from "node:path";
import { performance } from "node:perf_hooks";
import type { ServerProcess } from "../../test/support/process.js";
import {
  Cleanup,
  checkArguments,
  clockTicksPerSecond,
  formatRate,
  formatTable,
  machineInfo,
  parseCountOption,
  serverEnv,
  startBenchDatabase,
  startServerChild,
  textOption,
  writeResults,
} from "../support.js";
import { type CatchUpResult, insertCatchUp, readCatchUp } from "./catch-up.js";
import { fanOut } from "./fan-out.js";
import { ensureFileLimit, execText } from "./file-limit.js";
import { type IdleResult, idleStreams } from "./idle.js";
import {
  DEFAULT_CATCHUP,
  DEFAULT_CLIENTS,
  DEFAULT_IDLE,
  FAN_SUBJECT,
  MAX_CLIENT_PROCESSES,
  MAX_TOTAL_CLIENTS,
  OPTION_FLAGS,
  type Options,
  PUBLISH_EVENTS,
  PUBLISH_RATE,
  PUBLISHERS,
  REFERENCE,
  SWITCHES,
  TARGET_CATCHUP_EPS,
  TARGET_KB_PER_IDLE_CLIENT,
  TARGET_LOST,
  TARGET_P99_MS,
  TARGET_RSS_10K_MIB,
} from "./settings.js";
import { clientLines, heapLine, mib, percent, serverPost, tableRows } from "./table.js";

function parseOptions(args: readonly string[]): Options {
  checkArguments("fanout", args, OPTION_FLAGS, SWITCHES);
  return {
    clients: parseCountOption(args, "--clients", DEFAULT_CLIENTS, 1),
    idle: parseCountOption(args, "--idle", DEFAULT_IDLE, 0),
    catchup: parseCountOption(args, "--catchup", DEFAULT_CATCHUP, 0),
    clientProcesses: parseCountOption(
      args,
      "--client-processes",
      Math.min(machineInfo().cpus, MAX_CLIENT_PROCESSES),
      0,
    ),
    serverCli: textOption(args, "--server-cli"),
    pin: args.includes("--pin"),
  };
}

/** `taskset` every thread of a process onto a CPU list, e.g. "0" or "1-3". */
async function pinProcess(pid: number, cpus: string): Promise<void> {
  await execText("taskset", ["-a", "-p", "-c", cpus, String(pid)]);
}

/**
 * `npm run bench -- fanout [--clients N] [--client-processes N] [--idle N] [--catchup N] [--pin]`:
 * SSE fan-out against a throwaway MariaDB. `--idle 0` or `--catchup 0` skip those parts. The
 * fan-out clients are spread over `--client-processes` child processes (default: one per core, at
 * most 8; 0 = in the bench process beside the publishers, as earlier runs did), each measuring its
 * own CPU and event-loop delay, so that a busy client is told apart from a slow server. `--pin`
 * gives the server CPU 0 to itself and puts this process and MariaDB on the others (client
 * processes inherit this process's CPUs). `--server-cli PATH` measures another build's dist/cli.js
 * (e.g. a baseline built in /tmp), to run side by side with this one.
 *
 * 1. fan-out server: RSS idle, with N idle clients on fan/1, and at peak while 1000 events are
 *    published at 200/s by 4 publishers; latency (receive − sentAt) and completeness per client.
 * 2. idle server (a fresh process, so its idle RSS is a clean baseline): N idle streams opened in
 *    waves of 500; RSS per idle client and app_active_event_streams.
 * 3. same server: catch-up of N events inserted directly into MariaDB, read by one SSE client.
 */
export async function runFanout(args: readonly string[]): Promise<void> {
  const options = parseOptions(args);
  const files = await ensureFileLimit(options, args);
  if (files === "rerun") return;

  const cleanup = new Cleanup();
  const removeSignalHandlers = cleanup.onSignals();
  try {
    const { mariadb, admin, mariadbVersion } = await startBenchDatabase(cleanup, "eventsdb");
    const clockTicks = await clockTicksPerSecond();
    const env = serverEnv(mariadb.url);
    // All the bench's clients come from one address without a token: one "client" to the server.
    const serverArgs = [
      "--max-total-clients",
      String(MAX_TOTAL_CLIENTS),
      "--max-streams-per-client",
      String(MAX_TOTAL_CLIENTS),
    ];
    const cpuCount = machineInfo().cpus;
    if (options.pin && cpuCount < 2) throw new Error("--pin needs at least 2 CPUs");
    const othersCpus = `1-${cpuCount - 1}`;
    if (options.pin) {
      await pinProcess(process.pid, othersCpus);
      await pinProcess(mariadb.pid, othersCpus);
    }
    const startServer = async (): Promise<ServerProcess> => {
      const server = await startServerChild(env, serverArgs, options.serverCli);
      if (options.pin) await pinProcess(server.pid, "0");
      return server;
    };

    // ---- 1. fan-out: idle RSS, N idle clients, publish run -------------------------------------
    process.stderr.write("bench: starting the fan-out server\n");
    const fanServer = await startServer();
    cleanup.add("stop fan-out server", () => fanServer.stop());
    const fan = await fanOut(
      fanServer,
      admin,
      options.clients,
      options.clientProcesses,
      clockTicks,
      mariadb.pid,
      cleanup,
    );
    process.stderr.write("bench: stopping the fan-out server\n");
    const fanStopStarted = performance.now();
    await fanServer.stop();
    const fanStopSeconds = (performance.now() - fanStopStarted) / 1000;

    // ---- 2. + 3. idle streams and catch-up ------------------------------------------------------
    // A fresh server, so that its idle RSS is a clean baseline for the per-stream figure. The
    // catch-up rows are inserted while it runs and read from it; then once more from a server
    // started after the insert, for which they are history rather than foreign commits.
    let idle: IdleResult | undefined;
    let catchup: CatchUpResult | undefined;
    const laterServers: ServerProcess[] = [];
    if (options.idle > 0 || options.catchup > 0) {
      process.stderr.write("bench: starting the idle/catch-up server\n");
      const server = await startServer();
      laterServers.push(server);
      cleanup.add("stop idle/catch-up server", () => server.stop());
      if (options.idle > 0) idle = await idleStreams(server, options.idle, cleanup);
      if (options.catchup > 0) {
        const insert = await insertCatchUp(admin, options.catchup);
        const pids = { mariadb: mariadb.pid, ticks: clockTicks };
        const live = await readCatchUp(
          server,
          options.catchup,
          "rows inserted while the server ran",
          pids,
          cleanup,
        );
        await server.stop();
        process.stderr.write("bench: starting a server after the insert\n");
        const after = await startServer();
        laterServers.push(after);
        cleanup.add("stop catch-up server", () => after.stop());
        const fresh = await readCatchUp(
          after,
          options.catchup,
          "rows stored before the server started",
          pids,
          cleanup,
        );
        await after.stop();
        catchup = { insert, live, fresh };
      }
      await server.stop();
    }

    // ---- report --------------------------------------------------------------------------------
    const rows = tableRows(options, fan, idle, catchup);
    const header = ["measure", "measured", "target", "vs target"];
    const table = formatTable(header, rows);
    const machine = { ...machineInfo(), mariadb: mariadbVersion };
    const serverLog = [...fanServer.logLines(), ...laterServers.flatMap((server) => server.logLines())];
    const lines = [
      "",
      `fanout: ${options.clients} clients on ${FAN_SUBJECT}, ${PUBLISH_EVENTS} events at ${PUBLISH_RATE}/s from ` +
        `${PUBLISHERS} publishers; ${formatRate(options.idle)} idle streams; catch-up of ${formatRate(options.catchup)} ` +
        `events; MariaDB ${mariadbVersion}, ${machine.cpus} × ${machine.cpuModel}, Node ${machine.node}`,
      "",
      table,
      "",
      `reference: ${REFERENCE}`,
      `server: ${options.serverCli ?? "this checkout's dist/bin/cli.js"}`,
      options.pin
        ? `CPUs pinned: server on CPU 0 alone, bench process and MariaDB on CPUs ${othersCpus}`
        : "CPUs not pinned: server, bench process and MariaDB share all CPUs (--pin separates them)",
      "RSS = VmRSS of the server process (MiB = 1024 KiB); per-client RSS against a fresh server's idle RSS",
      ...clientLines(fan),
      `publish run: POST p50 ${fan.publish.postP50Ms.toFixed(1)} ms, p99 ${fan.publish.postP99Ms.toFixed(1)} ms, ` +
        `max ${fan.publish.postMaxMs.toFixed(1)} ms as the publishers saw it; in the server ${serverPost(fan)}; ` +
        `most in flight per publisher ${fan.publish.maxInFlight}, ` +
        `late sends ${fan.publish.lateSends}, ` +
        `${fan.publish.failed} failed; all delivered ${fan.deliveredAfterLastPostMs === undefined ? "never (timed out)" : `${fan.deliveredAfterLastPostMs.toFixed(0)} ms after the last POST`}; ` +
        `buffer overflows ${fan.metricsAfter.overflows}, catch-up fallbacks ${fan.metricsAfter.catchUpFallbacks}`,
      ...(catchup === undefined
        ? []
        : [
            `catch-up: ${formatRate(catchup.insert.events)} rows inserted at ${formatRate(catchup.insert.rowsPerSecond)} rows/s`,
            ...[catchup.live, catchup.fresh].flatMap((read) =>
              read === undefined
                ? []
                : [
                    `catch-up (${read.setting}): first frame after ${read.firstFrameMs.toFixed(0)} ms, ` +
                      `${formatRate(read.frames)} frames in ${read.seconds.toFixed(2)} s, order errors ${read.orderErrors}, ` +
                      `bad frames ${read.badFrames}, server CPU ${percent(read.serverCpu)}, MariaDB CPU ${percent(read.mariadbCpu)}, ` +
                      `server RSS ${mib(read.rssBeforeKb)} -> peak ${mib(read.rssPeakKb)}`,
                  ],
            ),
          ]),
      `fan-out server heap used / total / external: idle ${heapLine(fan.heap.idle)}; ${formatRate(fan.clients)} streams ` +
        `${heapLine(fan.heap.clients)}; after publishing ${heapLine(fan.heap.afterPublish)}`,
      ...(idle === undefined
        ? []
        : [
            `idle server heap used / total / external: idle ${heapLine(idle.heapIdle)}; ${formatRate(idle.opened)} streams ` +
              `${heapLine(idle.heapStreams)}; events received by idle streams: ${idle.eventsReceived}`,
          ]),
      `fan-out server stopped (SIGTERM) in ${fanStopSeconds.toFixed(2)} s; server log lines at warn or above: ${serverLog.length}`,
    ];
    process.stdout.write(`${lines.join("\n")}\n`);

    const file = await writeResults("fanout", {
      suite: "fanout",
      finishedAt: new Date().toISOString(),
      options,
      fileLimit: files,
      machine,
      publish: { events: PUBLISH_EVENTS, rate: PUBLISH_RATE, publishers: PUBLISHERS, subject: FAN_SUBJECT },
      fanout: fan,
      fanServerStopSeconds: fanStopSeconds,
      idle,
      catchup,
      targets: {
        lost: TARGET_LOST,
        p99Ms: TARGET_P99_MS,
        kbPerIdleClient: TARGET_KB_PER_IDLE_CLIENT,
        rss10kMiB: TARGET_RSS_10K_MIB,
        catchupEventsPerSecond: TARGET_CATCHUP_EPS,
      },
      reference: REFERENCE,
      serverLog,
      table,
    });
    process.stdout.write(`results: ${path.relative(process.cwd(), file)}\n`);
  } finally {
    await cleanup.run();
    removeSignalHandlers();
  }
}
