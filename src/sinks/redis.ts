/**
 * Redis sink: each event is appended to the stream `mining:{event}` with the fields
 * `event ts source data`, capped with `MAXLEN ~`; `block_found` is also published on
 * `blocks:found`. Writes are pipelined, one batch in flight at a time, so order holds and a
 * failed batch is simply sent again (at-least-once).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createClient } from "redis";
import type { MiningEvent } from "../events.ts";
import { PendingQueue } from "../pending_queue.ts";
import type { Sink, SinkStats } from "../sink.ts";
import { redactUrl } from "../config.ts";
import { RateLimitedLog } from "../log.ts";
import { Backoff, sleep } from "../backoff.ts";

/** Options for {@link createRedisSink}. */
export interface RedisSinkOptions {
  readonly url: string;
  /** Approximate length cap of each stream. */
  readonly streamMaxLen: number;
  /** Events held while Redis is unreachable; more are refused and counted. */
  readonly maxPendingEvents: number;
  /** Events per pipeline. */
  readonly maxBatch?: number;
}

/** Channel on which `block_found` events are published. */
export const BLOCKS_CHANNEL = "blocks:found";

/** Stream key of an event type. */
export function streamKey(eventType: string): string {
  return `mining:${eventType}`;
}

/** The Redis commands that deliver one event. */
export function commandsFor(event: MiningEvent, streamMaxLen: number): string[][] {
  const xadd = [
    "XADD",
    streamKey(event.event),
    "MAXLEN",
    "~",
    String(streamMaxLen),
    "*",
    "event",
    event.event,
    "ts",
    String(event.ts),
    "source",
    event.source,
    "data",
    JSON.stringify(event.data),
  ];
  if (event.event !== "block_found") return [xadd];
  return [xadd, ["PUBLISH", BLOCKS_CHANNEL, JSON.stringify(event)]];
}

/** Creates the Redis sink; it connects in the background and reconnects by itself. */
export function createRedisSink(options: RedisSinkOptions): Sink {
  const log = getLogger(["tbg", "redis"]);
  const refusals = new RateLimitedLog(log);
  const maxBatch = options.maxBatch ?? 5000;
  const queue = new PendingQueue<MiningEvent>(options.maxPendingEvents);
  const backoff = new Backoff(100, 5000);
  const stats = { written: 0, retried: 0, dropped: 0 };
  let pushed = 0;
  let confirmed = 0;
  let writing = false;
  let closed = false;
  const closing = new AbortController();
  const waiters = new Set<{ target: number; resolve: () => void }>();

  const client = createClient({
    url: options.url,
    // Commands fail at once while disconnected; the write loop owns retries.
    disableOfflineQueue: true,
    socket: { reconnectStrategy: (attempt: number) => Math.min(100 * 2 ** attempt, 2000) },
  });
  let connected = false;
  client.on("ready", () => {
    connected = true;
    log.info("connected to {url}", { url: redactUrl(options.url) });
    void writeLoop();
  });
  client.on("end", () => connected = false);
  client.on("error", (error: Error) => {
    if (connected) log.warn("connection lost: {error}", { error: error.message });
    connected = false;
  });
  client.connect().catch((error: Error) => {
    log.warn("cannot reach {url} yet, retrying: {error}", {
      url: redactUrl(options.url),
      error: error.message,
    });
  });
  log.info("buffers up to {max} events while Redis is unreachable", {
    max: options.maxPendingEvents,
  });

  const settle = () => {
    for (const waiter of waiters) {
      if (confirmed >= waiter.target) {
        waiters.delete(waiter);
        waiter.resolve();
      }
    }
  };

  /** Sends one batch; returns how many events, from the front, Redis confirmed. */
  async function send(batch: MiningEvent[]): Promise<{ done: number; error?: Error }> {
    const replies: Promise<unknown>[][] = batch.map((event) =>
      commandsFor(event, options.streamMaxLen).map((command) => client.sendCommand(command))
    );
    const results = await Promise.allSettled(replies.map((commands) => Promise.all(commands)));
    const failed = results.findIndex((result) => result.status === "rejected");
    if (failed < 0) return { done: batch.length };
    return { done: failed, error: (results[failed] as PromiseRejectedResult).reason };
  }

  async function writeLoop(): Promise<void> {
    if (writing) return;
    writing = true;
    try {
      while (!closed && queue.length > 0) {
        const batch = queue.peek(maxBatch);
        const { done, error } = connected
          ? await send(batch)
          : { done: 0, error: new Error("not connected") };
        queue.remove(done);
        stats.written += done;
        confirmed += done;
        settle();
        if (error) {
          stats.retried += batch.length - done;
          log.warn("write failed, {pending} events kept for retry: {error}", {
            pending: queue.length,
            error: error.message,
          });
          await sleep(backoff.next(), closing.signal);
        } else {
          backoff.reset();
        }
      }
    } finally {
      writing = false;
    }
  }

  return {
    name: "redis",
    push(events) {
      if (closed) throw new Error("redis sink is closed");
      const refused = queue.push(events);
      pushed += events.length - refused;
      if (refused > 0) {
        stats.dropped += refused;
        refusals.warn("buffer full ({max} events): refused {refused} events", {
          max: options.maxPendingEvents,
          refused,
        });
      }
      void writeLoop();
    },
    flush(signal) {
      if (confirmed >= pushed) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const waiter = { target: pushed, resolve };
        waiters.add(waiter);
        signal?.addEventListener("abort", () => {
          waiters.delete(waiter);
          resolve();
        }, { once: true });
        void writeLoop();
      });
    },
    async close() {
      closed = true;
      closing.abort();
      for (const waiter of waiters) waiter.resolve();
      waiters.clear();
      try {
        await client.close();
      } catch {
        client.destroy();
      }
    },
    stats(): SinkStats {
      return { ...stats, pending: queue.length };
    },
  };
}
