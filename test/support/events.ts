import type { EventFilter, NewEvent } from "../../src/events/event.js";

/** A valid event for storage-level tests (subject undefined = none): data defaults to the subject's bytes. */
export function newEvent(subject: string | undefined, overrides: Partial<NewEvent> = {}): NewEvent {
  return {
    source: "test",
    type: "test.created",
    subject,
    ceId: undefined,
    time: undefined,
    datacontenttype: undefined,
    dataschema: undefined,
    extensions: undefined,
    data: Buffer.from(`data of ${subject}`),
    ...overrides,
  };
}

/**
 * The model of a filter's subject match, as the store and the hub must apply it: an exact subject,
 * or one below it when recursive; no subjects = all, the only filter an event without one matches.
 */
export function matchesSubjects(filter: Omit<EventFilter, "type">, subject: string | undefined): boolean {
  if (filter.subjects.length === 0) return true;
  if (subject === undefined) return false;
  return filter.subjects.some((s) => subject === s || (filter.recursive && subject.startsWith(`${s}/`)));
}
