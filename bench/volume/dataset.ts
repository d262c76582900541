import type { ExtensionValue, StoredEvent } from "../../src/events/event.js";

/**
 * The volume bench's data (issue 16, "Millions of events"): a deterministic stream of events in id
 * order, the same for a size and a seed on every run and store.
 *
 * - Subjects: LEAVES entities in a three-level tree, `tenant-NN/<aggregate>/<entity>`. Entity
 *   rank 0 (the hot subject) gets HOT_SHARE of the events, the others a Zipf-like share
 *   ∝ (rank + 1)^-LEAF_SKEW; tenants and aggregates are drawn Zipf-like too, so a tenant is a
 *   large subtree and most tenant/aggregate nodes are mid-size ones (0.1–2 % of the table).
 * - Types: COMMON_TYPES.length common types ∝ 1/(k + 1), and RARE_TYPES, each at fixed evenly
 *   spaced ids (at least one event whatever the size) and never on the hot subject, so the read
 *   "hot subject with a rare type" must prove that none exists: the worst case.
 * - Data: JSON of about 200 bytes; every fifth event has a traceparent extension; times increase
 *   by 1 µs–2 s per event from START_TIME.
 */

/** Entities (leaf subjects). At 10k events only the busier ones get any. */
export const LEAVES = 50_000;
/** The hot subject's share of all events. */
export const HOT_SHARE = 0.02;
/** Exponent of the leaves' Zipf-like shares (rank 1 on). */
const LEAF_SKEW = 0.7;
const TENANTS = 40;
const AGGREGATES = [
  "orders",
  "carts",
  "customers",
  "invoices",
  "shipments",
  "payments",
  "tickets",
  "reviews",
];
const COMMON_TYPES = [
  "order.created",
  "order.updated",
  "item.added",
  "item.removed",
  "order.paid",
  "order.shipped",
  "customer.updated",
  "invoice.issued",
  "payment.authorized",
  "payment.captured",
  "shipment.dispatched",
  "shipment.delivered",
  "ticket.opened",
  "ticket.commented",
  "ticket.closed",
  "review.posted",
  "cart.abandoned",
  "cart.restored",
  "order.cancelled",
  "order.refunded",
  "customer.merged",
  "invoice.voided",
  "payment.failed",
  "shipment.returned",
  "price.changed",
  "stock.adjusted",
  "address.verified",
];
/** Rare types and how many events per million each gets (at least one). */
export const RARE_TYPES: readonly (readonly [type: string, perMillion: number])[] = [
  ["payment.chargeback", 20],
  ["account.closed", 2],
  ["audit.escalated", 0.5],
];
export const TYPES = COMMON_TYPES.length + RARE_TYPES.length;
const START_TIME_MS = Date.UTC(2025, 0, 1);
const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"];
const CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK"];

/** mulberry32: a small, fast, seeded PRNG (uniform in [0, 1)). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Eight random hex digits. */
function hex8(random: () => number): string {
  return Math.floor(random() * 4294967296)
    .toString(16)
    .padStart(8, "0");
}

/** Cumulative weights of `count` items, normalized to end at 1. */
function cumulative(count: number, weight: (i: number) => number): Float64Array {
  const sums = new Float64Array(count);
  let total = 0;
  for (let i = 0; i < count; i++) {
    total += weight(i);
    sums[i] = total;
  }
  for (let i = 0; i < count; i++) sums[i] = (sums[i] as number) / total;
  return sums;
}

/** The index whose cumulative range holds u (binary search). */
function pick(sums: Float64Array, u: number): number {
  let lo = 0;
  let hi = sums.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sums[mid] as number) > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The subject tree: each leaf's subject, tenant and tenant/aggregate node. */
export interface Tree {
  readonly subjects: readonly string[];
  readonly tenantOf: Uint16Array;
  /** Per leaf: tenant * AGGREGATES.length + aggregate. */
  readonly nodeOf: Uint16Array;
  readonly tenants: readonly string[];
  readonly nodes: readonly string[];
}

