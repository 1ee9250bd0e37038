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
 * Counters a sink reports for the stats line. `written + dropped` also tells the delivery
 * layer how far the sink has got, so together they must count the pushed events from the
 * first, in push order: an event is counted only once every event pushed before it is.
 */
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
  /** Takes events in arrival order; returns at once. */
  push(events: readonly MiningEvent[]): void;
  /**
   * Resolves once every event pushed before the call is confirmed by the backend, or when
   * `signal` aborts (then some may still be pending: see {@link SinkStats.pending}).
   */
  flush(signal?: AbortSignal): Promise<void>;
  /** Stops background work and releases connections; call after {@link flush}. */
  close(): Promise<void>;
  stats(): SinkStats;
}
