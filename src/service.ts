/**
 * Puts the collector together from its configuration: spool, sink threads (one of which
 * hosts the centre) and delivery, receive thread, periodic stats, and an orderly stop.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { CollectorCounters } from "./collector.ts";
import type { ReceiveCounts } from "./source/counters.ts";
import { type Config, redactUrl } from "./ops/config.ts";
import { Delivery } from "./delivery.ts";
import type { MetricsServer } from "./ops/metrics_server.ts";
import { startCollectorMetrics } from "./ops/service_metrics.ts";
import { qlenWarning, readMaxDgramQlen } from "./source/kernel_limits.ts";
import { backgroundNice, liveNice, type Receiver, startReceiver } from "./source/receiver.ts";
import type { PostgresSinkOptions } from "./sinks/postgres/sink.ts";
import type { RedisSinkOptions } from "./sinks/redis/sink.ts";
import { type SinkThread, startSinkThread } from "./sinks/thread.ts";
import { Spool } from "./buffer/spool.ts";
import { ServiceManager } from "./ops/service_manager.ts";

const log = getLogger(["tbg", "collector"]);

/** A running collector. */
export interface Service {
  /** Everything counted so far (what the centre's host thread last reported). */
  counters(): CollectorCounters;
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
 * How long each sink's feed lets records gather after a read that left nothing behind
 * (`sinks/feed.ts`), on top of the receive thread's own gathering: Redis is read for the
 * game's live view, so it reads at once; PostgreSQL writes in batches (`BATCH_FLUSH_INTERVAL`)
 * and loses nothing by waiting a little. The blocking Redis loop (`sinks/redis/blocking.ts`)
 * never lingers.
 */
const LINGER_MS: Record<(typeof SINKS)[number], number> = { redis: 0, postgres: 20 };

/**
 * Each sink thread's nice value (see `source/receiver.ts`): Redis feeds the live view, so it
 * runs above PostgreSQL and the main thread, and below the receive thread.
 */
const NICE: Record<(typeof SINKS)[number], () => number> = {
  redis: liveNice,
  postgres: backgroundNice,
};

/**
 * The sink whose thread hosts the centre, counting the records that sink decodes anyway. Not
 * Redis: its thread is the one the live view waits for, and while a sink lags the centre reads
 * and decodes on its own; PostgreSQL's thread works in batches and can spare that.
 */
const CENTRE_HOST: (typeof SINKS)[number] = "postgres";

/**
 * Starts one thread per sink, each reading the spool from its saved position.
 *
 * @param onFatal called if a sink's thread fails
 */
function startSinkThreads(
  config: Config,
  spool: Spool,
  onFatal: (message: string) => void,
): SinkThread[] {
  // The centre counts this run's records: those before the head now were counted before.
  const centre = { from: spool.signals.head() };
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
      worker: new URL(`./sinks/${name}/worker.ts`, import.meta.url),
      options: options[name],
      spool: {
        dir: spool.dir,
        signals: spool.signals.buffer,
        readerIndex: spool.readerIndex(name),
        position: spool.position(name),
      },
      memoryLimitBytes: config.sinkMemoryBytes,
      lingerMs: LINGER_MS[name],
      nice: NICE[name](),
      logLevel: config.logLevel,
      centre: name === CENTRE_HOST ? centre : undefined,
      onFatal,
    })
  );
}

/**
 * The centre's counters with the receive thread's: every datagram taken off the socket is
 * received, and those refused for their sender (never spooled, so never seen by the centre)
 * are rejected as `unauthorized_sender`.
 */
function withReceiveCounts(
  counters: CollectorCounters,
  counts: ReceiveCounts | undefined,
): CollectorCounters {
  if (!counts) return counters;
  return {
    ...counters,
    received: counts.received,
    invalid: { ...counters.invalid, unauthorized_sender: counts.refused },
  };
}

/** One line with every counter, for the periodic log. */
function statsLine(counters: CollectorCounters, delivery: Delivery): string {
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
    socket: config.passedSocketFd === undefined
      ? config.socketPath
      : `passed in as descriptor ${config.passedSocketFd}`,
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
  const centre = sinks.find((sink) => sink.centre)!.centre!;
  let receiver: Receiver | undefined;
  const counters = () => withReceiveCounts(centre.counters(), receiver?.counts());
  let receiving = false;
  let metrics: MetricsServer | undefined;
  try {
    metrics = startCollectorMetrics(config, {
      counters,
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
  try {
    receiver = startReceiver({
      path: config.socketPath,
      passedFd: config.passedSocketFd,
      mode: config.socketMode,
      receiveBufferBytes: config.socketReceiveBuffer,
      group: config.socketGroup,
      allowedSenderUids: config.allowedSenderUids,
      spool,
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
  log.info("listening on {path} ({how}, SO_RCVBUF {rcvbuf} bytes, senders {senders})", {
    senders: config.allowedSenderUids.length > 0 ? config.allowedSenderUids.join(",") : "any",
    path: receiver.path,
    how: receiver.inherited
      ? "passed in by the service manager"
      : `mode ${config.socketMode.toString(8).padStart(4, "0")}`,
    rcvbuf: receiver.receiveBufferBytes,
  });
  const manager = new ServiceManager();
  manager.ready(`receiving on ${receiver.path}`);

  const statsTimer = config.statsIntervalMs > 0
    ? setInterval(
      () => log.info("stats {line}", { line: statsLine(counters(), delivery) }),
      config.statsIntervalMs,
    )
    : undefined;

  let stopping: Promise<{ undelivered: number }> | undefined;
  const stop = async () => {
    clearInterval(statsTimer);
    receiving = false;
    manager.stopping();
    await receiver!.stop();
    const deadline = AbortSignal.timeout(config.shutdownTimeoutMs);
    const until = spool.signals.head();
    await Promise.all([centre.drain(until, deadline), delivery.flush(deadline)]);
    log.info("stopped: {line}", { line: statsLine(counters(), delivery) });
    for (const { name, behind } of delivery.stats().sinks) {
      if (behind === 0) continue;
      log.warn(
        "{behind} accepted events were not confirmed by {sink} before the shutdown timeout; " +
          "they stay in the spool ({dir}) and are delivered after the next start",
        { behind, sink: name, dir: config.spoolDir },
      );
    }
    const undelivered = spool.signals.unwritten();
    await delivery.close();
    await metrics?.shutdown();
    manager.close();
    if (undelivered > 0) {
      log.error("{count} accepted events could not be written to the spool and are lost", {
        count: undelivered,
      });
    }
    return { undelivered };
  };
  return {
    counters,
    delivery,
    receiver,
    stop: () => stopping ??= stop(),
  };
}
