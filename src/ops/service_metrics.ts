/**
 * The collector's metrics and health, worked out on each request from the counters the
 * centre, the sinks and the spool already keep, and the server that publishes them.
 *
 * Healthy means: the event socket is bound (the receive thread runs) and every sink either
 * takes writes or has a spool behind it that still has room, so no accepted event is at
 * risk. A sink that is away while the spool has room is reported, not failed: the spool
 * exists for exactly that.
 *
 * @module
 */
import type { CollectorCounters } from "../collector.ts";
import type { Config } from "./config.ts";
import { MetricsText, type Sample } from "./metrics.ts";
import { type HealthReport, type MetricsServer, startMetricsServer } from "./metrics_server.ts";
import type { Sink } from "../sink.ts";
import { SPOOL_NEAR_FULL_SHARE } from "../buffer/spool.ts";

/** What the spool reports; the spool's own stats object fits as it is. */
export interface SpoolGauges {
  /** Bytes its files take. */
  readonly bytes: number;
  /** `SPOOL_MAX_BYTES`. */
  readonly maxBytes: number;
  /** Per sink: records it has not confirmed yet. */
  readonly behind: Readonly<Record<string, number>>;
  /** Per sink: events it will never get (evicted from a full spool); omitted if not kept. */
  readonly lost?: Readonly<Record<string, number>>;
}

/** Everything the metrics are read from. */
export interface CollectorMetricsSource {
  /** The centre's counters (`collector.counters()`). */
  readonly counters: () => CollectorCounters;
  readonly sinks: readonly Pick<Sink, "name" | "stats">[];
  /** Whether the event socket is bound and the receive thread running. */
  readonly receiving: () => boolean;
  /** The spool's state; leave out (or answer undefined) when there is no spool. */
  readonly spool?: () => SpoolGauges | undefined;
}

/** One sink's part of the health report. */
export interface SinkHealth {
  readonly ok: boolean;
  /** The backend takes writes (see `SinkStats.up`). */
  readonly up: boolean;
  /** Away, but the spool keeps its events. */
  readonly spooling: boolean;
  /** Events in the sink's queue. */
  readonly pending: number;
  /** Events accepted and not yet confirmed (in memory or only in the spool); with a spool. */
  readonly behind?: number;
}

/** The collector's answer to `/healthz`. */
export interface CollectorHealth extends HealthReport {
  readonly receiver: { readonly bound: boolean };
  readonly sinks: Readonly<Record<string, SinkHealth>>;
  /** `null` when the collector runs without a spool. */
  readonly spool:
    | { readonly bytes: number; readonly maxBytes: number; readonly full: boolean }
    | null;
}

/** Works out health from the current state. */
export function collectorHealth(source: CollectorMetricsSource): CollectorHealth {
  const reasons: string[] = [];
  const bound = source.receiving();
  if (!bound) reasons.push("the event socket is not bound: the receive thread is not running");
  const gauges = source.spool?.();
  const spool = gauges
    ? {
      bytes: gauges.bytes,
      maxBytes: gauges.maxBytes,
      // The spool warns there and evicts not far beyond: a sink still away puts events at risk.
      full: gauges.bytes >= gauges.maxBytes * SPOOL_NEAR_FULL_SHARE,
    }
    : null;
  const sinks: Record<string, SinkHealth> = {};
  for (const sink of source.sinks) {
    const stats = sink.stats();
    const spooling = !stats.up && spool !== null && !spool.full;
    const ok = stats.up || spooling;
    sinks[sink.name] = {
      ok,
      up: stats.up,
      spooling,
      pending: stats.pending,
      ...(gauges ? { behind: gauges.behind[sink.name] ?? 0 } : {}),
    };
    if (ok) continue;
    reasons.push(
      spool
        ? `${sink.name} is not taking writes and the spool is full ` +
          `(${spool.bytes} of ${spool.maxBytes} bytes)`
        : `${sink.name} is not taking writes and there is no spool to keep its events`,
    );
  }
  return { healthy: reasons.length === 0, reasons, receiver: { bound }, sinks, spool };
}

const PREFIX = "tbg_collector_";

