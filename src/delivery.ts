/**
 * Delivery from the spool to the sinks, as the main thread sees it: every sink runs on a
 * thread of its own and reads the spool there (`sinks/thread.ts`, `sinks/feed.ts`); this
 * moves each sink's saved position to what it acknowledged, drains the sinks at a stop, and
 * reports. After a restart every sink starts at its saved position, so whatever was received
 * and not yet confirmed is delivered again (at least once; PostgreSQL drops repeats by event
 * id).
 *
 * @module
 */
import type { SinkThread } from "./sinks/thread.ts";
import type { Spool, SpoolStats } from "./buffer/spool.ts";

/**
 * How often acknowledged positions are taken into the spool: as often as the spool saves
 * positions and syncs by default, so a spool segment is deleted at most that late.
 */
const TICK_MS = 250;

/** Per-sink delivery counters. */
export interface SinkDeliveryStats {
  readonly name: string;
  /** Records this sink has not confirmed yet (in memory or only in the spool). */
  readonly behind: number;
  /** Events this sink never got: evicted from a full spool, or unreadable in it. */
  readonly lost: number;
  /** Whether written records wait that the sink's thread has not read yet. */
  readonly replaying: boolean;
}

/** What {@link Delivery.stats} reports. */
export interface DeliveryStats {
  readonly spool: SpoolStats;
  readonly sinks: readonly SinkDeliveryStats[];
}

/** The spool and the sink threads that read it. */
export class Delivery {
  readonly spool: Spool;
  readonly sinks: readonly SinkThread[];
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(spool: Spool, sinks: readonly SinkThread[]) {
    this.spool = spool;
    this.sinks = sinks;
    this.#timer = setInterval(() => this.#takeAcks(), TICK_MS);
  }

  /**
   * Resolves once every sink has confirmed every record written so far, or when `signal`
   * aborts; what is still unconfirmed then stays in the spool for the next start.
   */
  async flush(signal?: AbortSignal): Promise<void> {
    const until = this.spool.signals.head();
    await Promise.all(this.sinks.map((sink) => sink.drain(until, signal)));
    this.#takeAcks();
  }

  /** Stops the sink threads and closes the spool (positions are saved). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#takeAcks();
    await Promise.all(this.sinks.map((sink) => sink.close()));
    this.#takeAcks();
    await this.spool.close();
  }

  stats(): DeliveryStats {
    this.#takeAcks();
    const spool = this.spool.stats();
    return {
      spool,
      sinks: this.sinks.map((sink) => {
        const stats = sink.stats();
        return {
          name: sink.name,
          behind: spool.behind[sink.name] ?? 0,
          lost: stats.lost,
          replaying: stats.behind,
        };
      }),
    };
  }

  #takeAcks(): void {
    for (const sink of this.sinks) {
      const acked = this.spool.signals.acked(this.spool.readerIndex(sink.name));
      this.spool.confirm(sink.name, acked);
    }
  }
}
