/**
 * `/metrics` and `/healthz` over real HTTP, fed by a fake collector state, and the
 * `healthcheck` command a container runs against them.
 */
import assert from "node:assert/strict";
import type { CollectorCounters } from "../src/collector.ts";
import { REJECT_REASONS, type RejectReason } from "../src/datagram.ts";
import { healthUrl, probeHealth } from "../src/ops/healthcheck.ts";
import { Histogram } from "../src/ops/metrics.ts";
import {
  handleMetricsRequest,
  METRICS_CONTENT_TYPE,
  type MetricsServer,
  MetricsServerError,
  startMetricsServer,
} from "../src/ops/metrics_server.ts";
import {
  type CollectorHealth,
  collectorHealth,
  collectorMetrics,
  type CollectorMetricsSource,
  type SpoolGauges,
  startCollectorMetrics,
} from "../src/ops/service_metrics.ts";
import type { Sink, SinkStats } from "../src/sink.ts";
import { parsePrometheusText, sampleValue } from "./support/prometheus_text.ts";

const root = new URL("../", import.meta.url).pathname;

/** A sink whose stats the test sets. */
function fakeSink(name: string, stats: Partial<SinkStats> = {}): Sink & { state: SinkStats } {
  const state: SinkStats = {
    written: 0,
    retried: 0,
    pending: 0,
    dropped: 0,
    up: true,
    writeLatency: new Histogram(),
    ...stats,
  };
  return {
    name,
    state,
    push() {},
    flush: () => Promise.resolve(),
    close: () => Promise.resolve(),
    stats: () => state,
  };
}

function counters(overrides: Partial<CollectorCounters> = {}): CollectorCounters {
  const invalid = Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<
    RejectReason,
    number
  >;
  return {
    received: 0,
    accepted: 0,
    invalid,
    byType: {},
    lost: 0,
    emitterRestarts: 0,
    ...overrides,
  };
}

/** A mutable fake of everything the metrics read. */
function fakeState() {
  const redis = fakeSink("redis");
  const postgres = fakeSink("postgres");
  const state = {
    receiving: true,
    counters: counters(),
    spool: undefined as SpoolGauges | undefined,
    redis,
    postgres,
  };
  const source: CollectorMetricsSource = {
    counters: () => state.counters,
    sinks: [redis, postgres],
    receiving: () => state.receiving,
    spool: () => state.spool,
  };
  return { state, source };
}

async function withServer(
  source: CollectorMetricsSource,
  test: (base: string, server: MetricsServer) => Promise<void>,
) {
  const server = startMetricsServer({
    host: "127.0.0.1",
    port: 0,
    metrics: () => collectorMetrics(source),
    health: () => collectorHealth(source),
  });
  try {
    await test(`http://127.0.0.1:${server.port}`, server);
  } finally {
    await server.shutdown();
  }
}

Deno.test("GET /metrics answers the collector's counters in Prometheus text format", async () => {
  const { state, source } = fakeState();
  state.counters = counters({
    received: 12,
    accepted: 8,
    invalid: { ...counters().invalid, not_json: 3, oversized: 1 },
    byType: { share_submitted: 6, block_found: 2 },
    lost: 5,
    emitterRestarts: 1,
  });
  Object.assign(state.redis.state, { written: 8, retried: 2, pending: 0 });
  Object.assign(state.postgres.state, { written: 3, pending: 5, dropped: 1, up: false });
  const latency = new Histogram();
  latency.observe(0.002);
  latency.observe(0.2);
  Object.assign(state.redis.state, { writeLatency: latency });
  state.spool = {
    bytes: 4096,
    maxBytes: 1 << 20,
    behind: { redis: 0, postgres: 5 },
    lost: { postgres: 2 },
  };
  await withServer(source, async (base) => {
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), METRICS_CONTENT_TYPE);
    const m = parsePrometheusText(await response.text());
    const value = (name: string, labels: Record<string, string> = {}) =>
      sampleValue(m, `tbg_collector_${name}`, labels);
    assert.equal(value("datagrams_received_total"), 12);
    assert.equal(value("datagrams_rejected_total", { reason: "not_json" }), 3);
    assert.equal(value("datagrams_rejected_total", { reason: "not_utf8" }), 0);
    assert.equal(value("events_total", { type: "share_submitted", outcome: "accepted" }), 6);
    assert.equal(value("events_total", { type: "block_found", outcome: "accepted" }), 2);
    assert.equal(value("events_lost_total"), 5);
    assert.equal(value("emitter_restarts_total"), 1);
    assert.equal(value("receiver_up"), 1);
    assert.equal(value("sink_events_total", { sink: "redis", outcome: "written" }), 8);
    assert.equal(value("sink_events_total", { sink: "postgres", outcome: "dropped" }), 1);
    assert.equal(value("sink_retries_total", { sink: "redis" }), 2);
    assert.equal(value("sink_pending_events", { sink: "postgres" }), 5);
    assert.equal(value("sink_up", { sink: "redis" }), 1);
    assert.equal(value("sink_up", { sink: "postgres" }), 0);
    assert.equal(value("sink_write_seconds_count", { sink: "redis" }), 2);
    assert.equal(value("sink_write_seconds_bucket", { sink: "redis", le: "0.0025" }), 1);
    assert.equal(value("sink_write_seconds_bucket", { sink: "redis", le: "+Inf" }), 2);
    assert.equal(value("sink_write_seconds_count", { sink: "postgres" }), 0);
    assert.equal(value("spool_bytes"), 4096);
    assert.equal(value("spool_max_bytes"), 1 << 20);
    assert.equal(value("spool_behind_events", { sink: "postgres" }), 5);
    assert.equal(value("spool_lost_events_total", { sink: "postgres" }), 2);
    assert.equal(value("spool_lost_events_total", { sink: "redis" }), 0);
    assert.ok(value("process_resident_memory_bytes")! > 0);
    assert.ok(value("process_uptime_seconds")! >= 0);
    assert.equal(m.get("tbg_collector_sink_write_seconds")?.type, "histogram");
    assert.equal(m.get("tbg_collector_datagrams_received_total")?.type, "counter");
    assert.equal(m.get("tbg_collector_spool_bytes")?.type, "gauge");
  });
});

