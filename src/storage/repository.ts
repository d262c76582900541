import { type ExpressionBuilder, type Selectable, sql } from "kysely";
import type { AppendResult, EventFilter, NewEvent, Page, PageQuery, StoredEvent } from "../events/event.js";
import type { NewRow, StorageDialect } from "./dialect.js";
import type { Database, EventsTable } from "./schema.js";

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

  constructor(dialect: StorageDialect) {
    this.#dialect = dialect;
  }

  /**
   * Appends events in one transaction. Events whose (source, ceId) is already stored, or that
   * repeat an earlier event of the same call, create nothing and get the stored id. `now` is the
   * time of events that carry none.
   */
  async append(events: readonly NewEvent[], now: string): Promise<AppendOutcome> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#appendOnce(events, now);
      } catch (error) {
        // A writer in another process stored one of our keys between our check and our INSERT;
        // the unique index refused the whole transaction, and the retry's check sees that commit.
        if (attempt >= DUPLICATE_RETRIES || !this.#dialect.isDuplicateKey(error)) throw error;
      }
    }
  }

  async #appendOnce(events: readonly NewEvent[], now: string): Promise<AppendOutcome> {
    const results: (AppendResult | undefined)[] = new Array(events.length);
    // Idempotency key → index of the first event in this call with it.
    const firstWithKey = new Map<string, number>();
    const fresh: number[] = [];
    events.forEach((event, i) => {
      if (event.ceId === undefined) fresh.push(i);
      else {
        const key = idempotencyKey(event.source, event.ceId);
        if (!firstWithKey.has(key)) firstWithKey.set(key, i);
      }
    });
    const newIndexes = new Set(fresh);
    if (firstWithKey.size > 0) {
      const stored = await this.#existing([...firstWithKey.values()].map((i) => events[i] as NewEvent));
      for (const [key, i] of firstWithKey) {
        const id = stored.get(key);
        if (id === undefined) newIndexes.add(i);
        else results[i] = { id, created: false };
      }
    }
    const order =
      newIndexes.size === events.length ? events.map((_, i) => i) : [...newIndexes].sort((a, b) => a - b);
    const created: StoredEvent[] = [];
    if (order.length > 0) {
      const rows = order.map((i) => this.#toRow(events[i] as NewEvent, now));
      let id = await this.#dialect.insertEvents(rows);
      for (const i of order) {
        const event = events[i] as NewEvent;
        created.push({ ...event, id, time: event.time ?? now });
        results[i] = { id, created: true };
        id++;
      }
    }
    // Later repeats of a key inside this call point at the first one's result.
    events.forEach((event, i) => {
      if (results[i] !== undefined || event.ceId === undefined) return;
      const first = firstWithKey.get(idempotencyKey(event.source, event.ceId)) as number;
      results[i] = { id: (results[first] as AppendResult).id, created: false };
    });
    return { results: results as AppendResult[], created };
  }

  /** Stored ids of the events' (source, ceId) keys. */
  async #existing(events: readonly NewEvent[]): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for (let start = 0; start < events.length; start += LOOKUP_KEYS) {
      const chunk = events.slice(start, start + LOOKUP_KEYS);
      const rows = await this.#dialect.db
        .selectFrom("events")
        .select(["id", "source", "ce_id"])
        .where((eb) =>
          eb(
            eb.refTuple("source", "ce_id"),
            "in",
            chunk.map((e) => eb.tuple(e.source, e.ceId as string)),
          ),
        )
        .execute();
      for (const row of rows) found.set(idempotencyKey(row.source, row.ce_id ?? ""), Number(row.id));
    }
    return found;
  }

  #toRow(event: NewEvent, now: string): NewRow {
    return {
      source: event.source,
      type: event.type,
      subject: event.subject ?? NO_SUBJECT,
      ce_id: event.ceId ?? null,
      time: this.#dialect.writeTime(event.time ?? now),
      datacontenttype: event.datacontenttype ?? null,
      dataschema: event.dataschema ?? null,
      extensions: event.extensions === undefined ? null : JSON.stringify(event.extensions),
      data: event.data,
    };
  }

  /** One event by server id, or undefined. */
  async get(id: number): Promise<StoredEvent | undefined> {
    const row = await this.#dialect.db
      .selectFrom("events")
      .selectAll()
      .where("id", "=", id)
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
    let rows: Selectable<EventsTable>[];
    let hasMore: boolean;
    if (maxBytes === Number.POSITIVE_INFINITY) {
      rows = await this.#select(query, query.limit + 1, undefined);
      hasMore = rows.length > query.limit;
      if (hasMore) rows = rows.slice(0, query.limit);
    } else {
      const sizes = await this.#select(query, query.limit + 1, undefined, ["id", "event_size"]);
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
      rows = last === undefined ? [] : await this.#select(query, count, Number(last.id));
    }
    const events = rows.map((row) => this.#fromRow(row));
    const last = events.at(-1);
    return { events, hasMore, nextFromId: last === undefined ? query.fromId : last.id };
  }

  /** Up to `limit` matching rows with fromId < id (≤ upTo), in id order: every column, or some. */
  #select(query: PageQuery, limit: number, upTo: number | undefined): Promise<Selectable<EventsTable>[]>;
  #select<C extends keyof EventsTable>(
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns: readonly C[],
  ): Promise<Pick<Selectable<EventsTable>, C>[]>;
  #select(
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns?: readonly (keyof EventsTable)[],
  ): Promise<Partial<Selectable<EventsTable>>[]> {
    const [subject] = query.subjects;
    if (
      subject !== undefined &&
      query.subjects.length === 1 &&
      !query.recursive &&
      this.#dialect.subjectIndexHint !== ""
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
   * seeks to (subject, cursor): about 2 ms per page at any depth.
   */
  #selectOfSubject(
    subject: string,
    query: PageQuery,
    limit: number,
    upTo: number | undefined,
    columns: readonly (keyof EventsTable)[] | undefined,
  ): Promise<Partial<Selectable<EventsTable>>[]> {
    const what = columns === undefined ? sql`*` : sql.join(columns.map((c) => sql.ref(c)));
    const byType = query.type === undefined ? sql`` : sql`AND type = ${query.type}`;
    const below = upTo === undefined ? sql`` : sql`AND id <= ${upTo}`;
    return sql<Partial<Selectable<EventsTable>>>`
      SELECT ${what} FROM events ${sql.raw(this.#dialect.subjectIndexHint)}
      WHERE subject = ${subject} AND id > ${query.fromId} ${below} ${byType}
      ORDER BY id LIMIT ${limit}
    `
      .execute(this.#dialect.db)
      .then((result) => result.rows);
  }

  /** Deletes events with id > fromId matching the filter; returns how many. */
  async delete(filter: EventFilter, fromId: number): Promise<number> {
    const result = await this.#dialect.db
      .deleteFrom("events")
      .where((eb) => matches(eb, filter))
      .where("id", ">", fromId)
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /**
   * Distinct subjects, sorted, optionally those starting with a plain string prefix; events
   * without a subject list nothing.
   */
  async subjects(prefix: string): Promise<string[]> {
    let query = this.#dialect.db.selectFrom("events").select("subject").distinct().orderBy("subject");
    if (prefix === "") query = query.where("subject", ">", NO_SUBJECT);
    else {
      query = query.where("subject", ">=", prefix);
      const upper = prefixUpperBound(prefix);
      if (upper !== undefined) query = query.where("subject", "<", upper);
    }
    const rows = await query.execute();
    return rows.map((r) => r.subject).filter((s) => s.startsWith(prefix));
  }

  /** The highest id stored, 0 when empty. */
  async lastId(): Promise<number> {
    const row = await this.#dialect.db
      .selectFrom("events")
      .select((eb) => eb.fn.max("id").as("max"))
      .executeTakeFirst();
    return row?.max === null || row?.max === undefined ? 0 : Number(row.max);
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
    } as StoredEvent;
  }
}

function idempotencyKey(source: string, ceId: string): string {
  return `${source}\u0000${ceId}`;
}

/**
 * Subject filter as index ranges, not LIKE: `recursive` = the subject itself or any subject in
 * [S + "/", S + "0"), "0" being the code point after "/". So `%`, `_` and `\` are plain characters,
 * `orders` never matches `orders-archive`, and both engines range-scan the (subject, id) index.
 */
function matches(eb: ExpressionBuilder<Database, "events">, filter: EventFilter) {
  const conditions = [];
  if (filter.subjects.length > 0) {
    conditions.push(
      eb.or(
        filter.subjects.flatMap((subject) =>
          filter.recursive
            ? [
                eb("subject", "=", subject),
                eb.and([eb("subject", ">=", `${subject}/`), eb("subject", "<", `${subject}0`)]),
              ]
            : [eb("subject", "=", subject)],
        ),
      ),
    );
  }
  if (filter.type !== undefined) conditions.push(eb("type", "=", filter.type));
  return eb.and(conditions);
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
