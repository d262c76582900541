import {
  type CompiledQuery,
  type ExpressionBuilder,
  type Kysely,
  type RawBuilder,
  type Selectable,
  sql,
} from "kysely";
import { EventsDbError } from "../errors.js";
import { chainHash, contentDigest, GENESIS_HASH, linkHash } from "../events/chain.js";
import type {
  AppendResult,
  EventFilter,
  NewEvent,
  Page,
  PageQuery,
  Precondition,
  StoredEvent,
} from "../events/event.js";
import type { Signer } from "../events/signing.js";
import type { AppendState, ChainedRow, EventsIndex, StorageDialect } from "./dialect.js";
import type { Database, EventsTable } from "./schema.js";
import { SubjectHeads } from "./subject-heads.js";

/**
 * The stored subject of an event without one. The column stays NOT NULL: no subject was ever
 * empty (validation refuses ""), so '' is unambiguous; it needs no migration or table rebuild, keeps
 * (subject, id) an index of plain values on both dialects, and no filter ever names it (filters
 * refuse ""; recursive ranges start at a non-empty `S/`), so only reads of all subjects see it.
 */
const NO_SUBJECT = "";
/** Idempotency keys looked up per query. */
const LOOKUP_KEYS = 500;
/** A concurrent append of the same (source, id) by another process surfaces as a duplicate key: retry. */
const DUPLICATE_RETRIES = 3;

/** MariaDB's range estimates ran this many times a subtree's true size (see #subtreeRead). */
const ESTIMATE_BIAS = 2;

/** Subjects whose last event one statement reads (one column each). */
const LAST_ID_SUBJECTS = 500;

/** One request's part of a group commit: its events and the preconditions they are stored under. */
export interface AppendJob {
  readonly events: readonly NewEvent[];
  readonly preconditions: readonly Precondition[];
  /** The time of its events that carry none (the group's `now` when absent). */
  readonly time?: string;
  /** Each event's content digest (chain.ts contentDigest with `time`), when computed ahead. */
  readonly digests?: readonly Buffer[];
}

/** How new events are signed (--signing-key-file, --signing-mode). */
export interface Signing {
  readonly signer: Signer;
  /** True: every event's hash; false: only each commit's last (it covers the others through the chain). */
  readonly everyEvent: boolean;
}

/** The result of one committed group commit. */
export interface GroupOutcome {
  /** Per job, in order: one result per event, or the failed_precondition that stored none of it. */
  readonly jobs: readonly (AppendResult[] | EventsDbError)[];
  /** The events this transaction created, in id order (what the hub publishes). */
  readonly created: StoredEvent[];
}

/**
 * Told after each page of a backfill: events hashed so far, the last id hashed, and the last id
 * there was when it started (the end of the range, for a percentage).
 */
export type BackfillProgress = (done: number, lastId: number, endId: number) => void;

/** The result of one committed append transaction. */
export interface AppendOutcome {
  /** One result per input event, in input order. */
  readonly results: AppendResult[];
  /** The events this transaction created, in id order (what the hub publishes). */
  readonly created: StoredEvent[];
}

/** Every read and write of events, on Kysely, the same on both dialects. */
export class EventRepository {
  readonly #dialect: StorageDialect;
  readonly #signing: Signing | undefined;
  /** Subjects' last ids as this process last saw them: preconditions checked without a read. */
  readonly #heads = new SubjectHeads();
  /**
   * The highest last id this process has seen committed (its appends, lastCommitted, which the
   * hub calls every few milliseconds): the table's size for #subtreeRead, without a read of its own.
   */
  #lastSeen: number | undefined;

  /** With `signing`, new events' chain hashes are signed: each one's, or each commit's last. */
  constructor(dialect: StorageDialect, signing?: Signing) {
    this.#dialect = dialect;
    this.#signing = signing;
  }

  /**
   * Appends events in one transaction. Events whose (source, ceId) is already stored, or that
   * repeat an earlier event of the same call, create nothing and get the stored id. `now` is the
   * time of events that carry none.
   */
  async append(events: readonly NewEvent[], now: string): Promise<AppendOutcome> {
    const outcome = await this.appendJobs([{ events, preconditions: [] }], now);
    return { results: outcome.jobs[0] as AppendResult[], created: outcome.created };
  }

