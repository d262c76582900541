import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import SqliteDatabase from "better-sqlite3";
import { createConnection } from "mysql2/promise";
import { sqlTime } from "./ingest.js";
import { ROOT } from "./support.js";

/**
 * The onecon bench's floor: a bare node:http server that answers each POST /events with one
 * autocommit INSERT of the Go service's columns (the raw loop's statement) and its id — nothing
 * else: no validation, no id reservation, no chain, no logging, no metrics. It is what one more
 * process hop (client → Node server → store) costs by itself, so a server row is read against it
 * as well as against the raw INSERT: no Node server can get above this row.
 *
 * Started by the bench like a server build (startServerProcess, `--rest-port`), with DATABASE_URL
 * `mysql://…/db` or `sqlite:file`; answers GET /readyz once it can insert.
 */
const portArg = process.argv.indexOf("--rest-port");
const port = Number(process.argv[portArg + 1]);
const url = process.env.DATABASE_URL ?? "";
const COLUMNS = "INSERT INTO events (source, type, subject, time, data) VALUES (?, ?, ?, ?, ?)";

type Insert = (values: [string, string, string, string, Buffer]) => Promise<number>;

async function openStore(): Promise<Insert> {
  if (url.startsWith("sqlite:")) {
    const db = new SqliteDatabase(url.slice("sqlite:".length));
    // The store's durability settings, as the raw loop and the server use them.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.exec(await readFile(path.join(ROOT, "sql", "sqlite", "001_events.sql"), "utf8"));
    const insert = db.prepare(COLUMNS);
    return async (values) => Number(insert.run(...values).lastInsertRowid);
  }
  const connection = await createConnection({ uri: url, multipleStatements: true });
  await connection.query(await readFile(path.join(ROOT, "sql", "mysql", "001_events.sql"), "utf8"));
  return async (values) => {
    const [result] = await connection.query(COLUMNS, values);
    return (result as { insertId: number }).insertId;
  };
}

const insert = await openStore();
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/readyz") {
    res.end("ok");
    return;
  }
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, string>;
    const time = sqlTime(new Date());
    const values: [string, string, string, string, Buffer] = [
      String(body.source),
      String(body.type),
      String(body.subject),
      time,
      Buffer.from(String(body.data), "base64"),
    ];
    insert(values).then(
      (id) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ id }));
      },
      (error: unknown) => {
        res.writeHead(500);
        res.end(String(error));
      },
    );
  });
});
server.listen(port, "127.0.0.1");
process.once("SIGTERM", () => process.exit(0));
