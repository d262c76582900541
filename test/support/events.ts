import type { NewEvent } from "../../src/events/event.js";

/** A valid event for storage-level tests: data defaults to the subject's bytes. */
export function newEvent(subject: string, overrides: Partial<NewEvent> = {}): NewEvent {
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
