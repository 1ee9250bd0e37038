/**
 * A strict reader of the Prometheus text format (0.0.4), written from the format's
 * description independently of the writer in `src/ops/metrics.ts`, so tests can check what a
 * scraper would see: every sample belongs to a family declared before it with HELP and
 * TYPE, label values use only the three escapes, values parse as Go's `ParseFloat` would.
 *
 * @module
 */

/** One parsed sample line. */
export interface ParsedSample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** One metric family. */
export interface ParsedFamily {
  readonly name: string;
  readonly type: string;
  readonly help: string;
  readonly samples: ParsedSample[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function unescape(text: string, allowed: string): string {
  return text.replace(/\\(.)/gs, (_, c: string) => {
    if (!allowed.includes(c)) throw new Error(`invalid escape \\${c}`);
    return c === "n" ? "\n" : c;
  });
}

function parseValue(text: string): number {
  if (text === "+Inf" || text === "Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`invalid value ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const pair = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*(,|$)/y;
  while (pair.lastIndex < text.length) {
    const start = pair.lastIndex;
    const match = pair.exec(text);
    if (!match) throw new Error(`invalid labels at ${JSON.stringify(text.slice(start))}`);
    if (match[1] in labels) throw new Error(`label ${match[1]} given twice`);
    labels[match[1]] = unescape(match[2], '\\"n');
    if (match[3] === "" && pair.lastIndex < text.length) throw new Error("labels not separated");
  }
  return labels;
}

/** The family a sample name belongs to, given the declared families. */
function familyOf(sample: string, families: Map<string, ParsedFamily>): ParsedFamily | undefined {
  const direct = families.get(sample);
  if (direct && direct.type !== "histogram") return direct;
  const suffix = /^(.*)_(bucket|sum|count)$/.exec(sample);
  const base = suffix ? families.get(suffix[1]) : undefined;
  return base?.type === "histogram" ? base : undefined;
}

/**
 * Parses an exposition.
 *
 * @throws {Error} naming the line, at anything a strict scraper would refuse
 */
export function parsePrometheusText(text: string): Map<string, ParsedFamily> {
  if (text !== "" && !text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const families = new Map<string, ParsedFamily>();
  const help = new Map<string, string>();
  const lines = text.split("\n").slice(0, -1);
  const sampleLine = new RegExp(`^(${NAME})(?:\\{(.*)\\})?[ \\t]+(\\S+)(?:[ \\t]+(-?\\d+))?$`);
  let current: ParsedFamily | undefined;
  lines.forEach((line, index) => {
    const where = `line ${index + 1} (${JSON.stringify(line)})`;
    try {
      const comment = new RegExp(`^#[ \\t]+(HELP|TYPE)[ \\t]+(${NAME})(?:[ \\t]+(.*))?$`)
        .exec(line);
      if (comment) {
        const [, keyword, name, rest = ""] = comment;
        if (keyword === "HELP") {
          if (help.has(name)) throw new Error(`second HELP for ${name}`);
          help.set(name, unescape(rest, "\\n"));
          return;
        }
        if (!TYPES.has(rest)) throw new Error(`unknown type ${rest}`);
        if (families.has(name)) throw new Error(`second TYPE for ${name}`);
        current = { name, type: rest, help: help.get(name) ?? "", samples: [] };
        families.set(name, current);
        return;
      }
      if (line.startsWith("#") || line.trim() === "") return;
      const match = sampleLine.exec(line);
      if (!match) throw new Error("not a sample line");
      const [, name, labelText = "", value] = match;
      const family = familyOf(name, families);
      if (!family) throw new Error(`sample ${name} has no TYPE before it`);
      if (family !== current) throw new Error(`sample ${name} is apart from its family`);
      family.samples.push({ name, labels: parseLabels(labelText), value: parseValue(value) });
    } catch (error) {
      throw new Error(`${where}: ${(error as Error).message}`);
    }
  });
  for (const family of families.values()) {
    if (!help.has(family.name)) throw new Error(`${family.name} has no HELP`);
    if (family.type === "histogram") checkHistogram(family);
  }
  return families;
}

/** Per label set: buckets cumulative and increasing in `le`, `+Inf` equal to `_count`. */
function checkHistogram(family: ParsedFamily): void {
  const series = new Map<string, { buckets: [number, number][]; count?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (sample.name.endsWith("_bucket")) {
      if (le === undefined) throw new Error(`${sample.name} without le`);
      entry.buckets.push([parseValue(le), sample.value]);
    } else if (sample.name.endsWith("_count")) {
      entry.count = sample.value;
    }
  }
  for (const [key, { buckets, count }] of series) {
    const where = `${family.name}${key}`;
    if (buckets.length === 0 || buckets.at(-1)![0] !== Infinity) {
      throw new Error(`${where}: no +Inf bucket last`);
    }
    for (let i = 1; i < buckets.length; i++) {
      if (buckets[i][0] <= buckets[i - 1][0]) throw new Error(`${where}: le not increasing`);
      if (buckets[i][1] < buckets[i - 1][1]) throw new Error(`${where}: buckets not cumulative`);
    }
    if (count !== buckets.at(-1)![1]) throw new Error(`${where}: _count differs from +Inf`);
  }
}

/** The value of the one sample named `name` with exactly `labels`, or undefined. */
export function sampleValue(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name !== name) continue;
      if (JSON.stringify(Object.entries(sample.labels).sort()) === want) return sample.value;
    }
  }
  return undefined;
}
