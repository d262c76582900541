import { describe, expect, it } from "vitest";
import { GENESIS_HASH } from "../../../src/events/chain.js";
import { SubjectHeads } from "../../../src/storage/subject-heads.js";

const state = (lastId: number, deletions = 0) => ({ lastId, lastHash: GENESIS_HASH, deletions });

describe("SubjectHeads", () => {
  it("answers only as of the exact state it was advanced to", () => {
    const heads = new SubjectHeads();
    expect(heads.covers(["a"])).toBe(false);
    heads.advance(state(0), state(2), new Map([["a", 0]]), [["b", 2]]);
    expect(heads.covers(["a", "b"])).toBe(true);
    expect(heads.at(state(2), ["a", "b"])).toEqual(
      new Map([
        ["a", 0],
        ["b", 2],
      ]),
    );
    expect(heads.at(state(3), ["a"])).toBeUndefined();
    expect(heads.at(state(2, 1), ["a"])).toBeUndefined();
    expect(heads.at(state(2), ["c"])).toBeUndefined();
  });

  it("forgets what it knew as of another state than the append was planned from", () => {
    const heads = new SubjectHeads();
    heads.advance(state(0), state(1), new Map(), [["a", 1]]);
    // Planned from state 5 (another process appended 2..5): only what this append tells holds.
    heads.advance(state(5), state(6), new Map([["c", 4]]), [["b", 6]]);
    expect(heads.covers(["a"])).toBe(false);
    expect(heads.at(state(6), ["b", "c"])).toEqual(
      new Map([
        ["b", 6],
        ["c", 4],
      ]),
    );
  });

  it("stays under its byte cap, dropping the least recently used subjects first", () => {
    const heads = new SubjectHeads(1000);
    for (let i = 0; i < 100; i++) {
      heads.advance(state(i), state(i + 1), new Map(), [[`subject/${i}`, i + 1]]);
      // subject/0 is used on every round: it stays.
      heads.at(state(i + 1), ["subject/0"]);
      expect(heads.bytes).toBeLessThanOrEqual(1000);
    }
    expect(heads.size).toBeGreaterThan(1);
    expect(heads.covers(["subject/0", "subject/99"])).toBe(true);
    expect(heads.covers(["subject/50"])).toBe(false);
  });
});
