/**
 * Puts the collector together from its configuration: spool, sink threads and delivery,
 * centre, receive thread, periodic stats, and an orderly stop.
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
import type { PostgresSinkOptions } from "./sinks/postgres.ts";
import type { RedisSinkOptions } from "./sinks/redis.ts";
import { type SinkThread, startSinkThread } from "./sinks/threaded.ts";
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

/** The sinks, by the name their spool position goes by, and their worker modules. */
const SINKS = ["redis", "postgres"] as const;

/**
 * Starts one thread per sink, each reading the spool from its saved position.
 *
 * @param onFatal called if a sink's thread fails
 */
export function startSinkThreads(
  config: Config,
  spool: Spool,
  onFatal: (message: string) => void,
): SinkThread[] {
  const deadlines = {
    connectTimeoutMs: config.sinkConnectTimeoutMs,
    writeTimeoutMs: config.sinkWriteTimeoutMs,
  };
  const options: { redis: RedisSinkOptions; postgres: PostgresSinkOptions } = {
    redis: { url: config.redisUrl, streamMaxLen: config.redisStreamMaxLen, ...deadlines },
    postgres: {
      url: config.databaseUrl,
      batchMaxSize: config.batchMaxSize,
      flushIntervalMs: config.batchFlushIntervalMs,
      ...deadlines,
    },
  };
  return SINKS.map((name) =>
    startSinkThread({
      name,
      worker: new URL(`./sinks/${name}_worker.ts`, import.meta.url),
      options: options[name],
      spool: {
        dir: spool.dir,
        signals: spool.signals.buffer,
        readerIndex: spool.readerIndex(name),
        position: spool.position(name),
      },
      memoryLimit: config.maxPendingEvents,
      logLevel: config.logLevel,
      onFatal,
    })
  );
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
export function startService(config: Config, onFatal: (message: string) => void): Service {
  log.info("starting: socket {socket}, redis {redis}, database {database}", {
    socket: config.socketPath,
    redis: redactUrl(config.redisUrl),
    database: redactUrl(config.databaseUrl),
  });
  const warning = qlenWarning(readMaxDgramQlen());
  if (warning) log.warn(warning);

  const spool = Spool.open({
    dir: config.spoolDir,
    maxBytes: config.spoolMaxBytes,
    fsyncIntervalMs: config.spoolFsyncIntervalMs,
    readers: SINKS,
  });
  const sinks = startSinkThreads(config, spool, (message) => {
    log.fatal("{message}", { message });
    onFatal(message);
  });
  const delivery = new Delivery(spool, sinks);
  // The sinks read the spool themselves: the centre here validates to count, and hands on
  // nothing.
  const collector = new Collector({ accept() {} });
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
