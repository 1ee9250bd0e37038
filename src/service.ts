/**
 * Puts the collector together from its configuration: sinks, spool and delivery, centre,
 * receive thread, periodic stats, and an orderly stop.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Collector } from "./collector.ts";
import { type Config, redactUrl } from "./config.ts";
import { Delivery } from "./delivery.ts";
import type { MetricsServer } from "./metrics_server.ts";
import { startCollectorMetrics } from "./service_metrics.ts";
import { qlenWarning, readMaxDgramQlen } from "./kernel_limits.ts";
import { type Receiver, startReceiver } from "./receiver.ts";
import type { Sink } from "./sink.ts";
import { createPostgresSink, type PostgresSinkOptions } from "./sinks/postgres.ts";
import { createRedisSink } from "./sinks/redis.ts";
import { startThreadedSink } from "./sinks/threaded.ts";
import { Spool } from "./spool.ts";

const log = getLogger(["tbg", "collector"]);

/** A running collector. */
export interface Service {
  readonly collector: Collector;
  readonly delivery: Delivery;
  readonly receiver: Receiver;
  /**
   * Stops receiving, flushes every sink (bounded by the shutdown timeout) and closes them
   * and the spool. Returns how many accepted events are neither delivered nor in the spool
   * (only a spool that could not be written leaves any).
   */
  stop(): Promise<{ undelivered: number }>;
}

/**
 * Builds the sinks the configuration asks for. Redis, where latency matters most, stays on
 * the main thread. PostgreSQL does too unless `POSTGRES_THREAD` is on: a thread of its own
 * spares the main thread the milliseconds a batch takes to build and encode, but lets
 * postgres run flat out, which on a machine short of cores takes CPU the receive thread
 * needs (see BENCHMARKS.md).
 *
 * @param onFatal called if a sink's thread fails
 */
export function createSinks(config: Config, onFatal: (message: string) => void): Sink[] {
  const deadlines = {
    connectTimeoutMs: config.sinkConnectTimeoutMs,
    writeTimeoutMs: config.sinkWriteTimeoutMs,
  };
  const postgres: PostgresSinkOptions = {
    url: config.databaseUrl,
    batchMaxSize: config.batchMaxSize,
    flushIntervalMs: config.batchFlushIntervalMs,
    ...deadlines,
  };
  return [
    createRedisSink({
      url: config.redisUrl,
      streamMaxLen: config.redisStreamMaxLen,
      ...deadlines,
    }),
    config.postgresThread
      ? postgresThread(postgres, config.logLevel, onFatal)
      : createPostgresSink(postgres),
  ];
}

function postgresThread(
  options: PostgresSinkOptions,
  logLevel: Config["logLevel"],
  onFatal: (message: string) => void,
): Sink {
  log.info("the PostgreSQL sink runs on a thread of its own (POSTGRES_THREAD=on)");
  return startThreadedSink({
    name: "postgres",
    worker: new URL("./sinks/postgres_worker.ts", import.meta.url),
    options,
    logLevel,
    onFatal,
  });
}

/** One line with every counter, for the periodic log. */
export function statsLine(collector: Collector, delivery: Delivery): string {
  const counters = collector.counters();
  const invalid = Object.values(counters.invalid).reduce((sum, n) => sum + n, 0);
  const { spool, sinks } = delivery.stats();
  const parts = delivery.sinks.map((sink, i) => {
    const s = sink.stats();
    return `${sink.name}: ${s.up ? "up" : "DOWN"} written=${s.written} pending=${s.pending} ` +
      `retried=${s.retried} ` +
      `dropped=${s.dropped} behind=${sinks[i].behind} lost=${sinks[i].lost}`;
  });
  const memory = Deno.memoryUsage();
  const mb = (bytes: number) => Math.round(bytes / 1048576);
  return `received=${counters.received} accepted=${counters.accepted} invalid=${invalid} ` +
    `lost=${counters.lost} | ${parts.join(" | ")} | spool: bytes=${spool.bytes} | ` +
    `memory: rss=${mb(memory.rss)}MB heap=${mb(memory.heapUsed)}/${mb(memory.heapTotal)}MB ` +
    `external=${mb(memory.external)}MB`;
}

