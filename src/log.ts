/**
 * What the core needs of a logger: pino's shape, so the process's pino logger (and Fastify's
 * app.log) fit as they are. The domain gets one passed in; it never writes to stdout itself.
 */
export interface Logger {
  /** pino's level name; absent = no info lines are wanted. */
  readonly level?: string;
  error(bindings: object, message: string): void;
  warn(bindings: object, message: string): void;
  info(bindings: object, message: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** A logger that writes nothing (tests, and servers started without one). */
export const SILENT_LOGGER: Logger = {
  error() {},
  warn() {},
  info() {},
  child: () => SILENT_LOGGER,
};

/** An error in a few words, for log fields and readiness detail: its code (ECONNREFUSED…), else its message. */
export function errorReason(error: unknown): string {
  if (error instanceof Error) return (error as { code?: string }).code ?? error.message;
  return String(error);
}
