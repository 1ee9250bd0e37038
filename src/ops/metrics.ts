/**
 * A small writer of the Prometheus text exposition format (version 0.0.4) and a histogram
 * that hot paths can observe into cheaply. Metrics are not registered anywhere: the
 * collector renders its current counters on every scrape, so there is no second copy of
 * state that could drift from the stats line.
 *
 * @module
 */

/** Label names and values of one series. */
export type Labels = Readonly<Record<string, string>>;

/** One series of a counter or gauge. */
export interface Sample {
  readonly labels?: Labels;
  readonly value: number;
}

/** A histogram's state at one moment; `buckets` are cumulative and end with `+Inf`. */
export interface HistogramSnapshot {
  readonly buckets: readonly { readonly le: number; readonly count: number }[];
  readonly sum: number;
  readonly count: number;
}

/** One series of a histogram family. */
export interface HistogramSeries {
  readonly labels?: Labels;
  readonly histogram: Histogram | HistogramSnapshot;
}

/** Upper bounds, in seconds, for write latencies: 1 ms to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
]);

/**
 * Counts observations into fixed buckets. `observe` does one short scan and no allocation;
 * cumulative counts are only worked out by {@link Histogram.snapshot}.
 */
export class Histogram {
  /** Upper bounds, strictly increasing, without `+Inf`. */
  readonly bounds: readonly number[];
  /** Per bucket (not cumulative); the last slot is the `+Inf` bucket. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  /** @throws {RangeError} when `bounds` is empty, not finite or not strictly increasing */
  constructor(bounds: readonly number[] = LATENCY_BUCKETS) {
    if (bounds.length === 0) throw new RangeError("a histogram needs at least one bucket");
    for (let i = 0; i < bounds.length; i++) {
      if (!Number.isFinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
        throw new RangeError(`bucket bounds must be finite and increasing: ${bounds.join(", ")}`);
      }
    }
    this.bounds = Object.freeze([...bounds]);
    this.#counts = new Float64Array(bounds.length + 1);
  }

  /** Records one value; NaN is ignored (it would poison `_sum` for good). */
  observe(value: number): void {
    if (Number.isNaN(value)) return;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.#counts[i]++;
    this.#sum += value;
    this.#count++;
  }

  /** Observations so far. */
  get count(): number {
    return this.#count;
  }

  /** Sum of the observations so far. */
  get sum(): number {
    return this.#sum;
  }

  /** Cumulative buckets, `+Inf` last, with the sum and count. */
  snapshot(): HistogramSnapshot {
    let running = 0;
    const buckets = [...this.bounds, Infinity].map((le, i) => {
      running += this.#counts[i];
      return { le, count: running };
    });
    return { buckets, sum: this.#sum, count: this.#count };
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A label value as the text format wants it inside double quotes. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

/** HELP text escaped: only backslash and line feed are special there. */
export function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

/** A sample value in the text format (`+Inf`, `-Inf` and `NaN` spelled as Prometheus does). */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function labelText(labels: Labels | undefined, extra?: readonly [string, string]): string {
  const pairs = Object.entries(labels ?? {});
  if (extra) pairs.push([extra[0], extra[1]]);
  if (pairs.length === 0) return "";
  for (const [name] of pairs) {
    if (!LABEL_NAME.test(name) || name.startsWith("__")) {
      throw new RangeError(`invalid label name ${JSON.stringify(name)}`);
    }
  }
  return `{${pairs.map(([name, value]) => `${name}="${escapeLabelValue(value)}"`).join(",")}}`;
}

/**
 * Builds one exposition: each family once, with its HELP and TYPE lines before its
 * samples. Families are written in the order they are added.
 *
 * ```ts
 * const text = new MetricsText()
 *   .counter("jobs_total", "Jobs done.", [{ labels: { kind: "a" }, value: 3 }])
 *   .gauge("queue_depth", "Jobs waiting.", 7)
 *   .toString();
 * ```
 */
export class MetricsText {
  readonly #lines: string[] = [];
  readonly #names = new Set<string>();

  /** Adds a counter family; a bare number is one series without labels. */
  counter(name: string, help: string, samples: number | readonly Sample[]): this {
    return this.#simple(name, "counter", help, samples);
  }

  /** Adds a gauge family; a bare number is one series without labels. */
  gauge(name: string, help: string, samples: number | readonly Sample[]): this {
    return this.#simple(name, "gauge", help, samples);
  }

  /**
   * Adds a histogram family: per series the cumulative `_bucket{le=...}` lines, `+Inf`
   * last, then `_sum` and `_count`.
   */
  histogram(name: string, help: string, series: readonly HistogramSeries[]): this {
    this.#header(name, "histogram", help);
    for (const { labels, histogram } of series) {
      if (labels && "le" in labels) throw new RangeError(`${name}: "le" is reserved`);
      const snap = histogram instanceof Histogram ? histogram.snapshot() : histogram;
      for (const { le, count } of snap.buckets) {
        this.#lines.push(
          `${name}_bucket${labelText(labels, ["le", formatValue(le)])} ${formatValue(count)}`,
        );
      }
      this.#lines.push(`${name}_sum${labelText(labels)} ${formatValue(snap.sum)}`);
      this.#lines.push(`${name}_count${labelText(labels)} ${formatValue(snap.count)}`);
    }
    return this;
  }

  /** The exposition, ending with a line feed as the format requires. */
  toString(): string {
    return this.#lines.length === 0 ? "" : `${this.#lines.join("\n")}\n`;
  }

  #simple(
    name: string,
    type: "counter" | "gauge",
    help: string,
    samples: number | readonly Sample[],
  ): this {
    this.#header(name, type, help);
    const list = typeof samples === "number" ? [{ value: samples }] : samples;
    for (const { labels, value } of list) {
      this.#lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
    }
    return this;
  }

  #header(name: string, type: string, help: string): void {
    if (!METRIC_NAME.test(name)) {
      throw new RangeError(`invalid metric name ${JSON.stringify(name)}`);
    }
    // A family split in two is invalid for Prometheus; catch it here rather than at scrape.
    if (this.#names.has(name)) throw new RangeError(`metric ${name} added twice`);
    this.#names.add(name);
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  }
}