/** Renders every metric in the Prometheus text format. */
export function collectorMetrics(source: CollectorMetricsSource): string {
  const counters = source.counters();
  const sinks = source.sinks.map((sink) => ({ name: sink.name, stats: sink.stats() }));
  const perSink = (value: (stats: (typeof sinks)[number]["stats"]) => number): Sample[] =>
    sinks.map(({ name, stats }) => ({ labels: { sink: name }, value: value(stats) }));
  const out = new MetricsText()
    .counter(
      `${PREFIX}datagrams_received_total`,
      "Datagrams taken off the event socket.",
      counters.received,
    )
    .counter(
      `${PREFIX}datagrams_rejected_total`,
      "Datagrams that did not become events, by reason.",
      Object.entries(counters.invalid).map(([reason, value]) => ({ labels: { reason }, value })),
    )
    .counter(
      `${PREFIX}events_total`,
      "Events accepted, by event type (types past the 64th are counted as other).",
      Object.entries(counters.byType).map(([type, value]) => ({
        labels: { type, outcome: "accepted" },
        value,
      })),
    )
    .counter(
      `${PREFIX}events_lost_total`,
      "Events the emitters numbered that never arrived (gaps in seq).",
      counters.lost,
    )
    .counter(
      `${PREFIX}emitter_restarts_total`,
      "Emitter restarts seen in seq.",
      counters.emitterRestarts,
    )
    .gauge(
      `${PREFIX}receiver_up`,
      "1 while the event socket is bound and the receive thread runs.",
      source.receiving() ? 1 : 0,
    )
    .counter(
      `${PREFIX}sink_events_total`,
      "Events a sink settled: written (confirmed by the backend) or dropped (refused).",
      sinks.flatMap(({ name, stats }) => [
        { labels: { sink: name, outcome: "written" }, value: stats.written },
        { labels: { sink: name, outcome: "dropped" }, value: stats.dropped },
      ]),
    )
    .counter(
      `${PREFIX}sink_retries_total`,
      "Write attempts that failed and were tried again.",
      perSink((s) => s.retried),
    )
    .gauge(
      `${PREFIX}sink_pending_events`,
      "Events in a sink's queue, not yet confirmed by its backend.",
      perSink((s) => s.pending),
    )
    .gauge(
      `${PREFIX}sink_up`,
      "1 while the backend takes writes, 0 from a failed write until one succeeds.",
      perSink((s) => s.up ? 1 : 0),
    )
    .histogram(
      `${PREFIX}sink_write_seconds`,
      "Seconds per successful write round trip (a Redis pipeline, a PostgreSQL transaction).",
      sinks.map(({ name, stats }) => ({ labels: { sink: name }, histogram: stats.writeLatency })),
    );
  const spool = source.spool?.();
  if (spool) {
    out
      .gauge(`${PREFIX}spool_bytes`, "Bytes the spool's files take.", spool.bytes)
      .gauge(
        `${PREFIX}spool_max_bytes`,
        "Most bytes the spool may take (SPOOL_MAX_BYTES).",
        spool.maxBytes,
      )
      .gauge(
        `${PREFIX}spool_behind_events`,
        "Accepted events a sink has not confirmed yet, in memory or only in the spool.",
        sinks.map(({ name }) => ({ labels: { sink: name }, value: spool.behind[name] ?? 0 })),
      );
    if (spool.lost) {
      const lost = spool.lost;
      out.counter(
        `${PREFIX}spool_lost_events_total`,
        "Events a sink never got: evicted from a full spool, or unreadable in it.",
        sinks.map(({ name }) => ({ labels: { sink: name }, value: lost[name] ?? 0 })),
      );
    }
  }
  const memory = Deno.memoryUsage();
  out
    .gauge(`${PREFIX}process_resident_memory_bytes`, "Resident set size.", memory.rss)
    .gauge(`${PREFIX}process_heap_used_bytes`, "V8 heap in use.", memory.heapUsed)
    .gauge(
      `${PREFIX}process_start_time_seconds`,
      "Start of the process, seconds since the epoch.",
      Math.round(performance.timeOrigin) / 1000,
    )
    .gauge(
      `${PREFIX}process_uptime_seconds`,
      "Seconds since the process started.",
      Math.round(performance.now()) / 1000,
    );
  return out.toString();
}

/**
 * Starts `/metrics` and `/healthz` as the configuration says; `METRICS_PORT=0` means none.
 *
 * @throws {import("./metrics_server.ts").MetricsServerError} when the port cannot be had
 */
export function startCollectorMetrics(
  config: Pick<Config, "metricsHost" | "metricsPort">,
  source: CollectorMetricsSource,
): MetricsServer | undefined {
  if (config.metricsPort === 0) return undefined;
  return startMetricsServer({
    host: config.metricsHost,
    port: config.metricsPort,
    metrics: () => collectorMetrics(source),
    health: () => collectorHealth(source),
  });
}
