/**
 * Pushes events into a sink as the feed does, for tests that drive a sink directly: each
 * event stands for one spool record, so every push ends that many records further on.
 *
 * @module
 */
import type { MiningEvent } from "../../src/events.ts";
import type { Sink } from "../../src/sink.ts";

const ends = new WeakMap<Sink, number>();

/** Pushes `events` into `sink`; returns the position the push ends at. */
export function pushEvents(sink: Sink, events: readonly MiningEvent[]): number {
  const end = (ends.get(sink) ?? 0) + events.length;
  ends.set(sink, end);
  sink.push(events, end);
  return end;
}
