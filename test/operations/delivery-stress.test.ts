import { randomBytes } from "node:crypto";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { DIALECTS } from "../support/dialects.js";
import { GrpcJsClient, type GrpcJsStream } from "../support/grpc.js";
import { metric } from "../support/metrics.js";
import {
  killServerProcesses,
  readAllEvents,
  removeTempDirs,
  type ServerProcess,
  type SimpleEvent,
  startServerProcess,
} from "../support/process.js";
import { RawStream, waitUntil } from "../support/sse.js";

// "Each event exactly once, in order" under stress: several server processes on one MariaDB (one
// on SQLite, which is one process per file), tiny stream buffers and flush intervals so that
// streams overflow into paging all the time, writers appending single events and batches on
// every instance, SSE and gRPC streams on every instance (one subject, several overlapping
// subjects, recursive, all subjects, by type; from 0 or from the current end; some readers pause
// so that their buffers overflow for certain). At the end of each round every stream's ids are
// compared with what the table says it should have received.
//
// The CI run is short. Hunt longer with e.g.
//   EVENTSDB_STRESS_ROUNDS=50 EVENTSDB_STRESS_EVENTS=3000 EVENTSDB_STRESS_CLIENTS=40 \
//   EVENTSDB_TEST_DIALECTS=mysql npx vitest run test/operations/delivery-stress.test.ts
// (also EVENTSDB_STRESS_WRITERS per instance, EVENTSDB_STRESS_SERVER_ARGS, EVENTSDB_STRESS_SEED).

const ROUNDS = positive("EVENTSDB_STRESS_ROUNDS", 1);
/** Events appended per round (across every instance). */
const EVENTS = positive("EVENTSDB_STRESS_EVENTS", 500);
/** Streams per instance per round. */
const CLIENTS = positive("EVENTSDB_STRESS_CLIENTS", 10);
/** Concurrent append loops per instance. */
const WRITERS = positive("EVENTSDB_STRESS_WRITERS", 3);
/** More server flags for a hunt (they win over the ones below), e.g. "--stream-flush-ms 20". */
const EXTRA_ARGS = (process.env.EVENTSDB_STRESS_SERVER_ARGS ?? "").split(" ").filter((a) => a !== "");
/** MariaDB instances (SQLite: one process per file). */
const MYSQL_INSTANCES = 3;
/** How long, after the writes, every stream may take to receive what the table says. */
const SETTLE_MS = 30_000;

function positive(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
  return value;
}

/** Per instance: the smallest buffers and flush intervals, all different. */
function instanceArgs(i: number): string[] {
  return [
    "--client-buffer-size",
    String(1 + (i % 3)),
    "--stream-flush-ms",
    String(i % 3),
    "--stream-batch-size",
    String(1 + ((i + 1) % 3)),
    "--store-poll-ms",
    "5",
    ...EXTRA_ARGS,
  ];
}

const LEAVES = ["a", "a/b", "a/b/c", "b", "c"] as const;
const TYPES = ["t1", "t2"] as const;

interface Filter {
  readonly subjects: readonly string[];
  readonly recursive: boolean;
  readonly type?: string;
}

function matches(filter: Filter, event: SimpleEvent): boolean {
  const subjectOk =
    filter.subjects.length === 0 ||
    filter.subjects.some(
      (s) => event.subject === s || (filter.recursive && event.subject.startsWith(`${s}/`)),
    );
  return subjectOk && (filter.type === undefined || filter.type === event.type);
}

/** One stream as the check sees it. */
interface Reader {
  readonly name: string;
  readonly filter: Filter;
  readonly fromId: number;
  ids(): number[];
  close(): void;
}

