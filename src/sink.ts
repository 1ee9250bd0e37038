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

/** Counters a sink reports for the stats line. */
export interface SinkStats {
  /** Events the backend has confirmed. */
  readonly written: number;
  /** Write attempts that failed and were tried again. */
  readonly retried: number;
  /** Events accepted by the sink and not yet confirmed by the backend. */
  readonly pending: number;
  /** Events refused because the sink's buffer was full. */
  readonly dropped: number;
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
