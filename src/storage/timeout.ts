/**
 * A database call that did not answer within --db-timeout. `fatal` as mysql2 marks errors after
 * which a connection is unusable: the connection it waited on is dropped, and callers treat it
 * like a lost connection (the writer fails its group and pauses, reads answer 503).
 */
export class StoreTimeoutError extends Error {
  override readonly name = "StoreTimeoutError";
  readonly code = "EVENTSDB_DB_TIMEOUT";
  readonly fatal = true;

  constructor(what: string, ms: number) {
    super(`${what}: no answer from the database within ${ms} ms (--db-timeout)`);
  }
}

/**
 * `work` or a StoreTimeoutError after `ms`, whichever comes first; `onTimeout` then drops what the
 * work waits on. The work itself is not cancelled: its late outcome is ignored.
 */
export function withTimeout<T>(
  work: Promise<T>,
  ms: number,
  what: string,
  onTimeout?: () => void,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(new StoreTimeoutError(what, ms));
    }, ms);
  });
  work.catch(() => {}); // a late failure after the timeout is nobody's to handle
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