/** A small deterministic generator, so that a failing round can be described by its seed. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

class Round {
  readonly readers: Reader[] = [];
  readonly acked: number[] = [];
  readonly #grpc: GrpcJsClient[] = [];
  readonly #pauses: NodeJS.Timeout[] = [];
  readonly #resumes: (() => void)[] = [];
  #appended = 0;
  /** SSE connections dropped and resumed with Last-Event-ID. */
  reconnects = 0;
  #maxAcked: number;
  #stopped = false;

  constructor(
    readonly servers: readonly ServerProcess[],
    readonly round: number,
    readonly rand: () => number,
    startId: number,
  ) {
    this.#maxAcked = startId;
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.rand() * items.length)] as T;
  }

  #subject(leaf: string): string {
    return `r${this.round}/${leaf}`;
  }

  /** Opens one stream on `server`: SSE mostly, gRPC sometimes; some of them read slowly. */
  open(server: ServerProcess, n: number): void {
    const from = this.rand() < 0.5 ? 0 : this.#maxAcked;
    const slow = this.rand() < 0.3;
    const name = `instance ${this.servers.indexOf(server)} stream ${n}`;
    if (this.rand() < 0.3) this.#openGrpc(server, name, from, slow);
    else this.#openSse(server, name, from, slow);
  }

  #openSse(server: ServerProcess, name: string, fromId: number, slow: boolean): void {
    const s = (leaf: string) => this.#subject(leaf);
    const filter = this.#pick<Filter>([
      { subjects: [s("a")], recursive: false },
      { subjects: [s("a")], recursive: true },
      { subjects: [s("a"), s("a/b")], recursive: true }, // a/b/c matches through both
      { subjects: [s("a/b"), s("b")], recursive: false },
      { subjects: [s("c"), s("b")], recursive: true, type: "t2" },
      { subjects: [], recursive: false }, // every subject (of every round: from the current end)
      { subjects: [], recursive: false, type: "t1" },
    ]);
    // Streams on every subject start at the current end: from 0 they would read every round.
    const from = filter.subjects.length === 0 ? this.#maxAcked : fromId;
    const query = new URLSearchParams();
    for (const subject of filter.subjects) query.append("subject", subject);
    if (filter.recursive) query.set("recursive", "true");
    if (filter.type !== undefined) query.set("type", filter.type);
    query.set("from_id", String(from));
    const path = `/events/stream?${query}`;
    // Earlier connections of a reader that reconnects, and the current one.
    const streams = [new RawStream(server.restPort, path)];
    const current = () => streams.at(-1) as RawStream;
    const ids = () => streams.flatMap((stream) => stream.parser.ids());
    if (slow)
      this.#slowly(
        () => current().pause(),
        () => current().resume(),
      );
    const reconnects = this.rand() < 0.2;
    if (reconnects) {
      // Like an EventSource behind a load balancer: drop the connection now and then and resume
      // with Last-Event-ID (the last whole frame received), on any instance.
      const reconnect = () => {
        const last = ids().at(-1);
        current().close();
        this.reconnects++;
        const next = this.#pick(this.servers);
        streams.push(
          new RawStream(next.restPort, path, last === undefined ? {} : { "Last-Event-ID": String(last) }),
        );
        if (!this.#stopped) this.#pauses.push(setTimeout(reconnect, 50 + this.rand() * 400));
      };
      this.#pauses.push(setTimeout(reconnect, 50 + this.rand() * 400));
    }
    this.readers.push({
      name: `${name} (SSE ${query}${reconnects ? ", reconnecting" : ""})`,
      filter,
      fromId: from,
      ids,
      close: () => current().close(),
    });
  }

  #openGrpc(server: ServerProcess, name: string, fromId: number, slow: boolean): void {
    const s = (leaf: string) => this.#subject(leaf);
    const filter = this.#pick<Filter>([
      { subjects: [s("a")], recursive: true },
      { subjects: [s("b")], recursive: false },
      { subjects: [s("a/b")], recursive: true, type: "t1" },
    ]);
    const client = new GrpcJsClient(server.grpcPort, true);
    this.#grpc.push(client);
    const stream: GrpcJsStream = client.stream({
      subject: filter.subjects[0],
      recursive: filter.recursive,
      ...(filter.type === undefined ? {} : { type: filter.type }),
      from_id: String(fromId),
    });
    if (slow)
      this.#slowly(
        () => stream.call.pause(),
        () => stream.call.resume(),
      );
    this.readers.push({
      name: `${name} (gRPC ${JSON.stringify(filter)} from ${fromId})`,
      filter,
      fromId,
      ids: () => stream.ids(),
      close: () => stream.cancel(),
    });
  }

  /** Stops reading for a while, again and again, so the server's buffer for it overflows. */
  #slowly(pause: () => void, resume: () => void): void {
    this.#resumes.push(resume);
    const cycle = () => {
      pause();
      const timer = setTimeout(
        () => {
          resume();
          if (!this.#stopped) this.#pauses.push(setTimeout(cycle, 20 + this.rand() * 150));
        },
        30 + this.rand() * 250,
      );
      this.#pauses.push(timer);
    };
    this.#pauses.push(setTimeout(cycle, this.rand() * 100));
  }

  /** One append loop on `server`: single events and batches, until the round has its events. */
  async write(server: ServerProcess): Promise<void> {
    while (this.#appended < EVENTS) {
      const count = this.rand() < 0.5 ? 1 : 2 + Math.floor(this.rand() * 4);
      this.#appended += count;
      const events = Array.from({ length: count }, () => ({
        source: "stress",
        type: this.#pick(TYPES),
        subject: this.#subject(this.#pick(LEAVES)),
        // Sizes up to a few KiB: paused readers fill their socket buffers and block the server.
        data: randomBytes(Math.floor(this.rand() * 3000)).toString("base64"),
      }));
      const res = await fetch(`${server.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(count === 1 ? events[0] : events),
      });
      const body = (await res.json()) as { id?: number; ids?: number[] };
      if (res.status !== 200) throw new Error(`POST /events answered ${res.status}: ${JSON.stringify(body)}`);
      const ids = body.ids ?? [body.id as number];
      this.acked.push(...ids);
      this.#maxAcked = Math.max(this.#maxAcked, ...ids);
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#pauses) clearTimeout(timer);
    for (const resume of this.#resumes) resume();
  }

  close(): void {
    this.stop();
    for (const reader of this.readers) reader.close();
    for (const client of this.#grpc) client.close();
  }
}

/** What went wrong for one reader, or undefined when it received exactly `expected`. */
function difference(received: readonly number[], expected: readonly number[]): string | undefined {
  if (received.length === expected.length && received.every((id, i) => id === expected[i])) return undefined;
  const got = new Set<number>();
  const duplicates: number[] = [];
  const backwards: number[] = [];
  received.forEach((id, i) => {
    if (got.has(id)) duplicates.push(id);
    got.add(id);
    if (i > 0 && id <= (received[i - 1] as number)) backwards.push(id);
  });
  const wanted = new Set(expected);
  const missing = expected.filter((id) => !got.has(id));
  const extra = [...got].filter((id) => !wanted.has(id));
  const part = (label: string, ids: readonly number[]) =>
    ids.length === 0 ? [] : [`${label} ${ids.length}: ${ids.slice(0, 20).join(",")}`];
  return [
    `received ${received.length} of ${expected.length}`,
    ...part("missing", missing),
    ...part("duplicated", duplicates),
    ...part("out of order", backwards),
    ...part("not expected", extra),
  ].join("; ");
}

async function sum(servers: readonly ServerProcess[], name: string): Promise<number> {
  const values = await Promise.all(servers.map((server) => metric(server.url, name)));
  return values.reduce((total, value) => total + value, 0);
}

afterEach(killServerProcesses);
afterAll(removeTempDirs);

describe("delivery under stress: every stream gets each event exactly once, in order", () => {
  it.each(DIALECTS)(
    "$name: instances on one store, tiny buffers, writers and slow readers on each, checked against the table",
    async (dialect) => {
      const databaseUrl = await dialect.url();
      const instances = dialect.name === "mysql" ? MYSQL_INSTANCES : 1;
      const servers: ServerProcess[] = [];
      for (let i = 0; i < instances; i++) {
        servers.push(await startServerProcess({ databaseUrl, args: instanceArgs(i) }));
      }
      const seed = Number(process.env.EVENTSDB_STRESS_SEED ?? Date.now() % 1_000_000);
      let startId = 0;
      const failures: string[] = [];
      for (let round = 0; round < ROUNDS && failures.length === 0; round++) {
        const r = new Round(servers, round, random(seed + round), startId);
        try {
          // Half of the streams open before the writes, the rest while they run.
          let n = 0;
          for (const server of servers) for (let k = 0; k < CLIENTS / 2; k++) r.open(server, n++);
          const writing = Promise.all(
            servers.flatMap((server) => Array.from({ length: WRITERS }, () => r.write(server))),
          );
          const late = (async () => {
            for (const server of servers) {
              for (let k = Math.ceil(CLIENTS / 2); k < CLIENTS; k++) {
                await new Promise((resolve) => setTimeout(resolve, 10 + r.rand() * 40));
                r.open(server, n++);
              }
            }
          })();
          await Promise.all([writing, late]);
          r.stop(); // slow readers read on from here

          const table = await readAllEvents((servers[0] as ServerProcess).url);
          const stored = new Set(table.map((e) => e.id));
          const lostAcks = r.acked.filter((id) => !stored.has(id));
          expect(lostAcks, "acknowledged appends missing from the table").toEqual([]);
          startId = table.at(-1)?.id ?? startId;
          const expected = (reader: Reader) =>
            table.filter((e) => e.id > reader.fromId && matches(reader.filter, e)).map((e) => e.id);
          try {
            await waitUntil(
              () => r.readers.every((reader) => reader.ids().length >= expected(reader).length),
              "every stream to receive what the table holds for it",
              SETTLE_MS,
            );
          } catch {
            // The comparison below says who is missing what.
          }
          for (const reader of r.readers) {
            const problem = difference(reader.ids(), expected(reader));
            if (problem !== undefined)
              failures.push(`round ${round} (seed ${seed + round}), ${reader.name}: ${problem}`);
          }
          const overflows = await sum(servers, "eventsdb_stream_buffer_overflows_total");
          if (process.env.EVENTSDB_STRESS_ROUNDS !== undefined) {
            const delivered = r.readers.reduce((total, reader) => total + reader.ids().length, 0);
            console.log(
              `${dialect.name} round ${round}: ${r.acked.length} events, ${r.readers.length} streams, ` +
                `${delivered} deliveries, ${r.reconnects} reconnects, ${overflows} overflows so far, ` +
                `${failures.length} failures`,
            );
          }
          // The point of the tiny buffers: streams did fall back to paging.
          expect(overflows).toBeGreaterThan(0);
        } finally {
          r.close();
        }
      }
      expect(failures).toEqual([]);
    },
    120_000 + ROUNDS * 60_000,
  );
});
