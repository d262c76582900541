import { SingleBar } from "cli-progress";

/** A progress display on stderr; a no-op unless stderr is a terminal. */
export interface Progress {
  update(value: number, events: number): void;
  stop(): void;
}

const NONE: Progress = { update() {}, stop() {} };

/**
 * `verb [bar] pct | N events` when the total is known (> 0), else `verb N events`. Nothing at all
 * when stderr is not a terminal, so scripts and logs only get the summary line.
 */
export function progress(verb: string, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return NONE;
  const known = total > 0;
  const bar = new SingleBar({
    stream,
    format: known
      ? `${verb} [{bar}] {percentage}% | {events} events | {duration_formatted}`
      : `${verb} {events} events | {duration_formatted}`,
    hideCursor: true,
    clearOnComplete: true,
    fps: 10,
  });
  bar.start(known ? total : 1, 0, { events: 0 });
  return {
    update(value, events) {
      bar.update(known ? Math.min(value, total) : 0, { events });
    },
    stop() {
      bar.stop();
    },
  };
}