Deno.test("without a spool the spool metrics are left out", () => {
  const { source } = fakeState();
  const m = parsePrometheusText(collectorMetrics({ ...source, spool: undefined }));
  assert.ok(m.has("tbg_collector_sink_up"));
  assert.ok(!m.has("tbg_collector_spool_bytes"));
  assert.ok(!m.has("tbg_collector_spool_behind_events"));
});

Deno.test("/healthz: 200 while the socket is bound and every sink is up or spooling", async () => {
  const { state, source } = fakeState();
  await withServer(source, async (base) => {
    const get = async () => {
      const response = await fetch(`${base}/healthz`);
      assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
      return { status: response.status, body: await response.json() as CollectorHealth };
    };

    let { status, body } = await get();
    assert.equal(status, 200);
    assert.deepEqual(body.reasons, []);
    assert.equal(body.healthy, true);
    assert.deepEqual(body.receiver, { bound: true });
    assert.equal(body.sinks.redis.up, true);
    assert.equal(body.spool, null);

    // A sink away with room in the spool: still healthy, and said so.
    Object.assign(state.postgres.state, { up: false });
    state.spool = { bytes: 1000, maxBytes: 10_000, behind: { redis: 0, postgres: 40 } };
    ({ status, body } = await get());
    assert.equal(status, 200);
    assert.deepEqual(body.sinks.postgres, {
      ok: true,
      up: false,
      spooling: true,
      pending: 0,
      behind: 40,
    });
    assert.deepEqual(body.spool, { bytes: 1000, maxBytes: 10_000, full: false });
  });
});

Deno.test("/healthz: 503 with the reasons when the socket is gone, or a sink is away with no room", async () => {
  const { state, source } = fakeState();
  await withServer(source, async (base) => {
    const get = async () => {
      const response = await fetch(`${base}/healthz`);
      return { status: response.status, body: await response.json() as CollectorHealth };
    };

    state.receiving = false;
    let { status, body } = await get();
    assert.equal(status, 503);
    assert.equal(body.healthy, false);
    assert.deepEqual(body.receiver, { bound: false });
    assert.match(body.reasons.join(), /event socket is not bound/);

    state.receiving = true;
    Object.assign(state.redis.state, { up: false });
    ({ status, body } = await get());
    assert.equal(status, 503);
    assert.deepEqual(body.reasons, [
      "redis is not taking writes and there is no spool to keep its events",
    ]);

    state.spool = { bytes: 9_000, maxBytes: 10_000, behind: { redis: 900, postgres: 0 } };
    ({ status, body } = await get());
    assert.equal(status, 503);
    assert.deepEqual(body.reasons, [
      "redis is not taking writes and the spool is full (9000 of 10000 bytes)",
    ]);
    assert.equal(body.sinks.redis.spooling, false);
    assert.equal(body.sinks.postgres.ok, true, "a sink that is up is fine whatever the spool");

    // HEAD answers the same status without a body.
    const head = await fetch(`${base}/healthz`, { method: "HEAD" });
    assert.equal(head.status, 503);
    assert.equal(await head.text(), "");

    // The command a container runs sees the same answer.
    const probe = await probeHealth(`${base}/healthz`);
    assert.equal(probe.healthy, false);
    assert.match(probe.message, /HTTP 503.*redis is not taking writes and the spool is full/);
    Object.assign(state.redis.state, { up: true });
    assert.deepEqual(await probeHealth(`${base}/healthz`), { healthy: true, message: "healthy" });
  });
});

