import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { CONNECT_KINDS, connectPeer } from "../support/grpc.js";
import { killServerProcesses, removeTempDirs, startServerProcess } from "../support/process.js";

// A server process loads Connect, protobuf and the gRPC services with its first RPC
// (src/transports/grpc/lazy.ts, fast-path.ts). Whatever a process's first call is, and over
// whichever protocol, it works, and its errors are REST's: the same domain error, by the one
// renderer (render-error.ts) before the handler, and the same code table (status.ts) after it.

const TOKEN = "lazy-admin-token";
const auth = { authorization: `Bearer ${TOKEN}` };

afterEach(killServerProcesses);
afterAll(removeTempDirs);

/** A REST error answer's message. */
async function restError(url: string, init: RequestInit = {}): Promise<{ status: number; message: string }> {
  const res = await fetch(url, init);
  const body = (await res.json()) as { error: { message: string } };
  return { status: res.status, message: body.error.message };
}

/** The error a call failed with (it must fail). */
async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("the call succeeded");
}

describe.each(CONNECT_KINDS)("the first calls of a fresh process over %s", (kind) => {
  it("work and fail as REST fails", async () => {
    const server = await startServerProcess({ env: { AUTH_TOKEN: TOKEN } });
    const peer = connectPeer(kind, { url: server.url, grpcUrl: `http://127.0.0.1:${server.grpcPort}` });
    try {
      const invalid = { source: "", type: "t", subject: "lazy" };
      // First: refused before any handler (the pipeline), as REST refuses it.
      const refused = await failure(peer.client.createEvent(invalid));
      const restRefused = await restError(`${server.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(invalid),
      });
      expect(restRefused.status).toBe(401);
      expect([refused.code, refused.rawMessage]).toEqual([Code.Unauthenticated, restRefused.message]);

      // Then: the handler's own errors, once Connect (or the fast path's codec) has loaded.
      const rejected = await failure(peer.client.createEvent(invalid, { headers: auth }));
      const restRejected = await restError(`${server.url}/events`, {
        method: "POST",
        headers: { "content-type": "application/json", ...auth },
        body: JSON.stringify(invalid),
      });
      expect(restRejected.status).toBe(400);
      expect([rejected.code, rejected.rawMessage]).toEqual([Code.InvalidArgument, restRejected.message]);

      const missing = await failure(peer.client.getEventByID({ id: 999n }, { headers: auth }));
      const restMissing = await restError(`${server.url}/events/999`, { headers: auth });
      expect(restMissing.status).toBe(404);
      expect([missing.code, missing.rawMessage]).toEqual([Code.NotFound, restMissing.message]);

      const { id } = await peer.client.createEvent(
        { source: "lazy", type: "t", subject: "lazy", data: new Uint8Array([1]) },
        { headers: auth },
      );
      const event = await peer.client.getEventByID({ id }, { headers: auth });
      expect([event.source, event.subject]).toEqual(["lazy", "lazy"]);
    } finally {
      peer.close();
      expect((await server.stop()).code).toBe(0);
    }
  });
});
