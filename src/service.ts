/**
 * Puts the collector together from its configuration: sinks, centre, receive thread,
 * periodic stats, and an orderly stop.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Collector } from "./collector.ts";
import { type Config, redactUrl } from "./config.ts";
import { qlenWarning, readMaxDgramQlen } from "./kernel_limits.ts";
import { type Receiver, startReceiver } from "./receiver.ts";
import type { Sink } from "./sink.ts";
import { createPostgresSink } from "./sinks/postgres.ts";
import { createRedisSink } from "./sinks/redis.ts";

const log = getLogger(["tbg", "collector"]);

/** A running collector. */
export interface Service {
  readonly collector: Collector;
  readonly receiver: Receiver;
  /**
   * Stops receiving, flushes every sink (bounded by the shutdown timeout), closes them and
   * returns how many deliveries (events times sinks) were still pending.
   */
  stop(): Promise<{ undelivered: number }>;
}

/** Builds the sinks the configuration asks for. */
export function createSinks(config: Config): Sink[] {
  return [
    createRedisSink({
      url: config.redisUrl,
      streamMaxLen: config.redisStreamMaxLen,
      maxPendingEvents: config.maxPendingEvents,
    }),
    createPostgresSink({
      url: config.databaseUrl,
      batchMaxSize: config.batchMaxSize,
      flushIntervalMs: config.batchFlushIntervalMs,
      maxPendingEvents: config.maxPendingEvents,
    }),
  ];
}

/** One line with every counter, for the periodic log. */
export function statsLine(collector: Collector): string {
  const counters = collector.counters();
  const invalid = Object.values(counters.invalid).reduce((sum, n) => sum + n, 0);
  const sinks = collector.sinks.map((sink) => {
    const s = sink.stats();
    return `${sink.name}: written=${s.written} pending=${s.pending} retried=${s.retried} ` +
      `dropped=${s.dropped}`;
  });
  return `received=${counters.received} accepted=${counters.accepted} invalid=${invalid} ` +
    `lost=${counters.lost} | ${sinks.join(" | ")}`;
}

/**
 * Starts the collector.
 *
 * @param onFatal called when the receive thread fails; the caller should stop and exit
 */
export function startService(
  config: Config,
  onFatal: (message: string) => void,
  sinks: Sink[] = createSinks(config),
): Service {
  log.info("starting: socket {socket}, redis {redis}, database {database}", {
    socket: config.socketPath,
    redis: redactUrl(config.redisUrl),
    database: redactUrl(config.databaseUrl),
  });
  const warning = qlenWarning(readMaxDgramQlen());
  if (warning) log.warn(warning);

  const collector = new Collector(sinks);
  let receiver: Receiver;
  try {
    receiver = startReceiver({
      path: config.socketPath,
      mode: config.socketMode,
      receiveBufferBytes: config.socketReceiveBuffer,
      onBatch: (batch) => collector.enqueue(batch),
      onError: (message) => {
        log.fatal("receive thread failed: {message}", { message });
        onFatal(message);
      },
    });
  } catch (error) {
    void Promise.all(sinks.map((sink) => sink.close()));
    throw error;
  }
  log.info("listening on {path} (mode {mode}, SO_RCVBUF {rcvbuf} bytes)", {
    path: receiver.path,
    mode: config.socketMode.toString(8).padStart(4, "0"),
    rcvbuf: receiver.receiveBufferBytes,
  });

  const statsTimer = config.statsIntervalMs > 0
    ? setInterval(
      () => log.info("stats {line}", { line: statsLine(collector) }),
      config.statsIntervalMs,
    )
    : undefined;

  let stopping: Promise<{ undelivered: number }> | undefined;
  const stop = async () => {
    clearInterval(statsTimer);
    await receiver.stop();
    collector.drain();
    const deadline = AbortSignal.timeout(config.shutdownTimeoutMs);
    await Promise.all(sinks.map((sink) => sink.flush(deadline)));
    const undelivered = sinks.reduce((sum, sink) => sum + sink.stats().pending, 0);
    log.info("stopped: {line}", { line: statsLine(collector) });
    for (const sink of sinks) {
      const { pending } = sink.stats();
      if (pending === 0) continue;
      log.error(
        "{pending} accepted events were not delivered to {sink} before the shutdown timeout",
        {
          pending,
          sink: sink.name,
        },
      );
    }
    await Promise.all(sinks.map((sink) => sink.close()));
    return { undelivered };
  };
  return {
    collector,
    receiver,
    stop: () => stopping ??= stop(),
  };
}