export function subjectTree(seed: number): Tree {
  const random = prng(seed ^ 0x5eed);
  const tenantSums = cumulative(TENANTS, (i) => 1 / (i + 1));
  const aggregateSums = cumulative(AGGREGATES.length, (i) => 1 / (i + 1) ** 0.8);
  const tenants = Array.from({ length: TENANTS }, (_, t) => `tenant-${String(t).padStart(2, "0")}`);
  const nodes = tenants.flatMap((tenant) => AGGREGATES.map((aggregate) => `${tenant}/${aggregate}`));
  const subjects: string[] = [];
  const tenantOf = new Uint16Array(LEAVES);
  const nodeOf = new Uint16Array(LEAVES);
  for (let leaf = 0; leaf < LEAVES; leaf++) {
    const tenant = pick(tenantSums, random());
    const aggregate = pick(aggregateSums, random());
    tenantOf[leaf] = tenant;
    nodeOf[leaf] = tenant * AGGREGATES.length + aggregate;
    const name = (AGGREGATES[aggregate] as string).slice(0, 3);
    subjects.push(`${nodes[nodeOf[leaf] as number]}/${name}-${leaf.toString(36).padStart(4, "0")}`);
  }
  return { subjects, tenantOf, nodeOf, tenants, nodes };
}

/** Writes the events of one size and seed, in id order (ids from 1). */
export class EventStream {
  readonly tree: Tree;
  readonly #events: number;
  readonly #random: () => number;
  readonly #leafSums: Float64Array;
  readonly #typeSums: Float64Array;
  /** Per rare type: how many events and the spacing of their ids (events / count). */
  readonly #rare: readonly { readonly count: number; readonly every: number }[];
  #timeMicros = 0;
  /** The time's whole second and its text (toISOString once a second, not once an event). */
  #second = -1;
  #secondText = "";
  /** Events per leaf so far. */
  readonly leafCounts = new Uint32Array(LEAVES);
  readonly typeCounts = new Map<string, number>();

