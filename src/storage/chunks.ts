import type { NewRow } from "./dialect.js";

/** Rows per INSERT statement. */
export const INSERT_ROWS = 500;
/** Bytes per INSERT statement (estimated): well under MySQL's max_allowed_packet (16 MiB on MariaDB). */
export const INSERT_BYTES = 4 * 1024 * 1024;

/** Splits rows into INSERT-sized chunks by count and estimated bytes, keeping their order. */
export function insertChunks<R extends NewRow>(rows: readonly R[]): R[][] {
  const chunks: R[][] = [];
  let chunk: R[] = [];
  let bytes = 0;
  for (const row of rows) {
    const size = rowBytes(row);
    if (chunk.length > 0 && (chunk.length >= INSERT_ROWS || bytes + size > INSERT_BYTES)) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(row);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/** Data bytes plus a generous allowance for the text columns and SQL around them. */
export function rowBytes(row: NewRow): number {
  return row.data.length * 2 + 2048;
}
