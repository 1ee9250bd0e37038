import assert from "node:assert/strict";
import {
  escapeHelp,
  escapeLabelValue,
  formatValue,
  Histogram,
  LATENCY_BUCKETS,
  MetricsText,
} from "../src/ops/metrics.ts";
import { parsePrometheusText, sampleValue } from "./support/prometheus_text.ts";

Deno.test("counters and gauges come back from the text with HELP, TYPE, labels and values", () => {
  const text = new MetricsText()
    .counter("jobs_total", "Jobs done.", [
      { labels: { kind: "a" }, value: 3 },
      { labels: { kind: "b" }, value: 0 },
    ])
    .gauge("queue_depth", "Jobs waiting.", 7)
    .gauge("ratio", "A fraction.", [{ value: 0.25 }])
    .toString();
  assert.equal(
    text,
    [
      "# HELP jobs_total Jobs done.",
      "# TYPE jobs_total counter",
      'jobs_total{kind="a"} 3',
      'jobs_total{kind="b"} 0',
      "# HELP queue_depth Jobs waiting.",
      "# TYPE queue_depth gauge",
      "queue_depth 7",
      "# HELP ratio A fraction.",
      "# TYPE ratio gauge",
      "ratio 0.25",
      "",
    ].join("\n"),
  );
  const families = parsePrometheusText(text);
  assert.equal(families.get("jobs_total")?.type, "counter");
  assert.equal(families.get("queue_depth")?.help, "Jobs waiting.");
  assert.equal(sampleValue(families, "jobs_total", { kind: "a" }), 3);
  assert.equal(sampleValue(families, "queue_depth"), 7);
});

Deno.test("label values and help text are escaped so any string survives a round trip", () => {
  const nasty = 'back\\slash "quoted"\nnew line, comma=}{ α';
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  assert.equal(escapeHelp('a\\b\nc "d"'), 'a\\\\b\\nc "d"');
  const text = new MetricsText()
    .counter("odd_total", `Help with ${nasty}`, [{ labels: { v: nasty, w: "" }, value: 1 }])
    .toString();
  assert.equal(text.split("\n").length, 4, "one line per record");
  const families = parsePrometheusText(text);
  assert.equal(families.get("odd_total")?.help, `Help with ${nasty}`);
  assert.deepEqual(families.get("odd_total")?.samples[0].labels, { v: nasty, w: "" });
});

Deno.test("special values are spelled as Prometheus reads them", () => {
  assert.equal(formatValue(Infinity), "+Inf");
  assert.equal(formatValue(-Infinity), "-Inf");
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue(1e21), "1e+21");
  assert.equal(formatValue(-0.5), "-0.5");
  const families = parsePrometheusText(
    new MetricsText().gauge("g", "G.", [
      { labels: { x: "big" }, value: 1e21 },
      { labels: { x: "tiny" }, value: 5e-7 },
      { labels: { x: "inf" }, value: Infinity },
    ]).toString(),
  );
  assert.equal(sampleValue(families, "g", { x: "big" }), 1e21);
  assert.equal(sampleValue(families, "g", { x: "tiny" }), 5e-7);
  assert.equal(sampleValue(families, "g", { x: "inf" }), Infinity);
});

Deno.test("a histogram writes cumulative buckets ending with +Inf, then _sum and _count", () => {
  const h = new Histogram([0.1, 1, 10]);
  for (const value of [0.05, 0.1, 0.5, 2, 20, 30]) h.observe(value);
  h.observe(NaN);
  assert.equal(h.count, 6);
  assert.equal(h.sum, 52.65);
  const text = new MetricsText()
    .histogram("latency_seconds", "Latency.", [{ labels: { sink: "redis" }, histogram: h }])
    .toString();
  assert.equal(
    text,
    [
      "# HELP latency_seconds Latency.",
      "# TYPE latency_seconds histogram",
      'latency_seconds_bucket{sink="redis",le="0.1"} 2',
      'latency_seconds_bucket{sink="redis",le="1"} 3',
      'latency_seconds_bucket{sink="redis",le="10"} 4',
      'latency_seconds_bucket{sink="redis",le="+Inf"} 6',
      'latency_seconds_sum{sink="redis"} 52.65',
      'latency_seconds_count{sink="redis"} 6',
      "",
    ].join("\n"),
  );
  parsePrometheusText(text); // checks cumulativeness and +Inf = _count
});