Deno.test("other paths are 404, other methods 405; a failing renderer is a 500 or a 503", async () => {
  const answer = (path: string, method = "GET") =>
    handleMetricsRequest(new Request(`http://x${path}`, { method }), {
      metrics: () => {
        throw new Error("boom");
      },
      health: () => {
        throw new Error("bang");
      },
    });
  assert.equal(answer("/").status, 404);
  assert.equal(answer("/metrics/extra").status, 404);
  const post = answer("/metrics", "POST");
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  assert.equal(answer("/metrics").status, 500);
  const health = answer("/healthz");
  assert.equal(health.status, 503);
  assert.deepEqual(await health.json(), {
    healthy: false,
    reasons: ["cannot work out health: bang"],
  });
});

Deno.test("a metrics port already in use stops start-up with an error naming METRICS_PORT", () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    assert.throws(
      () =>
        startCollectorMetrics(
          { metricsHost: "127.0.0.1", metricsPort: port },
          fakeState().source,
        ),
      (error: unknown) => {
        assert.ok(error instanceof MetricsServerError);
        assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port} \\(METRICS_PORT\\)`));
        assert.match(error.message, /already in use/);
        return true;
      },
    );
  } finally {
    taken.close();
  }
});

Deno.test("METRICS_PORT=0 starts no server", () => {
  assert.equal(
    startCollectorMetrics({ metricsHost: "0.0.0.0", metricsPort: 0 }, fakeState().source),
    undefined,
  );
});

Deno.test("the health check asks loopback when the server listens on every address", () => {
  assert.equal(
    healthUrl({ metricsHost: "0.0.0.0", metricsPort: 9464 }),
    "http://127.0.0.1:9464/healthz",
  );
  assert.equal(healthUrl({ metricsHost: "::", metricsPort: 1 }), "http://[::1]:1/healthz");
  assert.equal(healthUrl({ metricsHost: "10.1.2.3", metricsPort: 2 }), "http://10.1.2.3:2/healthz");
  assert.equal(healthUrl({ metricsHost: "fd00::5", metricsPort: 3 }), "http://[fd00::5]:3/healthz");
  assert.equal(healthUrl({ metricsHost: "0.0.0.0", metricsPort: 0 }), undefined);
});

/** Runs `main.ts healthcheck` as the container does, with `env` only. */
async function healthcheckCommand(env: Record<string, string>) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-net", "--allow-read", "main.ts", "healthcheck"],
    cwd: root,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    text: decoder.decode(output.stdout) + decoder.decode(output.stderr),
  };
}

Deno.test("main.ts healthcheck exits 0 when healthy, 1 with the reason otherwise", async () => {
  const { state, source } = fakeState();
  await withServer(source, async (_, server) => {
    const env = { METRICS_PORT: String(server.port), METRICS_HOST: "0.0.0.0" };
    let result = await healthcheckCommand(env);
    assert.equal(result.code, 0, result.text);
    assert.match(result.text, /healthy/);

    state.receiving = false;
    result = await healthcheckCommand(env);
    assert.equal(result.code, 1, result.text);
    assert.match(result.text, /unhealthy \(HTTP 503\): the event socket is not bound/);
  });
  // The server is gone now.
  const closed = await healthcheckCommand({ METRICS_PORT: "1" });
  assert.equal(closed.code, 1);
  assert.match(closed.text, /unhealthy: cannot reach http:\/\/127\.0\.0\.1:1\/healthz/);
  const off = await healthcheckCommand({ METRICS_PORT: "0" });
  assert.equal(off.code, 1);
  assert.match(off.text, /METRICS_PORT is 0/);
  const bad = await healthcheckCommand({ METRICS_PORT: "lots" });
  assert.equal(bad.code, 1, "Docker reserves exit code 2");
  assert.match(bad.text, /METRICS_PORT must be an integer/);
  const usage = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "main.ts", "nonsense"],
    cwd: root,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(usage.code, 2);
  assert.match(new TextDecoder().decode(usage.stderr), /usage: tbg-collector/);
});
