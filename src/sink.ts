/**
 * The one interface between the collector's centre and a backend.
 *
 * A sink owns its buffering and retries: `push` never waits on the backend, so a slow or
 * absent backend cannot stall the receive path. Adding a backend means adding one module
 * that implements this interface.
 *
 * @module
 */
import type { MiningEvent } from "./events.ts";
import type { Histogram, HistogramSnapshot } from "./ops/metrics.ts";

/**
 * Called by a sink with a spool position once every event pushed with an `end` up to it is
 * settled (written, or refused for its data): the position the sink acknowledges to the spool.
 * Positions only grow.
 */
export type Acknowledge = (position: number) => void;

/** Counters a sink reports for the stats line and the metrics. */
export interface SinkStats {
  /**
   * Events the backend has confirmed, including repeats of events it already held (a sink
   * that stores by event id counts those as written without storing them again).
   */
  readonly written: number;
  /** Write attempts that failed and were tried again. */
  readonly retried: number;
  /** Events accepted by the sink and not yet confirmed by the backend. */
  readonly pending: number;
  /**
   * Events refused for their data: ones the backend rejects (e.g. a value out of range) or
   * cannot store (a `ts` out of its range). A sink takes everything pushed, so none are
   * dropped for lack of room; bounding memory is the delivery layer's job.
   */
  readonly dropped: number;
  /**
   * Whether the backend is taking writes: false from a failed write attempt until the next
   * one succeeds. True before the first attempt, since nothing is known to be wrong then (a
   * sink connects only when it has something to write).
   */
  readonly up: boolean;
  /**
   * Seconds per successful write round trip (one Redis pipeline, one SQL transaction); a
   * sink on another thread reports the snapshot it last sent.
   */
  readonly writeLatency: Histogram | HistogramSnapshot;
}

/** A destination for validated events. */
export interface Sink {
  /** Short name used in logs and stats, e.g. `redis`. */
  readonly name: string;
  /**
   * Takes events in spool order; returns at once. `end` is the spool position after the last
   * record they were read from (records that are not events included), which the sink
   * acknowledges once these events and every event pushed before them are settled; a push
   * without events is acknowledged as soon as everything before it is.
   */
  push(events: readonly MiningEvent[], end: number): void;
  /**
   * Resolves once every event pushed before the call is confirmed by the backend, or when
   * `signal` aborts (then some may still be pending: see {@link SinkStats.pending}).
   */
  flush(signal?: AbortSignal): Promise<void>;
  /** Stops background work and releases connections; call after {@link flush}. */
  close(): Promise<void>;
  stats(): SinkStats;
}
