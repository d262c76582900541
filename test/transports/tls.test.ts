import { execFile } from "node:child_process";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { version } from "../../src/version.js";
import { issue, makeCa } from "../support/certs.js";
import { DIALECTS } from "../support/dialects.js";
import { startTestServer, type TestServer, testConfig } from "../support/server.js";
import { SseParser, waitUntil } from "../support/sse.js";

/** What /healthz answers. */
const HEALTH = JSON.stringify({ status: "ok", version: version() });

const run = promisify(execFile);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-tls-"));
const ca = makeCa(dir);
const server = issue(dir, ca, "server", 1001);
const caPem = fs.readFileSync(ca.caCert);

type CreateEvent = (
  request: object,
  callback: (error: grpc.ServiceError | null, reply: { id: string }) => void,
) => void;

/** The serial number of the certificate a new TLS connection is served. */
function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ port, host: "127.0.0.1", ca: caPem, servername: "localhost" }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.on("error", reject);
  });
}

describe("TLS", () => {
  let t: TestServer;
  let databaseUrl: string;
  beforeAll(async () => {
    databaseUrl = await (DIALECTS[0] as (typeof DIALECTS)[number]).url();
    t = await startTestServer(databaseUrl, {
      "tls-cert-file": server.cert,
      "tls-key-file": server.key,
    });
  });
  afterAll(async () => {
    await t.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("serves HTTP/1.1 and HTTP/2 over TLS on both ports (curl)", async () => {
    for (const port of [t.server.restPort, t.server.grpcPort]) {
      const base = `https://localhost:${port}`;
      const h1 = await run("curl", [
        "-s",
        "--cacert",
        ca.caCert,
        "--http1.1",
        "-w",
        " %{http_version}",
        `${base}/healthz`,
      ]);
      expect(h1.stdout).toBe(`${HEALTH} 1.1`);
      const h2 = await run("curl", [
        "-s",
        "--cacert",
        ca.caCert,
        "--http2",
        "-w",
        " %{http_version}",
        `${base}/healthz`,
      ]);
      expect(h2.stdout).toBe(`${HEALTH} 2`);
      const plain = await run("curl", [
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `http://127.0.0.1:${port}/healthz`,
      ]).catch((error: { stdout: string }) => error);
      expect(plain.stdout).toBe("000"); // no cleartext beside TLS
    }
  });

  it("serves gRPC over TLS to @grpc/grpc-js, streams SSE, and rotates the certificate without dropping the stream", async () => {
    const definition = protoLoader.loadSync(path.resolve("proto/grpc/eventsdb.proto"), {
      keepCase: true,
      longs: String,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      grpc: {
        EventsDB: new (
          target: string,
          credentials: grpc.ChannelCredentials,
        ) => grpc.Client & { CreateEvent: CreateEvent };
      };
    };
    const client = new pkg.grpc.EventsDB(`localhost:${t.server.grpcPort}`, grpc.credentials.createSsl(caPem));
    try {
      const reply = await new Promise<{ id: string }>((resolve, reject) =>
        client.CreateEvent.call(
          client,
          { source: "tls", type: "t", subject: "tls/1" },
          (e: Error | null, r: { id: string }) => (e ? reject(e) : resolve(r)),
        ),
      );
      expect(Number(reply.id)).toBeGreaterThan(0);
    } finally {
      client.close();
    }

    // An SSE stream over TLS (HTTP/1.1) stays open across a certificate rotation.
    const parser = new SseParser();
    const request = https.get({
      host: "127.0.0.1",
      port: t.server.restPort,
      path: "/events/stream?subject=tls&recursive=true",
      ca: caPem,
      servername: "localhost",
    });
    let closed = false;
    request.on("response", (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => parser.push(chunk));
      res.on("close", () => {
        closed = true;
      });
    });
    try {
      await waitUntil(() => parser.events.length === 1, "the first event over TLS");
      expect(await servedSerial(t.server.restPort)).toBe("03E9"); // 1001
      const next = issue(dir, ca, "server-next", 1002);
      fs.copyFileSync(next.key, server.key);
      fs.copyFileSync(next.cert, server.cert);
      await waitUntil(
        async () => (await servedSerial(t.server.restPort)) === "03EA",
        "the new certificate",
        15_000,
      );
      const res = await run("curl", [
        "-s",
        "--cacert",
        ca.caCert,
        "-H",
        "content-type: application/json",
        "-d",
        '{"source":"tls","type":"t","subject":"tls/2"}',
        `https://localhost:${t.server.restPort}/events`,
      ]);
      expect(res.stdout).toMatch(/^\{"id":\d+\}$/);
      await waitUntil(() => parser.events.length === 2, "the second event on the old connection");
      expect(closed).toBe(false);
    } finally {
      request.destroy();
    }
  });

  it("a reload (SIGHUP) with certificate files at new paths serves them to new connections", async () => {
    const moved = issue(fs.mkdtempSync(path.join(dir, "moved-")), ca, "server-moved", 1003);
    t.server.reload(testConfig(databaseUrl, { "tls-cert-file": moved.cert, "tls-key-file": moved.key }));
    expect(await servedSerial(t.server.restPort)).toBe("03EB"); // 1003
  });
});

describe("mutual TLS", () => {
  let t: TestServer;
  const mdir = fs.mkdtempSync(path.join(os.tmpdir(), "eventsdb-mtls-"));
  const mca = makeCa(mdir);
  const mserver = issue(mdir, mca, "server", 7);
  const client = issue(mdir, mca, "client", 8, true);
  beforeAll(async () => {
    t = await startTestServer(await (DIALECTS[0] as (typeof DIALECTS)[number]).url(), {
      "tls-cert-file": mserver.cert,
      "tls-key-file": mserver.key,
      "tls-client-ca-file": mca.caCert,
    });
  });
  afterAll(async () => {
    await t.close();
    fs.rmSync(mdir, { recursive: true, force: true });
  });

  it("accepts only clients with a certificate from TLS_CLIENT_CA_FILE", async () => {
    const url = `https://localhost:${t.server.restPort}/healthz`;
    const without = await run("curl", ["-s", "--cacert", mca.caCert, url]).catch(
      (error: { code: number }) => error,
    );
    expect((without as { code: number }).code).not.toBe(0);
    const withCert = await run("curl", [
      "-s",
      "--cacert",
      mca.caCert,
      "--cert",
      client.cert,
      "--key",
      client.key,
      url,
    ]);
    expect(withCert.stdout).toBe(HEALTH);
  });

  it("picks up a replaced TLS_CLIENT_CA_FILE without SIGHUP, like the certificates", async () => {
    const url = `https://localhost:${t.server.restPort}/healthz`;
    // The server's own certificate stays signed by the first CA.
    const serverCa = path.join(mdir, "server-ca.crt");
    fs.copyFileSync(mca.caCert, serverCa);
    const status = (cert: { cert: string; key: string }) =>
      run("curl", ["-s", "--cacert", serverCa, "--cert", cert.cert, "--key", cert.key, url]).then(
        (r) => r.stdout,
        () => "refused",
      );
    const nextCa = makeCa(fs.mkdtempSync(path.join(mdir, "next-")));
    const nextClient = issue(mdir, nextCa, "client-next", 9, true);
    expect(await status(nextClient)).toBe("refused");
    // Rotated in place, as a CA bundle is: the old client's issuer is gone, the new one's trusted.
    fs.copyFileSync(nextCa.caCert, `${mca.caCert}.tmp`);
    fs.renameSync(`${mca.caCert}.tmp`, mca.caCert);
    await waitUntil(async () => (await status(nextClient)) === HEALTH, "the new client CA", 15_000);
    expect(await status(client)).toBe("refused");
  });
});
