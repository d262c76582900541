import { covers, type Principal } from "../auth/tokens.js";
import type { EventFilter, StoredEvent } from "../events/event.js";
import { displayTime } from "../events/time.js";
import type { FilterExpression, SubscriptionConfig, SubscriptionSpec } from "./types.js";

/**
 * Which events a subscription delivers: first the store's read filter (config subject / recursive /
 * type, cut to the owner's read scopes: what the deliverer pages with), then, per event, the spec's
 * `source`, `types` and `filters` (CloudEvents Subscriptions API §3.2.4) over the event's CloudEvents
 * attributes.
 */

/**
 * An event's CloudEvents attribute by name, as its string value (CloudEvents 1.0 §Type System:
 * integers and booleans by their canonical string), or undefined when the event does not have it.
 * `id` is the id a sink receives: the producer's, else the server id (formats.ts renders the same).
 */
export function attribute(event: StoredEvent, name: string): string | undefined {
  switch (name) {
    case "specversion":
      return "1.0";
    case "id":
      return event.ceId ?? String(event.id);
    case "source":
      return event.source;
    case "type":
      return event.type;
    case "subject":
      return event.subject;
    case "time":
      return displayTime(event.time);
    case "datacontenttype":
      return event.datacontenttype;
    case "dataschema":
      return event.dataschema;
    default: {
      const value = event.extensions?.[name];
      return value === undefined ? undefined : String(value);
    }
  }
}

/**
 * One filter expression (§3.2.4.1.1). `exact`, `prefix` and `suffix` hold when every attribute they
 * name is present and its value matches, case-sensitively (an absent attribute never matches);
 * attribute names are lower case in CloudEvents (§Attribute Naming Convention), so a name is looked
 * up in lower case. `all` needs every nested expression, `any` one of them, `not` inverts.
 */
export function evaluate(expression: FilterExpression, event: StoredEvent): boolean {
  if ("exact" in expression) return pairs(expression.exact, event, (value, wanted) => value === wanted);
  if ("prefix" in expression)
    return pairs(expression.prefix, event, (value, wanted) => value.startsWith(wanted));
  if ("suffix" in expression)
    return pairs(expression.suffix, event, (value, wanted) => value.endsWith(wanted));
  if ("all" in expression) return expression.all.every((nested) => evaluate(nested, event));
  if ("any" in expression) return expression.any.some((nested) => evaluate(nested, event));
  if ("not" in expression) return !evaluate(expression.not, event);
  // The API refuses any other dialect (§3.2.4: "MUST be rejected"); one read back from a newer
  // version's row delivers nothing rather than everything.
  return false;
}

function pairs(
  map: Readonly<Record<string, string>>,
  event: StoredEvent,
  test: (value: string, wanted: string) => boolean,
): boolean {
  for (const [name, wanted] of Object.entries(map)) {
    const value = attribute(event, name.toLowerCase());
    if (value === undefined || !test(value, wanted)) return false;
  }
  return true;
}

/**
 * Whether a subscription delivers an event that its read filter already let through: `source`
 * (exact), one of `types` (absent or empty = any) and every expression of `filters`.
 */
export function matches(spec: SubscriptionSpec, event: StoredEvent): boolean {
  if (spec.source !== undefined && event.source !== spec.source) return false;
  if (spec.types !== undefined && spec.types.length > 0 && !spec.types.includes(event.type)) return false;
  if (spec.config.type !== undefined && event.type !== spec.config.type) return false;
  return spec.filters.every((expression) => evaluate(expression, event));
}

/** The config shorthand as the store's read filter (before it is cut to the owner's scopes). */
export function configFilter(config: SubscriptionConfig): EventFilter {
  return {
    subjects: config.subject === undefined ? [] : [config.subject],
    recursive: config.recursive,
    type: config.type,
  };
}

/**
 * The scopes both lists allow: a subject readable under both. For each pair the narrower scope
 * survives when one covers the other ("*" covers all); disjoint pairs give nothing.
 */
export function intersectScopes(a: readonly string[], b: readonly string[]): string[] {
  const out = new Set<string>();
  for (const x of a) {
    for (const y of b) {
      if (x === "*" || (y !== "*" && covers(x, y))) out.add(y);
      else if (y === "*" || covers(y, x)) out.add(x);
    }
  }
  // A scope under another kept one adds nothing.
  const scopes = [...out];
  return scopes.filter((s) => !scopes.some((t) => t !== s && (t === "*" || (s !== "*" && covers(t, s)))));
}

/** What the deliverer needs of the token registry: the named token's current read scopes. */
export interface OwnerLookup {
  /** True when no token is configured (an open server): the recorded scopes stand. */
  readonly open: boolean;
  /** The read scopes of the token with this name, or undefined when it is gone or expired. */
  readScopes(name: string): readonly string[] | undefined;
}

/** Why a subscription cannot deliver anything any more (it is parked with this reason). */
export class OwnerRevoked extends Error {
  override readonly name = "OwnerRevoked";
}

/**
 * The principal a subscription reads as: its owner with the scopes it was created with, cut to the
 * owner token's current read scopes when auth is on — so a token that lost scopes delivers less,
 * and one that gained some delivers no more than it was created for. Throws {@link OwnerRevoked}
 * when the token no longer exists or the two leave nothing to read.
 */
export function ownerPrincipal(
  record: { readonly owner: string; readonly ownerScopes: readonly string[] },
  owners: OwnerLookup,
): Principal {
  let read: readonly string[] = record.ownerScopes;
  if (!owners.open) {
    const current = owners.readScopes(record.owner);
    if (current === undefined) throw new OwnerRevoked(`the owner token ${record.owner} no longer exists`);
    read = intersectScopes(record.ownerScopes, current);
  }
  if (read.length === 0) throw new OwnerRevoked(`the owner token ${record.owner} may read nothing`);
  return { name: record.owner, read, write: [] };
}
