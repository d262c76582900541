/**
 * The one /metrics scraper of tests and benches: GET /metrics, parsed into samples (Prometheus
 * text exposition format 0.0.4).
 */

/** How long a scrape may take before it fails. */
const SCRAPE_TIMEOUT_MS = 10_000;

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** One scrape of /metrics: its text and its samples. */
export class Scrape {
  readonly text: string;
  readonly samples: readonly Sample[];

  constructor(text: string) {
    this.text = text;
    this.samples = text.split("\n").flatMap((line) => {
      const sample = parseSample(line);
      return sample === undefined ? [] : [sample];
    });
  }

  /** The value of the series `name` with exactly these labels; NaN when there is none. */
  value(name: string, labels: Readonly<Record<string, string>> = {}): number {
    const wanted = Object.entries(labels);
    const sample = this.samples.find(
      (s) =>
        s.name === name &&
        Object.keys(s.labels).length === wanted.length &&
        wanted.every(([key, value]) => s.labels[key] === value),
    );
    return sample?.value ?? Number.NaN;
  }

  /**
   * A counter: its value, or 0 while it was never counted (prom-client writes a labelled series
   * only once it is used).
   */
  counter(name: string, labels: Readonly<Record<string, string>> = {}): number {
    const value = this.value(name, labels);
    return Number.isNaN(value) ? 0 : value;
  }

  /** Every series of `name`, whatever its labels. */
  series(name: string): readonly Sample[] {
    return this.samples.filter((s) => s.name === name);
  }
}

export interface ScrapeOptions {
  /** E.g. a bearer token when --protect-metrics is on. */
  readonly headers?: Record<string, string>;
}

/** GET `${baseUrl}/metrics`, bounded in time; fails unless it answers 200. */
export async function scrapeMetrics(baseUrl: string, options: ScrapeOptions = {}): Promise<Scrape> {
  const response = await fetch(`${baseUrl}/metrics`, {
    ...(options.headers === undefined ? {} : { headers: options.headers }),
    signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS),
  });
  const text = await response.text();
  if (response.status !== 200) {
    throw new Error(`GET ${baseUrl}/metrics answered ${response.status}: ${text.slice(0, 200)}`);
  }
  return new Scrape(text);
}

/** One series of /metrics (NaN when absent). */
export async function metric(
  baseUrl: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  return (await scrapeMetrics(baseUrl)).value(name, labels);
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|(?=\}))/y;

/** `name{label="value",…} value [timestamp]`; undefined for comments, blank and malformed lines. */
function parseSample(line: string): Sample | undefined {
  if (line === "" || line.startsWith("#")) return undefined;
  const name = NAME.exec(line)?.[0];
  if (name === undefined) return undefined;
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === "{") {
    at++;
    while (line[at] !== "}") {
      LABEL.lastIndex = at;
      const match = LABEL.exec(line);
      if (match === null) return undefined;
      labels[match[1] as string] = unescapeLabel(match[2] as string);
      at = LABEL.lastIndex;
    }
    at++;
  }
  const value = line.slice(at).trim().split(/\s+/)[0];
  if (value === undefined || value === "") return undefined;
  return { name, labels, value: toNumber(value) };
}

function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
}

function toNumber(text: string): number {
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  return Number(text);
}