Deno.test("several histogram series in one family, one of them empty", () => {
  const busy = new Histogram();
  for (let i = 0; i < 1000; i++) busy.observe(i / 100);
  const text = new MetricsText()
    .histogram("w_seconds", "W.", [
      { labels: { sink: "a" }, histogram: busy },
      { labels: { sink: "b" }, histogram: new Histogram() },
    ])
    .toString();
  const families = parsePrometheusText(text);
  const samples = families.get("w_seconds")!.samples;
  assert.equal(samples.length, 2 * (LATENCY_BUCKETS.length + 3));
  assert.equal(sampleValue(families, "w_seconds_count", { sink: "a" }), 1000);
  assert.equal(sampleValue(families, "w_seconds_bucket", { sink: "a", le: "0.001" }), 1);
  assert.equal(sampleValue(families, "w_seconds_bucket", { sink: "a", le: "1" }), 101);
  assert.equal(sampleValue(families, "w_seconds_bucket", { sink: "a", le: "10" }), 1000);
  assert.equal(sampleValue(families, "w_seconds_bucket", { sink: "b", le: "+Inf" }), 0);
  assert.equal(sampleValue(families, "w_seconds_sum", { sink: "b" }), 0);
});

Deno.test("a value on a bucket's bound counts in that bucket; below the first, in the first", () => {
  const h = new Histogram([1, 2]);
  h.observe(1);
  h.observe(-3);
  h.observe(2.0000001);
  assert.deepEqual(h.snapshot().buckets, [
    { le: 1, count: 2 },
    { le: 2, count: 2 },
    { le: Infinity, count: 3 },
  ]);
});

Deno.test("mistakes that would make a scrape fail are refused when the text is built", () => {
  assert.throws(() => new Histogram([]), RangeError);
  assert.throws(() => new Histogram([1, 1]), RangeError);
  assert.throws(() => new Histogram([2, 1]), RangeError);
  assert.throws(() => new Histogram([1, Infinity]), RangeError);
  assert.throws(() => new MetricsText().counter("bad-name", "x", 1), /invalid metric name/);
  assert.throws(
    () => new MetricsText().counter("ok", "x", [{ labels: { "bad-label": "v" }, value: 1 }]),
    /invalid label name/,
  );
  assert.throws(
    () => new MetricsText().counter("ok", "x", [{ labels: { __reserved: "v" }, value: 1 }]),
    /invalid label name/,
  );
  assert.throws(
    () =>
      new MetricsText().histogram("h", "x", [{ labels: { le: "1" }, histogram: new Histogram() }]),
    /reserved/,
  );
  assert.throws(() => new MetricsText().gauge("twice", "x", 1).gauge("twice", "x", 2), /twice/);
  assert.equal(new MetricsText().toString(), "");
});

Deno.test("the test parser itself refuses what a scraper refuses", () => {
  const bad = [
    "x 1\n", // no TYPE
    "# HELP x X.\n# TYPE x counter\nx 1", // no final newline
    '# HELP x X.\n# TYPE x counter\nx{a="\\q"} 1\n', // bad escape
    "# HELP x X.\n# TYPE x counter\nx one\n", // bad value
    "# TYPE x counter\nx 1\n", // no HELP
    "# HELP x X.\n# TYPE x counter\n# HELP y Y.\n# TYPE y gauge\ny 1\nx 2\n", // split family
    '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 0\nh_count 1\n',
  ];
  for (const text of bad) assert.throws(() => parsePrometheusText(text), Error, text);
});
