/**
 * A sink that keeps what it is given, for testing the collector's centre.
 *
 * @module
 */
import type { MiningEvent } from "../../src/events.ts";
import { Histogram } from "../../src/metrics.ts";
import type { EventOutlet } from "../../src/collector.ts";
import type { Sink, SinkStats } from "../../src/sink.ts";

/** Records every pushed event; `flush` and `close` do nothing. */
export class RecordingSink implements Sink {
  readonly name: string;
  readonly events: MiningEvent[] = [];
  readonly writeLatency = new Histogram();
  pushes = 0;

  constructor(name = "recording") {
    this.name = name;
  }

  push(events: readonly MiningEvent[]): void {
    this.pushes++;
    this.events.push(...events);
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  stats(): SinkStats {
    return {
      written: this.events.length,
      retried: 0,
      pending: 0,
      dropped: 0,
      up: true,
      writeLatency: this.writeLatency,
    };
  }
}

/** An outlet that pushes straight to sinks, for testing the centre without a spool. */
export function pushTo(sinks: readonly Sink[]): EventOutlet {
  return {
    accept({ events }) {
      if (events.length === 0) return;
      for (const sink of sinks) sink.push(events);
    },
  };
}