/**
 * Starts the collector.
 *
 * @param onFatal called when the receive thread or a sink's thread fails; the caller should
 *   stop and exit
 */
export function startService(
  config: Config,
  onFatal: (message: string) => void,
  sinks: Sink[] = createSinks(config, (message) => {
    log.fatal("{message}", { message });
    onFatal(message);
  }),
): Service {
  log.info("starting: socket {socket}, redis {redis}, database {database}", {
    socket: config.socketPath,
    redis: redactUrl(config.redisUrl),
    database: redactUrl(config.databaseUrl),
  });
  const warning = qlenWarning(readMaxDgramQlen());
  if (warning) log.warn(warning);

  let spool: Spool;
  try {
    spool = Spool.open({
      dir: config.spoolDir,
      maxBytes: config.spoolMaxBytes,
      fsyncIntervalMs: config.spoolFsyncIntervalMs,
      readers: sinks.map((sink) => sink.name),
    });
  } catch (error) {
    void Promise.all(sinks.map((sink) => sink.close()));
    throw error;
  }
  const delivery = new Delivery(spool, sinks, config.maxPendingEvents);
  const collector = new Collector(delivery);
  let receiving = false;
  let metrics: MetricsServer | undefined;
  try {
    metrics = startCollectorMetrics(config, {
      counters: () => collector.counters(),
      sinks,
      receiving: () => receiving,
      spool: () => {
        const { spool, sinks: fed } = delivery.stats();
        return { ...spool, lost: Object.fromEntries(fed.map((s) => [s.name, s.lost])) };
      },
    });
  } catch (error) {
    void delivery.close();
    throw error;
  }
  let receiver: Receiver;
  try {
    receiver = startReceiver({
      path: config.socketPath,
      mode: config.socketMode,
      receiveBufferBytes: config.socketReceiveBuffer,
      group: config.socketGroup,
      allowedSenderUids: config.allowedSenderUids,
      spool,
      onBatch: (batch) => collector.enqueue(batch),
      onError: (message) => {
        receiving = false;
        log.fatal("receive thread failed: {message}", { message });
        onFatal(message);
      },
    });
  } catch (error) {
    void metrics?.shutdown();
    void delivery.close();
    throw error;
  }
  receiving = true;
  log.info("listening on {path} (mode {mode}, SO_RCVBUF {rcvbuf} bytes, senders {senders})", {
    senders: config.allowedSenderUids.length > 0 ? config.allowedSenderUids.join(",") : "any",
    path: receiver.path,
    mode: config.socketMode.toString(8).padStart(4, "0"),
    rcvbuf: receiver.receiveBufferBytes,
  });

  const statsTimer = config.statsIntervalMs > 0
    ? setInterval(
      () => log.info("stats {line}", { line: statsLine(collector, delivery) }),
      config.statsIntervalMs,
    )
    : undefined;

  let stopping: Promise<{ undelivered: number }> | undefined;
  const stop = async () => {
    clearInterval(statsTimer);
    receiving = false;
    await receiver.stop();
    collector.drain();
    await delivery.flush(AbortSignal.timeout(config.shutdownTimeoutMs));
    log.info("stopped: {line}", { line: statsLine(collector, delivery) });
    for (const { name, behind } of delivery.stats().sinks) {
      if (behind === 0) continue;
      log.warn(
        "{behind} accepted events were not confirmed by {sink} before the shutdown timeout; " +
          "they stay in the spool ({dir}) and are delivered after the next start",
        { behind, sink: name, dir: config.spoolDir },
      );
    }
    await delivery.close();
    await metrics?.shutdown();
    const undelivered = delivery.stats().spool.unwritten;
    if (undelivered > 0) {
      log.error("{count} accepted events could not be written to the spool and are lost", {
        count: undelivered,
      });
    }
    return { undelivered };
  };
  return {
    collector,
    delivery,
    receiver,
    stop: () => stopping ??= stop(),
  };
}
