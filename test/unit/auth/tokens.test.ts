import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  canRead,
  canWrite,
  covers,
  readableFilter,
  requireWrite,
  TokenRegistry,
  tokenDigest,
} from "../../../src/auth/tokens.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-auth-"));
const sha = (token: string) => tokenDigest(token).toString("hex");

function authFile(name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, body);
  return file;
}

describe("tokens and scopes", () => {
  it("is open without tokens, and AUTH_TOKEN gives full access", () => {
    expect(TokenRegistry.load(undefined, undefined).open).toBe(true);
    const registry = TokenRegistry.load("s3cret", undefined);
    expect(registry.open).toBe(false);
    expect(registry.authenticate("s3cret")).toEqual({ name: "auth-token", read: ["*"], write: ["*"] });
    expect(registry.authenticate("s3cre")).toBeUndefined();
    expect(registry.authenticate("s3cret ")).toBeUndefined();
  });

  it("reads named tokens with scopes and expiry from YAML and JSON, stored as SHA-256", () => {
    const yaml = authFile(
      "tokens.yaml",
      `tokens:
  - name: reader
    sha256: ${sha("r-token")}
    read: [orders]
  - name: old
    sha256: ${sha("old-token")}
    read: ["*"]
    write: ["*"]
    expires: 2020-01-01T00:00:00Z
`,
    );
    const registry = TokenRegistry.load(undefined, yaml);
    expect(registry.authenticate("r-token")).toEqual({ name: "reader", read: ["orders"], write: [] });
    expect(registry.authenticate("old-token")).toBeUndefined();
    const json = authFile(
      "tokens.json",
      JSON.stringify({
        tokens: [{ name: "w", sha256: sha("w"), write: ["a/b"], expires: "2999-01-01T00:00:00Z" }],
      }),
    );
    expect(TokenRegistry.load(undefined, json).authenticate("w")).toEqual({
      name: "w",
      read: [],
      write: ["a/b"],
    });
  });

  it.each([
    ["tokens: 3", '"tokens" list'],
    ["tokens:\n  - name: a\n    sha256: xyz", "sha256 must be"],
    [`tokens:\n  - name: "bad name"\n    sha256: ${"a".repeat(64)}`, "name must match"],
    [`tokens:\n  - name: a\n    sha256: ${"a".repeat(64)}\n    read: orders`, "read must be a list"],
    [
      `tokens:\n  - name: a\n    sha256: ${"a".repeat(64)}\n  - name: a\n    sha256: ${"b".repeat(64)}`,
      "duplicate",
    ],
  ])("rejects an invalid auth file: %j", (body, message) => {
    expect(() => TokenRegistry.load(undefined, authFile("bad.yaml", body))).toThrow(message);
  });

  it("matches scopes by path segment", () => {
    expect(covers("orders", "orders")).toBe(true);
    expect(covers("orders", "orders/1")).toBe(true);
    expect(covers("orders", "orders-archive")).toBe(false);
    expect(covers("*", "anything/at/all")).toBe(true);
    expect(canWrite({ name: "t", read: [], write: ["a/b"] }, "a/b/c")).toBe(true);
    expect(canWrite({ name: "t", read: [], write: ["a/b"] }, "a")).toBe(false);
  });

  it("lets only the scope * write or read an event without a subject", () => {
    expect(covers("*", undefined)).toBe(true);
    expect(covers("orders", undefined)).toBe(false);
    expect(canRead({ name: "t", read: ["a", "b"], write: [] }, undefined)).toBe(false);
    expect(canRead({ name: "t", read: ["a", "*"], write: [] }, undefined)).toBe(true);
    expect(() => requireWrite({ name: "t", read: [], write: ["a"] }, ["a/1", undefined])).toThrow(
      'token t may not write events without a subject (that needs the write scope "*")',
    );
    expect(() => requireWrite({ name: "t", read: [], write: ["*"] }, [undefined])).not.toThrow();
  });

  it("cuts a recursive read down to the readable scopes, or refuses", () => {
    const p = { name: "t", read: ["orders/eu", "invoices"], write: [] };
    expect(readableFilter(p, { subjects: ["orders"], recursive: true, type: undefined })).toEqual({
      subjects: ["orders/eu"],
      recursive: true,
      type: undefined,
    });
    expect(readableFilter(p, { subjects: ["orders/eu/1"], recursive: false, type: "x" })).toEqual({
      subjects: ["orders/eu/1"],
      recursive: false,
      type: "x",
    });
    expect(readableFilter(p, { subjects: [], recursive: false, type: undefined })).toEqual({
      subjects: ["orders/eu", "invoices"],
      recursive: true,
      type: undefined,
    });
    expect(() => readableFilter(p, { subjects: ["orders"], recursive: false, type: undefined })).toThrow(
      expect.objectContaining({ code: "permission_denied" }),
    );
    expect(() => readableFilter(p, { subjects: ["users"], recursive: true, type: undefined })).toThrow(
      expect.objectContaining({ code: "permission_denied" }),
    );
    const all = { name: "a", read: ["*"], write: [] };
    const filter = { subjects: ["x"], recursive: true, type: undefined };
    expect(readableFilter(all, filter)).toBe(filter);
  });
});