  /**
   * Appends the jobs of a group commit in one transaction, each as `append` would, in order, and
   * each under its preconditions, checked atomically with the append: a job whose preconditions
   * do not hold when its turn comes — after the jobs before it in this transaction — stores nothing
   * and gets failed_precondition; the others are not affected.
   *
   * A job whose events are all stored already (by (source, ceId): a retry) is answered their ids
   * without checking its preconditions: they held when it was first stored, and have since been
   * changed by that very append. A job with only some of its events stored is checked like a new
   * one (what it adds must still fit), and, when they hold, stores the rest.
   *
   * Every new event is chained (src/events/chain.ts): hashed over its id, its predecessor's hash
   * and its content, and signed when the repository has a signer.
   */
  async appendJobs(jobs: readonly AppendJob[], now: string): Promise<GroupOutcome> {
    let read = false;
    // Without preconditions the stored keys are not looked up first: the unique index on (source,
    // ce_id) refuses a key stored already, and only then is the group tried again with the lookup
    // (a retry's answer is its stored ids). A new event, the common case, saves that round trip.
    // With preconditions they are looked up: a retry must be answered without checking them.
    let lookUp = jobs.some((job) => job.preconditions.length > 0);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#appendOnce(jobs, now, read, lookUp);
      } catch (error) {
        // Planned from known subject heads, but the store had moved on: read them under the lock.
        if (error instanceof StaleHeads && !read) {
          read = true;
          continue;
        }
        if (!lookUp && this.#dialect.isDuplicateKey(error)) {
          lookUp = true;
          attempt--;
          continue;
        }
        // A writer in another process stored one of our keys between our check and our INSERT;
        // the unique index refused the whole transaction, and the retry's check sees that commit.
        // (With preconditions read under the lock, the keys are read there too: only a writer
        // that takes no such lock, an older version of this server, could.)
        if (attempt >= DUPLICATE_RETRIES || !this.#dialect.isDuplicateKey(error)) throw error;
      }
    }
  }

  /**
   * One attempt. The stored keys are looked up before the append (with `lookUp`; else the unique
   * index is what finds a stored one, see appendJobs), and preconditions are checked
   * against the subject heads this process knows (see SubjectHeads), when it knows them all: the
   * append then needs no reads, one round trip on MySQL. Otherwise (or with `read`) the stored keys
   * and the subjects' last events are read inside the append transaction, after its lock, so
   * nothing can commit between the check and the INSERT — neither another writer's event that
   * breaks a precondition nor a concurrent store of a retry's keys.
   */
  async #appendOnce(
    jobs: readonly AppendJob[],
    now: string,
    read: boolean,
    lookUp: boolean,
  ): Promise<GroupOutcome> {
    const subjects = [...new Set(jobs.flatMap((job) => job.preconditions.map((p) => p.subject)))];
    const checked = subjects.length > 0;
    const fromHeads = checked && !read && this.#heads.covers(subjects);
    const underLock = checked && !fromHeads;
    const keys = keyedEvents(jobs);
    const keyReads = underLock ? chunk(keys, LOOKUP_KEYS).map((part) => this.#existingQuery(part)) : [];
    const subjectReads = underLock
      ? chunk(subjects, LAST_ID_SUBJECTS).map((part) => lastIdsQuery(part).compile(this.#dialect.db))
      : [];
    const known =
      underLock || !lookUp || keys.length === 0 ? new Map<string, number>() : await this.#existing(keys);
    let outcome: GroupOutcome | undefined;
    let from: AppendState | undefined;
    let lastRead = new Map<string, number>();
    const end = await this.#dialect.append([...keyReads, ...subjectReads], async (state, results) => {
      const stored = underLock ? new Map<string, number>() : known;
      for (const rows of results.slice(0, keyReads.length)) {
        for (const row of rows) {
          stored.set(idempotencyKey(String(row.source), String(row.ce_id ?? "")), Number(row.id));
        }
      }
      let lastOf = new Map<string, number>();
      if (fromHeads) {
        lastOf = this.#heads.at(state, subjects) ?? throwStale();
      } else {
        results.slice(keyReads.length).forEach((rows, part) => {
          const row = rows[0] ?? {};
          subjects.slice(part * LAST_ID_SUBJECTS, (part + 1) * LAST_ID_SUBJECTS).forEach((subject, i) => {
            const value = row[`l${i}`];
            lastOf.set(subject, value === null || value === undefined ? 0 : Number(value));
          });
        });
      }
      const firstId = state.lastId + 1;
      const plan = planGroup(jobs, stored, checked ? { firstId, lastOf } : undefined);
      const chained = await this.#chain(jobs, plan, firstId, state.lastHash, now);
      outcome = resolvePlan(plan, firstId, chained);
      from = state;
      lastRead = underLock ? lastOf : new Map();
      return chained.map((event) => this.#toChainedRow(event));
    });
    if (outcome === undefined || from === undefined) throw new Error("the append transaction made no plan");
    this.#heads.advance(from, end, lastRead, subjectsOf(outcome.created));
    this.#lastSeen = Math.max(this.#lastSeen ?? 0, end.lastId);
    return outcome;
  }

  /** The new events as stored: ids from firstId, each hashed onto the one before and signed. */
  async #chain(
    jobs: readonly AppendJob[],
    plan: GroupPlan,
    firstId: number,
    lastHash: Buffer,
    now: string,
  ): Promise<StoredEvent[]> {
    let prevHash = lastHash;
    const chained = plan.rows.map((event, r) => {
      const [j, e] = plan.origins[r] as readonly [number, number];
      const job = jobs[j] as AppendJob;
      const time = event.time ?? job.time ?? now;
      // One literal with every field, filled in place: spreading the validated events cost more
      // than hashing them (V8 copies such objects field by field through a slow path).
      const stored: Mutable<StoredEvent> = {
        id: firstId + r,
        source: event.source,
        type: event.type,
        subject: event.subject,
        ceId: event.ceId,
        time,
        datacontenttype: event.datacontenttype,
        dataschema: event.dataschema,
        extensions: event.extensions,
        data: event.data,
        hash: undefined,
        prevHash,
        signature: undefined,
      };
      // The content's digest was computed when the job was accepted, off this path (see Writer).
      stored.hash = linkHash(stored.id, prevHash, job.digests?.[e] ?? contentDigest(stored, time));
      prevHash = stored.hash;
      return stored;
    });
    const signing = this.#signing;
    if (signing === undefined || chained.length === 0) return chained;
    // --signing-mode commit: the commit's last hash covers every hash before it, one signature.
    const signed = signing.everyEvent ? chained : chained.slice(-1);
    const signatures = await signing.signer.sign(signed.map((event) => event.hash as Buffer));
    signed.forEach((event, r) => {
      event.signature = signatures[r];
    });
    return chained;
  }

  /** Stored ids of the events' (source, ceId) keys. */
  async #existing(events: readonly NewEvent[]): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for (const part of chunk(events, LOOKUP_KEYS)) {
      const rows = await this.#dialect.db.executeQuery(this.#existingQuery(part));
      for (const row of rows.rows) found.set(idempotencyKey(row.source, row.ce_id ?? ""), Number(row.id));
    }
    return found;
  }

  /** The stored rows (id, source, ce_id) of some events' keys. */
  #existingQuery(
    events: readonly NewEvent[],
  ): CompiledQuery<{ id: number | bigint; source: string; ce_id: string | null }> {
    return this.#dialect.db
      .selectFrom("events")
      .select(["id", "source", "ce_id"])
      .where((eb) =>
        eb(
          eb.refTuple("source", "ce_id"),
          "in",
          events.map((e) => eb.tuple(e.source, e.ceId as string)),
        ),
      )
      .compile();
  }

  #toChainedRow(event: StoredEvent): ChainedRow {
    return toChainedRow(event, this.#dialect.writeTime);
  }

  /** One event by server id, or undefined. */
  async get(id: number): Promise<StoredEvent | undefined> {
    const row = await this.#dialect.db
      .selectFrom("events")
      .selectAll()
      .where("id", "=", id)
      .where("tombstone", "=", 0)
      .executeTakeFirst();
    return row === undefined ? undefined : this.#fromRow(row);
  }

  /**
   * Events with id > fromId matching the filter, in id order (keyset pagination), at most
   * `limit` and, with `maxBytes`, at most that many bytes of events (the first one always).
   *
   * A byte-bounded page is read in two steps, so that no row beyond the budget is ever fetched:
   * first the ids and sizes (the generated `event_size` column) of the next limit + 1 matching
   * rows, then the rows that fit, by id range. Ids are allocated in commit order, so no row can
   * appear inside that range between the two reads; a row deleted meanwhile is simply missing.
   */
  async page(query: PageQuery): Promise<Page> {
    const maxBytes = query.maxBytes ?? Number.POSITIVE_INFINITY;
    const read = await this.#subtreeRead(query, query.limit + 1);
    const subtree = read === "index" ? query : undefined;
    const walk = read === "walk";
    let rows: Selectable<EventsTable>[];
    let hasMore: boolean;
    if (maxBytes === Number.POSITIVE_INFINITY) {
      rows = await (subtree === undefined
        ? this.#select(query, query.limit + 1, undefined, undefined, walk)
        : this.#selectOfSubtree(subtree, query.limit + 1));
      hasMore = rows.length > query.limit;
      if (hasMore) rows = rows.slice(0, query.limit);
    } else {
      const sizes = await (subtree === undefined
        ? this.#select(query, query.limit + 1, undefined, ["id", "event_size"], walk)
        : this.#selectOfSubtree(subtree, query.limit + 1, ["id", "event_size"]));
      let count = 0;
      let bytes = 0;
      for (const row of sizes) {
        const size = Number(row.event_size);
        if (count === query.limit || (count > 0 && bytes + size > maxBytes)) break;
        bytes += size;
        count++;
      }
      hasMore = sizes.length > count;
      const last = sizes[count - 1];
      if (last === undefined) rows = [];
      else if (subtree === undefined)
        rows = await this.#select(query, count, Number(last.id), undefined, walk);
      // The rows the first read found, by id: reading the subtree's range again would cost as much.
      else
        rows = await this.#selectByIds(
          subtree,
          sizes.slice(0, count).map((row) => Number(row.id)),
        );
    }
    const events = rows.map((row) => this.#fromRow(row));
    const last = events.at(-1);
    return { events, hasMore, nextFromId: last === undefined ? query.fromId : last.id };
  }

  /**
   * Up to `limit` matching rows with fromId < id (≤ upTo), in id order: every column, or some.
   * With `walk`, a recursive read walks the table in id order (the primary key) whatever the
   * planner would choose (see #subtreeRead).
   */
  #select(
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns?: undefined,
    walk?: boolean,
  ): Promise<Selectable<EventsTable>[]>;
  #select<C extends keyof EventsTable>(
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns: readonly C[],
    walk?: boolean,
  ): Promise<Pick<Selectable<EventsTable>, C>[]>;
  #select(
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns?: readonly (keyof EventsTable)[],
    walk = false,
  ): Promise<Partial<Selectable<EventsTable>>[]> {
    if (walk) {
      const what = selectList(columns);
      const below = upTo === undefined ? sql`` : sql`AND id <= ${upTo}`;
      return sql<Partial<Selectable<EventsTable>>>`
        SELECT ${what} FROM events ${sql.raw(this.#dialect.forceIndex("PRIMARY"))}
        WHERE ${subtreeWhere(query)} AND id > ${query.fromId} ${below} ORDER BY id LIMIT ${limit}
      `
        .execute(this.#dialect.db)
        .then((result) => result.rows);
    }
    const [subject] = query.subjects;
    // With a type, SQLite's planner too needs telling: it chose the (type, id) index, which reads
    // every event of the type to find the subject's.
    if (
      subject !== undefined &&
      query.subjects.length === 1 &&
      !query.recursive &&
      (this.#dialect.hintsSubjectPages || query.type !== undefined)
    ) {
      return this.#selectOfSubject(subject, query, limit, upTo, columns);
    }
    let select = this.#dialect.db
      .selectFrom("events")
      .where((eb) => matches(eb, query))
      .where("id", ">", query.fromId);
    if (upTo !== undefined) select = select.where("id", "<=", upTo);
    const ordered = select.orderBy("id").limit(limit);
    return columns === undefined ? ordered.selectAll().execute() : ordered.select(columns).execute();
  }

  /**
   * One subject's rows with the dialect's index hint. MariaDB 10.11 otherwise reads the
   * (subject, id) index by subject alone and skips ids up to the cursor row by row, so each page
   * of a long catch-up cost more than the last (4 ms at 1k, 60 ms at 750k); with the hint it
   * seeks to (subject, cursor): about 2 ms per page at any depth. With a type it seeks to
   * (subject, type, cursor) instead, and reads none of the subject's events of other types.
   */
  #selectOfSubject(
    subject: string,
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns: readonly (keyof EventsTable)[] | undefined,
  ): Promise<Partial<Selectable<EventsTable>>[]> {
    const what = selectList(columns);
    const byType = query.type === undefined ? sql`` : sql`AND type = ${query.type}`;
    const below = upTo === undefined ? sql`` : sql`AND id <= ${upTo}`;
    const index = query.type === undefined ? "events_subject_id" : "events_subject_type_id";
    return sql<Partial<Selectable<EventsTable>>>`
      SELECT ${what} FROM events ${sql.raw(this.#dialect.forceIndex(index))}
      WHERE subject = ${subject} AND id > ${query.fromId} ${below} ${byType}
      ORDER BY id LIMIT ${limit}
    `
      .execute(this.#dialect.db)
      .then((result) => result.rows);
  }

  /**
   * How a recursive page reads its subtree: "index", its ids from the subject index
   * (#selectOfSubtree), or "walk", the table in id order until the page is full (the planners'
   * choice without a hint: MariaDB's always, SQLite's sometimes; SQLite also sorted whole large
   * subtrees), or undefined, the planner's choice (not recursive; or large with a type, where the
   * (type, id) index may serve better than either). The index read examines every entry of the
   * subtree (S of them; entries are small) and sorts their ids; the walk
   * examines rows until `limit` match: about limit × N / S of N events when the subtree is spread
   * over the ids, and never more than the rows after the cursor. So the index wins while
   * S² < limit × N × the dialect's entriesPerRow: below 2 % of 5M events for pages of 1000 on
   * MariaDB, below 3 % of 1M on SQLite. S is MariaDB's range estimate (cheap index dives, which
   * ran 1.5–2.5× the true count on the bench data: halved), or, on SQLite, an
   * index-only count that stops at the threshold. With a type of at most `limit` events in all,
   * the (type, id) index answers at once (SQLite's planner picks it; a subtree count would cost more).
   */
  async #subtreeRead(query: PageQuery, limit: number): Promise<"index" | "walk" | undefined> {
    if (!query.recursive || query.subjects.length === 0 || query.tombstones === true) return undefined;
    const large = query.type === undefined ? "walk" : undefined;
    const after = (this.#lastSeen ?? (await this.lastCommitted())) - query.fromId;
    // A page near the end (a live stream's next one): the walk reads at most what follows.
    if (after <= limit) return large;
    const total = query.fromId + after;
    const threshold = Math.ceil(Math.min(Math.sqrt(limit * total * this.#dialect.entriesPerRow), after));
    if (query.type !== undefined) {
      const ofType = await this.#size("events_type_id", sql<boolean>`type = ${query.type}`, limit + 1);
      if (ofType <= limit) return undefined;
    }
    return (await this.#size(subtreeIndex(query), subtreeWhere(query), threshold)) < threshold
      ? "index"
      : large;
  }

  /** About how many entries of `index` match `where`: MariaDB's estimate, or a count up to `bound`. */
  async #size(index: EventsIndex, where: RawBuilder<boolean>, bound: number): Promise<number> {
    const hint = sql.raw(this.#dialect.forceIndex(index));
    const estimate = await this.#dialect.estimateRows(
      sql`SELECT id FROM events ${hint} WHERE ${where}`.compile(this.#dialect.db),
    );
    if (estimate !== undefined) return estimate / ESTIMATE_BIAS;
    const counted = await sql<{ n: number | bigint }>`
      SELECT COUNT(*) AS n FROM (SELECT 1 FROM events ${hint} WHERE ${where} LIMIT ${bound}) AS probe
    `.execute(this.#dialect.db);
    return Number(counted.rows[0]?.n ?? bound);
  }

  /**
   * A recursive page by a late row lookup: the ids of the next `limit` events of the subtree,
   * read from the subject index alone (each scope's two ranges; with a type, the
   * (subject, type, id) index), sorted, then only those rows. Costs the subtree's index entries,
   * whatever the cursor, and no row beyond the page.
   */
  #selectOfSubtree(query: PageQuery, limit: number): Promise<Selectable<EventsTable>[]>;
  #selectOfSubtree<C extends keyof EventsTable>(
    query: PageQuery,
    limit: number,
    columns: readonly C[],
  ): Promise<Pick<Selectable<EventsTable>, C>[]>;
  #selectOfSubtree(
    query: PageQuery,
    limit: number,
    columns?: readonly (keyof EventsTable)[],
  ): Promise<Partial<Selectable<EventsTable>>[]> {
    const hint = sql.raw(this.#dialect.forceIndex(subtreeIndex(query)));
    const execute = (query: RawBuilder<Partial<Selectable<EventsTable>>>) =>
      query.execute(this.#dialect.db).then((result) => result.rows);
    // A page's weighing (ids and sizes) from the index alone, where it carries the sizes.
    if (columns?.every((c) => c === "id" || c === "event_size") && this.#dialect.subjectIndexesCarrySize) {
      return execute(sql`
        SELECT ${selectList(columns)} FROM events ${hint}
        WHERE ${subtreeWhere(query)} AND id > ${query.fromId} ORDER BY id LIMIT ${limit}
      `);
    }
    const what = selectList(columns, "events.");
    return execute(sql`
      SELECT ${what} FROM events JOIN (
        SELECT id FROM events ${hint} WHERE ${subtreeWhere(query)} AND id > ${query.fromId}
        ORDER BY id LIMIT ${limit}
      ) AS page ON page.id = events.id
      ORDER BY events.id
    `);
  }

  /** The rows of some ids that still match a recursive filter (not deleted meanwhile), in id order. */
  #selectByIds(query: PageQuery, ids: readonly number[]): Promise<Selectable<EventsTable>[]> {
    return this.#dialect.db
      .selectFrom("events")
      .selectAll()
      .where("id", "in", ids)
      .where(() => subtreeWhere(query))
      .orderBy("id")
      .execute();
  }

  /** Deletes events with id > fromId matching the filter; returns how many. */
  async delete(filter: EventFilter, fromId: number): Promise<number> {
    // A deleted event leaves its tombstone: its id and chain fields, nothing of its content. The
    // chain still verifies across it; the cleared subject and type keep it out of every filtered
    // read and `matches` keeps it out of the others.
    // It also counts itself in event_sequence.deletions, under the append lock, so that every
    // process that planned appends from the subjects' last events it knew sees that they changed.
    this.#heads.clear();
    return this.#dialect.db.transaction().execute(async (trx) => {
      const result = await trx
        .updateTable("events")
        .set({
          tombstone: 1,
          source: "",
          type: "",
          subject: NO_SUBJECT,
          ce_id: null,
          datacontenttype: null,
          dataschema: null,
          extensions: null,
          data: Buffer.alloc(0),
        })
        .where((eb) => matches(eb, filter))
        .where("id", ">", fromId)
        .executeTakeFirst();
      const deleted = Number(result.numUpdatedRows);
      if (deleted > 0) {
        await trx
          .updateTable("event_sequence")
          .set({ deletions: sql<number>`deletions + 1` })
          .where("name", "=", "events")
          .execute();
      }
      return deleted;
    });
  }

  /**
   * The chain from fromId on, tombstones included (each with `deleted` and no content): at most
   * `limit` links and `maxBytes` bytes (the first always), for verifiers.
   */
  chain(fromId: number, limit: number, maxBytes: number): Promise<Page> {
    return this.page({
      subjects: [],
      recursive: false,
      type: undefined,
      fromId,
      limit,
      maxBytes,
      tombstones: true,
    });
  }

  /**
   * Gives every event stored before the chain existed its hash, in pages of `pageSize` in id
   * order, each page one statement, so that an interrupted run resumes where it stopped; records
   * the last hash in event_sequence when done. Appends wait for it (the store refuses to chain
   * onto an unknown hash); migrate() runs it after the migrations, outside their lock, before the
   * server serves (two runs at once write the same hashes). Returns how many events it hashed;
   * `progress` is told after each page.
   */
  async backfillChain(pageSize = 1000, progress?: BackfillProgress): Promise<number> {
    const { db } = this.#dialect;
    const sequence = await db
      .selectFrom("event_sequence")
      .select(["last_id", "last_hash"])
      .where("name", "=", "events")
      .executeTakeFirst();
    if (sequence === undefined || sequence.last_hash !== null || Number(sequence.last_id) === 0) return 0;
    const endId = Number(sequence.last_id);
    // Resume: skip the rows an earlier run hashed (those before the first without a hash).
    let fromId = 0;
    let prevHash = GENESIS_HASH;
    for (;;) {
      const rows = await db
        .selectFrom("events")
        .select(["id", "hash"])
        .where("id", ">", fromId)
        .orderBy("id")
        .limit(10 * pageSize)
        .execute();
      const firstUnhashed = rows.findIndex((row) => row.hash === null);
      const hashed = firstUnhashed === -1 ? rows : rows.slice(0, firstUnhashed);
      const last = hashed.at(-1);
      if (last !== undefined) {
        fromId = Number(last.id);
        prevHash = Buffer.from(last.hash as Buffer);
      }
      if (firstUnhashed !== -1 || rows.length === 0) break;
    }
    let done = 0;
    for (;;) {
      const rows = await db
        .selectFrom("events")
        .selectAll()
        .where("id", ">", fromId)
        .orderBy("id")
        .limit(pageSize)
        .execute();
      if (rows.length === 0) {
        // Done, unless another process appended meanwhile (then its rows are the next page).
        const recorded = await db
          .updateTable("event_sequence")
          .set({ last_hash: prevHash })
          .where("name", "=", "events")
          .where("last_id", "=", fromId)
          .executeTakeFirst();
        if (Number(recorded.numUpdatedRows) === 1 || (await this.lastId()) === fromId) return done;
        continue;
      }
      const hashes: [number, Buffer, Buffer][] = [];
      for (const row of rows) {
        const event = this.#fromRow(row);
        const hash = chainHash(event.id, prevHash, event);
        hashes.push([event.id, hash, prevHash]);
        prevHash = hash;
      }
      await db
        .updateTable("events")
        .set({
          hash: caseById(hashes.map(([id, hash]) => [id, hash])),
          prev_hash: caseById(hashes.map(([id, , prev]) => [id, prev])),
        })
        .where(
          "id",
          "in",
          hashes.map(([id]) => id),
        )
        .execute();
      done += rows.length;
      fromId = hashes[hashes.length - 1]?.[0] as number;
      progress?.(done, fromId, endId);
    }
  }

  /**
   * One keyset page of distinct subjects, sorted: those starting with the plain string `prefix`,
   * greater than `after`, within `scopes` (each scope and everything below it; undefined = all
   * subjects), at most `limit` (undefined = all). Events without a subject list nothing. Each
   * scope is two index ranges (the scope itself, then `scope/`…), read in order until the page is
   * full, so a page costs index seeks, never a scan past what it returns (plus one subject, to say
   * whether more follow), whatever the scopes hide.
   */
  async subjects(query: SubjectsQuery): Promise<SubjectsPage> {
    const want = query.limit === undefined ? undefined : query.limit + 1;
    const found: string[] = [];
    for (const range of subjectRanges(query)) {
      const left = want === undefined ? undefined : want - found.length;
      if (left === 0) break;
      for (const row of await subjectsSelect(this.#dialect.db, range, left).execute())
        found.push(row.subject);
    }
    const hasMore = want !== undefined && found.length === want;
    const subjects = hasMore ? found.slice(0, -1) : found;
    return { subjects, hasMore, nextAfter: hasMore ? (subjects.at(-1) ?? "") : "" };
  }

  /** The highest id stored, 0 when empty. */
  async lastId(): Promise<number> {
    const row = await this.#dialect.db
      .selectFrom("events")
      .select((eb) => eb.fn.max("id").as("max"))
      .executeTakeFirst();
    return row?.max === null || row?.max === undefined ? 0 : Number(row.max);
  }

  /**
   * The id of the last committed event (event_sequence.last_id, written in the same transaction as
   * the events): one primary-key read, cheap enough to watch every few milliseconds.
   */
  async lastCommitted(): Promise<number> {
    const row = await this.#dialect.db
      .selectFrom("event_sequence")
      .select("last_id")
      .where("name", "=", "events")
      .executeTakeFirst();
    const last = row === undefined ? 0 : Number(row.last_id);
    this.#lastSeen = Math.max(this.#lastSeen ?? 0, last);
    return last;
  }

  /** A cheap round trip for readiness. */
  async ping(): Promise<void> {
    await this.#dialect.db.selectFrom("event_sequence").select("last_id").limit(1).execute();
  }

  #fromRow(row: Selectable<EventsTable>): StoredEvent {
    const ext = row.extensions;
    return {
      id: Number(row.id),
      source: row.source,
      type: row.type,
      subject: row.subject === NO_SUBJECT ? undefined : row.subject,
      ceId: row.ce_id ?? undefined,
      time: this.#dialect.readTime(row.time),
      datacontenttype: row.datacontenttype ?? undefined,
      dataschema: row.dataschema ?? undefined,
      // MariaDB's JSON is LONGTEXT (a string); MySQL's JSON arrives parsed; SQLite stores text.
      extensions: ext === null ? undefined : typeof ext === "string" ? JSON.parse(ext) : ext,
      data: Buffer.isBuffer(row.data) ? row.data : Buffer.from(row.data),
      hash: bytesOrUndefined(row.hash),
      prevHash: bytesOrUndefined(row.prev_hash),
      signature: bytesOrUndefined(row.signature),
      deleted: Number(row.tombstone) === 1 ? true : undefined,
    } as StoredEvent;
  }
}

/**
 * A chained event's row as every dialect inserts it (values in INSERT_COLUMNS order via
 * chainedValues), `writeTime` being the dialect's; exported for the volume bench's loader, which
 * writes rows directly and must store exactly what an append stores.
 */
export function toChainedRow(event: StoredEvent, writeTime: (canonical: string) => string): ChainedRow {
  return {
    id: event.id,
    source: event.source,
    type: event.type,
    subject: event.subject ?? NO_SUBJECT,
    ce_id: event.ceId ?? null,
    time: writeTime(event.time),
    datacontenttype: event.datacontenttype ?? null,
    dataschema: event.dataschema ?? null,
    extensions: event.extensions === undefined ? null : JSON.stringify(event.extensions),
    data: event.data,
    hash: event.hash as Buffer,
    prev_hash: event.prevHash as Buffer,
    signature: event.signature ?? null,
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Planned from subject heads that were no longer current (see SubjectHeads). */
class StaleHeads extends Error {
  override readonly name = "StaleHeads";
}

function throwStale(): never {
  throw new StaleHeads("the subject heads this process knew are out of date");
}

/** The subjects of new events with their ids, in id order (events without a subject left out). */
function* subjectsOf(events: readonly StoredEvent[]): Iterable<readonly [string, number]> {
  for (const event of events) if (event.subject !== undefined) yield [event.subject, event.id];
}

function bytesOrUndefined(value: Buffer | Uint8Array | null | undefined): Buffer | undefined {
  if (value === null || value === undefined) return undefined;
  return Buffer.isBuffer(value) ? value : Buffer.from(value);
}

/** `CASE id WHEN … THEN … END`: one statement sets a different value on each row of a page. */
function caseById(values: readonly [number, Buffer][]) {
  return sql<Buffer>`CASE id ${sql.join(
    values.map(([id, value]) => sql`WHEN ${id} THEN ${value}`),
    sql` `,
  )} END`;
}

function idempotencyKey(source: string, ceId: string): string {
  return `${source}\u0000${ceId}`;
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const parts: T[][] = [];
  for (let start = 0; start < items.length; start += size) parts.push(items.slice(start, start + size));
  return parts;
}

/** The first event of each (source, ceId) key in the jobs: the keys to look up. */
function keyedEvents(jobs: readonly AppendJob[]): NewEvent[] {
  const seen = new Set<string>();
  const keyed: NewEvent[] = [];
  for (const job of jobs) {
    for (const event of job.events) {
      if (event.ceId === undefined) continue;
      const key = idempotencyKey(event.source, event.ceId);
      if (!seen.has(key)) {
        seen.add(key);
        keyed.push(event);
      }
    }
  }
  return keyed;
}

/**
 * The last event (highest id) of each subject, exactly that subject: one row, column `l<i>` for
 * subjects[i], NULL when it has none. One MAX per subject, which both engines answer from the
 * (subject, id) index with one seek (a GROUP BY would make SQLite walk each subject's events).
 */
function lastIdsQuery(subjects: readonly string[]) {
  const columns = subjects.map(
    (subject, i) => sql`(SELECT MAX(id) FROM events WHERE subject = ${subject}) AS ${sql.ref(`l${i}`)}`,
  );
  return sql<Record<string, unknown>>`SELECT ${sql.join(columns)}`;
}

/**
 * A group's new events and each job's results, ids still unresolved: a stored id is positive, the
 * new event at rows[r] is -(r + 1) until the transaction's first id is known.
 */
interface GroupPlan {
  readonly rows: NewEvent[];
  /** Per row: its job and its place among the job's events. */
  readonly origins: (readonly [job: number, event: number])[];
  readonly jobs: (number[] | EventsDbError)[];
  /** Per job, whether each result created its event. */
  readonly created: boolean[][];
}

/**
 * Decides, job by job, what the group stores and answers (see appendJobs). `state` is the store at
 * the lock — the first id this transaction gets and each precondition subject's last id — or
 * undefined when no job has preconditions.
 */
function planGroup(
  jobs: readonly AppendJob[],
  stored: ReadonlyMap<string, number>,
  state: { readonly firstId: number; readonly lastOf: ReadonlyMap<string, number> } | undefined,
): GroupPlan {
  const rows: NewEvent[] = [];
  const ids = new Map(stored);
  /** Subjects given an event by an earlier job of this group: the row of their last one. */
  const lastRow = new Map<string, number>();
  const plan: GroupPlan = { rows, origins: [], jobs: [], created: [] };
  for (const [j, job] of jobs.entries()) {
    const retry =
      job.events.length > 0 &&
      job.events.every((e) => e.ceId !== undefined && ids.has(idempotencyKey(e.source, e.ceId)));
    const failure =
      retry || state === undefined
        ? undefined
        : failedPrecondition(job.preconditions, (subject) => {
            const row = lastRow.get(subject);
            return row === undefined ? (state.lastOf.get(subject) ?? 0) : state.firstId + row;
          });
    if (failure !== undefined) {
      plan.jobs.push(failure);
      plan.created.push([]);
      continue;
    }
    const results: number[] = [];
    const created: boolean[] = [];
    for (const [e, event] of job.events.entries()) {
      const key = event.ceId === undefined ? undefined : idempotencyKey(event.source, event.ceId);
      const known = key === undefined ? undefined : ids.get(key);
      if (known !== undefined) {
        results.push(known);
        created.push(false);
        continue;
      }
      const id = -(rows.length + 1);
      lastRow.set(event.subject ?? NO_SUBJECT, rows.length);
      rows.push(event);
      plan.origins.push([j, e]);
      if (key !== undefined) ids.set(key, id);
      results.push(id);
      created.push(true);
    }
    plan.jobs.push(results);
    plan.created.push(created);
  }
  return plan;
}

/** The plan with real ids, once the transaction has its first id, and its new events as stored. */
function resolvePlan(plan: GroupPlan, firstId: number, created: StoredEvent[]): GroupOutcome {
  const id = (planned: number) => (planned > 0 ? planned : firstId - planned - 1);
  return {
    jobs: plan.jobs.map((results, j) =>
      results instanceof EventsDbError
        ? results
        : results.map((planned, i) => ({ id: id(planned), created: plan.created[j]?.[i] === true })),
    ),
    created,
  };
}

/** The first precondition that does not hold, as the error to answer, or undefined. */
function failedPrecondition(
  preconditions: readonly Precondition[],
  lastOf: (subject: string) => number,
): EventsDbError | undefined {
  for (const p of preconditions) {
    const last = lastOf(p.subject);
    const subject = JSON.stringify(p.subject);
    let message: string | undefined;
    if (p.kind === "pristine" && last !== 0)
      message = `subject ${subject} is not pristine (last event ${last})`;
    else if (p.kind === "populated" && last === 0) message = `subject ${subject} has no events`;
    else if (p.kind === "on_event" && last !== p.id) {
      message =
        last === 0
          ? `subject ${subject} has no events, not event ${p.id}`
          : `subject ${subject} is on event ${last}, not ${p.id}`;
    }
    if (message !== undefined)
      return new EventsDbError("failed_precondition", `precondition failed: ${message}`);
  }
  return undefined;
}

/**
 * Subject filter as index ranges, not LIKE: `recursive` = the subject itself or any subject in
 * [S + "/", S + "0"), "0" being the code point after "/" (subtreeRanges). So `%`, `_` and `\` are
 * plain characters, `orders` never matches `orders-archive`, and both engines range-scan the
 * (subject, id) index.
 */
function matches(eb: ExpressionBuilder<Database, "events">, filter: EventFilter) {
  const conditions = [];
  if (filter.subjects.length > 0) {
    conditions.push(
      filter.recursive
        ? subtreeCondition(filter.subjects)
        : eb.or(filter.subjects.map((subject) => eb("subject", "=", subject))),
    );
  }
  if (filter.type !== undefined) conditions.push(eb("type", "=", filter.type));
  // Tombstones have neither subject nor type: only a read of everything can meet them.
  if (conditions.length === 0 && !(filter as PageQuery).tombstones) conditions.push(eb("tombstone", "=", 0));
  return eb.and(conditions);
}

/**
 * Some subjects and everything below them as one condition on `subject`, from their index ranges
 * (subtreeRanges): `subject = S` for a subject itself, a range below it. The one form of a
 * recursive subject filter, in Kysely's queries (matches) and the raw ones (subtreeWhere).
 */
function subtreeCondition(subjects: readonly string[]) {
  const ranges = subtreeRanges(subjects).map(({ from, to }) =>
    to === `${from}\u0001` ? sql`subject = ${from}` : sql`(subject >= ${from} AND subject < ${to})`,
  );
  return sql<boolean>`(${sql.join(ranges, sql` OR `)})`;
}

/** A recursive filter's subjects and type as one condition (see subtreeCondition). */
function subtreeWhere(filter: EventFilter) {
  const byType = filter.type === undefined ? sql`` : sql` AND type = ${filter.type}`;
  return sql<boolean>`${subtreeCondition(filter.subjects)}${byType}`;
}

/** A raw read's select list: every column, or these (qualified with `table`, e.g. "events.", when given). */
function selectList(columns: readonly (keyof EventsTable)[] | undefined, table = "") {
  return columns === undefined ? sql.raw(`${table}*`) : sql.join(columns.map((c) => sql.ref(`${table}${c}`)));
}

/** The index a recursive read of the filter examines: by subject, or by subject and type. */
function subtreeIndex(filter: EventFilter): EventsIndex {
  return filter.type === undefined ? "events_subject_id" : "events_subject_type_id";
}

/**
 * The index ranges of some subjects and everything below them, in order and disjoint: per
 * subject, itself alone (nothing sorts between it and itself + U+0001 but "subject\0…", never
 * stored; reads write it `subject = S`, which the (subject, type, id) index seeks with the type)
 * and `subject/` up to `subject0`, "0" being the code point after "/". Subjects below another one
 * are dropped. The one place both a recursive read (matches, #selectOfSubtree) and a
 * narrow token's subject pages (subjectRanges) cut the subject order into scopes.
 */
export function subtreeRanges(subjects: readonly string[]): Required<SubjectRange>[] {
  const distinct = [...new Set(subjects)];
  return distinct
    .filter((s) => !distinct.some((o) => o !== s && s.startsWith(`${o}/`)))
    .flatMap((subject) => [
      { from: subject, open: false, to: `${subject}\u0001` },
      { from: `${subject}/`, open: false, to: `${subject}0` },
    ])
    .sort((a, b) => compare(a.from, b.from));
}

/** What one page of subjects selects (see Repository.subjects). */
export interface SubjectsQuery {
  readonly prefix: string;
  /** Only subjects sorting after this one ("" = from the first). */
  readonly after: string;
  /** Most subjects on the page; undefined = all of them (the Go service's unpaged list). */
  readonly limit?: number;
  /** Readable scopes: subjects equal to or below one of them; undefined = every subject. */
  readonly scopes?: readonly string[];
}

/** One page of subjects; `nextAfter` (the page's last subject) is where the next page starts. */
export interface SubjectsPage {
  readonly subjects: string[];
  readonly hasMore: boolean;
  /** The `after` of the next page when hasMore, else "". */
  readonly nextAfter: string;
}

/** A half-open range of subjects: from `from` (excluded when `open`) to before `to` (none = the end). */
export interface SubjectRange {
  readonly from: string;
  readonly open: boolean;
  readonly to?: string;
}

/**
 * The disjoint index ranges a page of subjects reads, in order: the prefix's range, above `after`
 * and above the stored "" of subjectless events, cut to each scope's two ranges (`scope` alone and
 * `scope/` up to `scope0`). Scopes below another scope are dropped, so the ranges never overlap
 * and reading them one after another yields the subjects in order.
 */
export function subjectRanges(query: SubjectsQuery): SubjectRange[] {
  const base: SubjectRange = { from: query.prefix, open: false, to: prefixUpperBound(query.prefix) };
  let ranges: SubjectRange[] = [base];
  if (query.scopes !== undefined && !query.scopes.includes("*")) {
    ranges = subtreeRanges(query.scopes)
      .map((range) => intersect(range, base))
      .filter((range): range is SubjectRange => range !== undefined);
  }
  const floor: SubjectRange = { from: query.after === "" ? NO_SUBJECT : query.after, open: true };
  return ranges
    .map((range) => intersect(range, floor))
    .filter((range): range is SubjectRange => range !== undefined);
}

/**
 * The distinct subjects of one range, in order, at most `limit`: a range read of the (subject, id)
 * index that stops after `limit` subjects (test/unit/storage/subjects.test.ts asserts the plans).
 */
export function subjectsSelect(db: Kysely<Database>, range: SubjectRange, limit: number | undefined) {
  let select = db
    .selectFrom("events")
    .select("subject")
    .distinct()
    .where("subject", range.open ? ">" : ">=", range.from)
    .orderBy("subject");
  if (range.to !== undefined) select = select.where("subject", "<", range.to);
  return limit === undefined ? select : select.limit(limit);
}

/** The part of two ranges both cover, undefined when empty. */
function intersect(a: SubjectRange, b: SubjectRange): SubjectRange | undefined {
  const order = compare(a.from, b.from);
  const from = order > 0 ? a : order < 0 ? b : { from: a.from, open: a.open || b.open };
  const to = a.to === undefined ? b.to : b.to === undefined ? a.to : compare(a.to, b.to) <= 0 ? a.to : b.to;
  if (to !== undefined && compare(from.from, to) >= 0) return undefined;
  return { from: from.from, open: from.open, to };
}

/** Code point order, as the binary collations compare (JS's < compares UTF-16 units). */
function compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * The smallest string greater than every string starting with `prefix`, in code point order:
 * the prefix with its last code point incremented (skipping surrogates), or undefined if none.
 */
export function prefixUpperBound(prefix: string): string | undefined {
  const points = [...prefix];
  while (points.length > 0) {
    const last = (points.pop() as string).codePointAt(0) as number;
    if (last < 0x10ffff) {
      const next = last + 1 === 0xd800 ? 0xe000 : last + 1;
      return points.join("") + String.fromCodePoint(next);
    }
  }
  return undefined;
}
