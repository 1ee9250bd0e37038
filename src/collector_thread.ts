/**
 * Runs the centre ({@link Collector}) on a thread of its own, reading the spool from where
 * this run's records start, so that validating and counting every datagram costs the main
 * thread nothing. The main thread keeps the counters it last reported (every 100 ms while
 * they change).
 *
 * @module
 */
import { backgroundNice } from "./source/receiver.ts";
import type { LogLevel } from "./ops/config.ts";
import { type CollectorCounters, noCounters } from "./collector.ts";
import { WorkerPeer } from "./ops/worker_peer.ts";

/** Messages from the main thread to the centre's thread. */
export type ToCentre =
  | {
    readonly type: "start";
    readonly dir: string;
    readonly signals: SharedArrayBuffer;
    /** Index of this run's first record. */
    readonly from: number;
    readonly logLevel?: LogLevel;
    readonly nice: number;
  }
  | { readonly type: "drain"; readonly id: number; readonly until: number }
  | { readonly type: "close" };

/** Messages from the centre's thread. */
export type FromCentre =
  | { readonly type: "counters"; readonly counters: CollectorCounters }
  | { readonly type: "drained"; readonly id: number; readonly counters: CollectorCounters }
  | { readonly type: "closed"; readonly counters: CollectorCounters };

/** Options for {@link startCollectorThread}. */
export interface CollectorThreadOptions {
  readonly dir: string;
  readonly signals: SharedArrayBuffer;
  readonly from: number;
  readonly logLevel?: LogLevel;
  /** Called if the thread fails; the caller should stop and restart the collector. */
  readonly onFatal: (message: string) => void;
}

/** The main thread's stand-in for the centre's thread. */
export interface CollectorThread {
  /** What the thread last reported. */
  counters(): CollectorCounters;
  /** Resolves once every record before `until` is counted, or when `signal` aborts. */
  drain(until: number, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** Starts the centre's thread. */
export function startCollectorThread(options: CollectorThreadOptions): CollectorThread {
  let counters = noCounters();
  const peer: WorkerPeer<ToCentre, FromCentre> = new WorkerPeer({
    module: new URL("./collector_worker.ts", import.meta.url),
    name: "centre",
    onMessage: (message) => {
      counters = message.counters;
      if (message.type === "drained") peer.answer(message.id);
      else if (message.type === "closed") peer.finish();
    },
    onFatal: options.onFatal,
  });
  peer.post({
    type: "start",
    dir: options.dir,
    signals: options.signals,
    from: options.from,
    logLevel: options.logLevel,
    nice: backgroundNice(),
  });
  return {
    counters: () => counters,
    drain: (until, signal) => peer.request((id) => ({ type: "drain", id, until }), signal),
    close: () => peer.close({ type: "close" }),
  };
}
