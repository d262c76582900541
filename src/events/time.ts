/**
 * Event times are kept as canonical UTC strings with microseconds (`2026-01-02T03:04:05.123456Z`),
 * the precision of MySQL DATETIME(6). They sort as text, survive both dialects unchanged and never
 * pass through `Date`, which would drop the microseconds.
 */

// RFC 3339 §5.6 date-time; the separator and Z may be lower case (§5.6 NOTE).
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** The canonical form of a time, or why it cannot be stored. */
export type ParsedTime =
  | { readonly time: string }
  /**
   * `syntax`: not an RFC 3339 date-time (or no such date, hour, offset). `leap-second`: second 60,
   * which RFC 3339 §5.7 allows. `range`: valid, but its UTC falls outside the years 0001-9999.
   */
  | { readonly problem: "syntax" | "leap-second" | "range" };

/**
 * Parses an RFC 3339 timestamp into the canonical UTC form.
 *
 * A leap second (`23:59:60`) is refused rather than kept: neither store can hold it (MySQL's
 * DATETIME has no second 60, and its text form in SQLite would sort and compare unlike every
 * other time), and folding it into the next second, as Date does, would silently change the event.
 */
export function parseTime(value: string): ParsedTime {
  const m = RFC3339.exec(value);
  if (m === null) return { problem: "syntax" };
  const [, y, mo, d, h, mi, s, frac = "", , sign, oh, om] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return { problem: "syntax" };
  if (hour > 23 || minute > 59 || second > 60) return { problem: "syntax" };
  let offsetMinutes = 0;
  if (sign !== undefined) {
    const ohn = Number(oh);
    const omn = Number(om);
    if (ohn > 23 || omn > 59) return { problem: "syntax" };
    offsetMinutes = (sign === "+" ? 1 : -1) * (ohn * 60 + omn);
  }
  if (second === 60) return { problem: "leap-second" };
  const micros = frac.padEnd(6, "0").slice(0, 6);
  // setUTCFullYear, unlike Date.UTC, does not map years 0-99 to 1900-1999.
  const local = new Date(0);
  local.setUTCFullYear(year, month - 1, day);
  local.setUTCHours(hour, minute, second, 0);
  const ms = local.getTime() - offsetMinutes * 60_000;
  const utc = new Date(ms);
  if (utc.getUTCFullYear() < 1 || utc.getUTCFullYear() > 9999) return { problem: "range" };
  return { time: `${utc.toISOString().slice(0, 19)}.${micros}Z` };
}

/** The server's current time in canonical form (millisecond resolution padded to microseconds). */
export function nowTime(): string {
  return `${new Date().toISOString().slice(0, 23)}000Z`;
}

/**
 * The canonical form as clients see it: trailing zero digits of the fraction dropped, like Go's
 * RFC3339Nano, so `2026-01-02T03:04:05Z` stays as it was sent.
 */
export function displayTime(canonical: string): string {
  const frac = canonical.slice(20, 26).replace(/0+$/, "");
  return `${canonical.slice(0, 19)}${frac === "" ? "" : `.${frac}`}Z`;
}

/** `2026-01-02T03:04:05.123456Z` → `2026-01-02 03:04:05.123456` for MySQL DATETIME(6). */
export function toSqlDateTime(canonical: string): string {
  return `${canonical.slice(0, 10)} ${canonical.slice(11, 26)}`;
}

/** MySQL's `2026-01-02 03:04:05.123456` (dateStrings) → canonical. */
export function fromSqlDateTime(value: string): string {
  const frac = value.length > 20 ? value.slice(20, 26) : "";
  return `${value.slice(0, 10)}T${value.slice(11, 19)}.${frac.padEnd(6, "0")}Z`;
}

function daysInMonth(year: number, month: number): number {
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
}