  constructor(events: number, seed: number) {
    this.#events = events;
    this.tree = subjectTree(seed);
    this.#random = prng(seed);
    this.#leafSums = cumulative(LEAVES, (i) => (i === 0 ? 0 : (i + 1) ** -LEAF_SKEW));
    // Leaf 0 is the hot subject: HOT_SHARE, the rest shares 1 - HOT_SHARE by the sums above.
    this.#typeSums = cumulative(COMMON_TYPES.length, (i) => 1 / (i + 1));
    this.#rare = RARE_TYPES.map(([, perMillion]) => {
      const count = Math.max(1, Math.round((events * perMillion) / 1e6));
      return { count, every: events / count };
    });
  }

  /**
   * The rare type of an id, if it is one of a rare type's ids: floor((j + offset) * every) + 1
   * for j = 0 … count - 1, the offset differing per type so that they rarely meet.
   */
  #rareType(id: number): string | undefined {
    for (const [r, { count, every }] of this.#rare.entries()) {
      const offset = (r + 1) / (RARE_TYPES.length + 2);
      const j = Math.ceil((id - 1) / every - offset);
      if (j >= 0 && j < count && Math.floor((j + offset) * every) + 1 === id) return RARE_TYPES[r]?.[0];
    }
    return undefined;
  }

  /** The event with this id (call with 1, 2, 3…). */
  next(id: number): StoredEvent {
    const random = this.#random;
    const rare = this.#rareType(id);
    let leaf = random() < HOT_SHARE ? 0 : pick(this.#leafSums, random());
    while (rare !== undefined && leaf === 0) leaf = pick(this.#leafSums, random());
    const type = rare ?? (COMMON_TYPES[pick(this.#typeSums, random())] as string);
    this.leafCounts[leaf] = (this.leafCounts[leaf] as number) + 1;
    this.typeCounts.set(type, (this.typeCounts.get(type) ?? 0) + 1);
    this.#timeMicros += 1 + Math.floor(random() * 2_000_000);
    const second = Math.floor(this.#timeMicros / 1_000_000);
    if (second !== this.#second) {
      this.#second = second;
      this.#secondText = new Date(START_TIME_MS + second * 1000).toISOString().slice(0, 19);
    }
    const micros = String(this.#timeMicros % 1_000_000).padStart(6, "0");
    const time = `${this.#secondText}.${micros}Z`;
    const tenant = this.tree.tenants[this.tree.tenantOf[leaf] as number] as string;
    const extensions: Record<string, ExtensionValue> | undefined =
      id % 5 === 0
        ? {
            traceparent: `00-${hex8(random)}${hex8(random)}${hex8(random)}${hex8(random)}-${hex8(random)}${hex8(random)}-01`,
          }
        : undefined;
    const uuid = hex8(random) + hex8(random);
    return {
      id,
      source: `https://bench.eventsdb.example/${tenant}`,
      type,
      subject: this.tree.subjects[leaf],
      // A UUID-like id, unique through its last part (the id).
      ceId: `${uuid.slice(0, 8)}-${uuid.slice(8, 12)}-4${uuid.slice(12, 15)}-a${uuid.slice(15, 16)}${hex8(random).slice(0, 2)}-${id.toString(16).padStart(12, "0")}`,
      time,
      datacontenttype: "application/json",
      dataschema: undefined,
      extensions,
      data: Buffer.from(this.#data(leaf)),
      hash: undefined,
      prevHash: undefined,
      signature: undefined,
    } as StoredEvent;
  }

  /** JSON of about 200 bytes (written as text: JSON.stringify of an object costs more). */
  #data(leaf: number): string {
    const random = this.#random;
    const items = 1 + Math.floor(random() * 3);
    let lines = "";
    for (let i = 0; i < items; i++) {
      const sku = Math.floor(random() * 1e6);
      const qty = 1 + Math.floor(random() * 5);
      const price = Math.round(random() * 50_000) / 100;
      lines += `${i === 0 ? "" : ","}{"sku":"SKU-${sku}","qty":${qty},"price":${price}}`;
    }
    const amount = Math.round(random() * 1_000_000) / 100;
    const currency = CURRENCIES[Math.floor(random() * CURRENCIES.length)];
    const note = `${WORDS[Math.floor(random() * WORDS.length)]} ${WORDS[Math.floor(random() * WORDS.length)]}`;
    return `{"entity":${leaf},"amount":${amount},"currency":"${currency}","lines":[${lines}],"note":"${note}"}`;
  }

  get size(): number {
    return this.#events;
  }
}

/** What the reads of the bench aim at, chosen from the loaded events' counts. */
export interface Landmarks {
  readonly events: number;
  readonly seed: number;
  readonly distinctSubjects: number;
  readonly hotSubject: { readonly subject: string; readonly events: number };
  readonly smallSubject: { readonly subject: string; readonly events: number };
  readonly rareType: { readonly type: string; readonly events: number };
  readonly midSubtree: { readonly subject: string; readonly events: number };
  readonly largeSubtree: { readonly subject: string; readonly events: number };
  /** The median distinct subject: a deep `after` for GET /subjects. */
  readonly deepAfter: string;
}

/** The landmarks of a stream that has written all its events. */
export function landmarks(stream: EventStream, seed: number): Landmarks {
  const { tree, leafCounts } = stream;
  const events = stream.size;
  const tenantCounts = new Map<number, number>();
  const nodeCounts = new Map<number, number>();
  const present: string[] = [];
  let small = -1;
  for (let leaf = 0; leaf < LEAVES; leaf++) {
    const count = leafCounts[leaf] as number;
    if (count === 0) continue;
    present.push(tree.subjects[leaf] as string);
    const t = tree.tenantOf[leaf] as number;
    const n = tree.nodeOf[leaf] as number;
    tenantCounts.set(t, (tenantCounts.get(t) ?? 0) + count);
    nodeCounts.set(n, (nodeCounts.get(n) ?? 0) + count);
    // A small subject: about 10 events (the fewest there are at small sizes).
    if (small === -1 || Math.abs(count - 10) < Math.abs((leafCounts[small] as number) - 10)) small = leaf;
  }
  present.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const largest = [...tenantCounts.entries()].sort((a, b) => b[1] - a[1])[0] as [number, number];
  // A mid-size subtree: the tenant/aggregate node nearest 0.5 % of the table.
  const mid = [...nodeCounts.entries()].sort(
    (a, b) => Math.abs(a[1] - events * 0.005) - Math.abs(b[1] - events * 0.005),
  )[0] as [number, number];
  const [rareName] = RARE_TYPES[0] as readonly [string, number];
  return {
    events,
    seed,
    distinctSubjects: present.length,
    hotSubject: { subject: tree.subjects[0] as string, events: leafCounts[0] as number },
    smallSubject: { subject: tree.subjects[small] as string, events: leafCounts[small] as number },
    rareType: { type: rareName, events: stream.typeCounts.get(rareName) ?? 0 },
    midSubtree: { subject: tree.nodes[mid[0]] as string, events: mid[1] },
    largeSubtree: { subject: tree.tenants[largest[0]] as string, events: largest[1] },
    deepAfter: present[Math.floor(present.length / 2)] as string,
  };
}
