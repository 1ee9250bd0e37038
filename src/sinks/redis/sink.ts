/**
 * Redis sink: each event is appended to the stream `mining:{event}` with the fields
 * `id event ts source data`, capped with `MAXLEN ~`; `block_found` is also published on
 * `blocks:found` as the whole event in JSON, `id` included (`request.ts`). Writes are pipelined, one batch in
 * flight at a time, so order holds and a failed batch is sent again from its first unconfirmed
 * event. Delivery is at-least-once: an entry may appear twice (a batch cut by a lost
 * connection, a replay after a restart), and consumers drop repeats by `id`.
 *
 * The sink takes every event pushed; bounding memory is the delivery layer's job.
 *
 * This is the sink on the event loop, fed by `../feed.ts`: the collector uses it for TLS
 * (`rediss://`). Over plain TCP it runs `blocking.ts`, which writes the same commands.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { redactUrl } from "../../ops/config.ts";
import type { MiningEvent } from "../../events.ts";
import { Backoff, sleep } from "../backoff.ts";
import { PendingQueue } from "../pending_queue.ts";
import { Histogram } from "../../ops/metrics.ts";
import type { Acknowledge, Sink, SinkStats } from "../../sink.ts";
import { RequestBuilder } from "./request.ts";
import { RespConnection } from "./resp.ts";

/** Options for {@link createRedisSink}. */
export interface RedisSinkOptions {
  readonly url: string;
  /** Approximate length cap of each stream. */
  readonly streamMaxLen: number;
  /** Events per pipeline. */
  readonly maxBatch?: number;
  /** Deadline for making a connection, in milliseconds (default 3 s). */
  readonly connectTimeoutMs?: number;
  /** Deadline for one pipeline's replies, in milliseconds (default 15 s). */
  readonly writeTimeoutMs?: number;
}

/**
 * Creates the Redis sink; it connects when it has something to write and reconnects by
 * itself, and acknowledges each push's end once Redis has confirmed its events.
 */
export function createRedisSink(
  options: RedisSinkOptions,
  acknowledge: Acknowledge = () => {},
): Sink {
  const log = getLogger(["tbg", "redis"]);
  const maxBatch = options.maxBatch ?? 5000;
  const request = new RequestBuilder(options.streamMaxLen);
  const url = redactUrl(options.url);
  const queue = new PendingQueue<MiningEvent>(acknowledge);
  const connectTimeoutMs = options.connectTimeoutMs ?? 3_000;
  const writeTimeoutMs = options.writeTimeoutMs ?? 15_000;
  // Capped low: a refused connection costs nothing, and the sink must be writing again
  // well within a second of Redis's return.
  const backoff = new Backoff(25, 250);
  const closing = new AbortController();
  // Redis refuses no event for its data, so nothing is ever dropped here.
  const stats = { written: 0, retried: 0, dropped: 0 };
  const writeLatency = new Histogram();
  let writing = false;
  let connection: RespConnection | undefined;
  let failing = false;

  /** Sends one batch; returns how many events, from the front, Redis confirmed. */
  async function send(batch: MiningEvent[]): Promise<number> {
    if (!connection || connection.broken) {
      connection = await RespConnection.connect(options.url, connectTimeoutMs);
      log.info("connected to {url}", { url });
    }
    request.clear();
    for (let i = 0; i < batch.length; i++) request.add(batch[i], i);
    const started = performance.now();
    const { failedAt, error } = await connection.send(
      request.bytes(),
      request.commands,
      writeTimeoutMs,
    );
    if (failedAt < 0) {
      writeLatency.observe((performance.now() - started) / 1000);
      return batch.length;
    }
    throw Object.assign(error!, { confirmed: request.owner(failedAt) });
  }

  async function writeLoop(): Promise<void> {
    if (writing) return;
    writing = true;
    try {
      while (!closing.signal.aborted && queue.length > 0) {
        const batch = queue.peek(maxBatch);
        let done = batch.length;
        let failure: unknown;
        try {
          await send(batch);
        } catch (error) {
          failure = error;
          done = (error as { confirmed?: number }).confirmed ?? 0;
        }
        stats.written += done;
        queue.remove(done);
        if (failure === undefined) {
          if (failing) {
            log.info("writing again; {pending} events waiting", { pending: queue.length });
          }
          failing = false;
          backoff.reset();
          continue;
        }
        stats.retried++;
        const delay = backoff.next();
        if (!failing) {
          log.warn(
            "write to {url} failed, {pending} events kept, retrying in {delay} ms: {error}",
            {
              url,
              pending: queue.length,
              delay,
              error: (failure as Error).message,
            },
          );
        }
        failing = true;
        await sleep(delay, closing.signal);
      }
    } finally {
      writing = false;
    }
  }

  return {
    name: "redis",
    push(events, end) {
      queue.push(events, end);
      void writeLoop();
    },
    flush(signal) {
      return queue.drained(signal);
    },
    close() {
      closing.abort();
      queue.release();
      connection?.close();
      return Promise.resolve();
    },
    stats(): SinkStats {
      return { ...stats, pending: queue.length, up: !failing, writeLatency };
    },
  };
}
