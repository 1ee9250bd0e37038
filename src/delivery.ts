/**
 * Delivery from the centre to the sinks through the spool.
 *
 * Every batch of accepted events is appended to the spool first, then offered to each sink.
 * A sink that keeps up takes events straight from memory. A sink whose backend is away or
 * slow stops taking them once it holds `memoryLimit` events; from then on it is fed from the
 * spool's files, in order, as it confirms what it holds, until it has caught up with the
 * head again. After a restart every sink starts at its saved position, so whatever was
 * accepted and not yet confirmed is delivered again (at least once; PostgreSQL drops repeats
 * by event id).
 *
 * A sink's position moves with what it reports as settled (`written` + `dropped`, which it
 * counts in the order events were pushed), so a sink needs nothing of the spool.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { decodeDatagram } from "./datagram.ts";
import type { MiningEvent } from "./events.ts";
import { RateLimitedLog } from "./log.ts";
import type { Sink } from "./sink.ts";
import type { Spool, SpoolStats } from "./spool.ts";

const log = getLogger(["tbg", "delivery"]);

/** How often positions are moved and lagging sinks are fed from the spool. */
const TICK_MS = 20;

/** Where the centre hands accepted events, with the datagrams they came from. */
export interface EventOutlet {
  /** `datagrams[i]` is the datagram `events[i]` was decoded from. */
  accept(events: readonly MiningEvent[], datagrams: readonly Uint8Array[]): void;
}

/** Per-sink delivery counters. */
export interface SinkDeliveryStats {
  readonly name: string;
  /** Accepted events this sink has not confirmed yet (in memory or only in the spool). */
  readonly behind: number;
  /** Events this sink never got: evicted from a full spool, or unreadable in it. */
  readonly lost: number;
  /** Whether the sink is being fed from the spool's files rather than from memory. */
  readonly replaying: boolean;
}

/** What {@link Delivery.stats} reports. */
export interface DeliveryStats {
  readonly spool: SpoolStats;
  readonly sinks: readonly SinkDeliveryStats[];
}

/** Feeds one sink and moves its spool position. */
class SinkFeeder {
  readonly sink: Sink;
  readonly #spool: Spool;
  readonly #memoryLimit: number;
  /** Index of the next record to hand the sink. */
  #next: number;
  /** Spool position when this feeder started; the sink had settled nothing then. */
  readonly #start: number;
  /** Events handed to the sink so far. */
  #handed = 0;
  /** Indices skipped (unreadable, evicted) and how many events had been handed before each. */
  #gaps: { after: number; size: number }[] = [];
  #skippedSettled = 0;
  #lost = 0;
  readonly #losses = new RateLimitedLog(log);

  constructor(sink: Sink, spool: Spool, memoryLimit: number) {
    this.sink = sink;
    this.#spool = spool;
    this.#memoryLimit = memoryLimit;
    this.#start = spool.position(sink.name);
    this.#next = this.#start;
  }

  get replaying(): boolean {
    return this.#next < this.#spool.head;
  }

  get lost(): number {
    return this.#lost;
  }

  /** Hands the sink a batch straight from memory when it is caught up and has room. */
  offer(first: number, events: readonly MiningEvent[]): void {
    if (this.#next !== first || this.sink.stats().pending + events.length > this.#memoryLimit) {
      return;
    }
    this.sink.push(events);
    this.#next += events.length;
    this.#handed += events.length;
  }

  /** Moves the position to what the sink has settled, past any gap in front of it. */
  settle(): void {
    const stats = this.sink.stats();
    const settled = stats.written + stats.dropped;
    while (this.#gaps.length > 0 && this.#gaps[0].after <= settled) {
      this.#skippedSettled += this.#gaps.shift()!.size;
    }
    this.#spool.confirm(this.sink.name, this.#start + settled + this.#skippedSettled);
    if (this.#next < this.#spool.tail) {
      const lost = this.#spool.tail - this.#next;
      this.#skip(lost);
      this.#losses.error("{sink} lost {lost} events: the spool was full before it got them", {
        sink: this.sink.name,
        lost,
      });
    }
  }

  /** Index of the next record this sink needs. */
  get next(): number {
    return this.#next;
  }

  /** How many events it may be handed now, or 0 if it should not be fed from the spool yet. */
  replayRoom(): number {
    if (!this.replaying) return 0;
    const room = this.#memoryLimit - this.sink.stats().pending;
    return room < this.#memoryLimit / 2 ? 0 : room;
  }

  /** Hands the sink spooled events from {@link next} on; `undefined` marks one that no longer decodes. */
  replay(items: readonly (MiningEvent | undefined)[]): void {
    const events: MiningEvent[] = [];
    for (const item of items) {
      if (item !== undefined) {
        events.push(item);
        continue;
      }
      this.#flushEvents(events);
      this.#skip(1);
    }
    this.#flushEvents(events);
    if (!this.replaying) {
      log.info("{sink} has caught up with the spool", { sink: this.sink.name });
    }
  }

  #flushEvents(events: MiningEvent[]): void {
    if (events.length === 0) return;
    this.sink.push(events);
    this.#next += events.length;
    this.#handed += events.length;
    events.length = 0;
  }

  #skip(size: number): void {
    this.#gaps.push({ after: this.#handed, size });
    this.#next += size;
    this.#lost += size;
  }
}

/** The spool and one feeder per sink, behind the centre's {@link EventOutlet}. */
export class Delivery implements EventOutlet {
  readonly spool: Spool;
  readonly sinks: readonly Sink[];
  readonly #feeders: SinkFeeder[];
  #timer: ReturnType<typeof setInterval> | undefined;

  /**
   * @param memoryLimit events a sink may hold in memory before it is fed from the spool
   */
  constructor(spool: Spool, sinks: readonly Sink[], memoryLimit: number) {
    this.spool = spool;
    this.sinks = sinks;
    this.#feeders = sinks.map((sink) => new SinkFeeder(sink, spool, memoryLimit));
    for (const feeder of this.#feeders) {
      if (feeder.replaying) {
        log.info("{sink}: replaying {count} spooled events", {
          sink: feeder.sink.name,
          count: spool.head - spool.position(feeder.sink.name),
        });
      }
    }
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    this.#tick();
  }

  accept(events: readonly MiningEvent[], datagrams: readonly Uint8Array[]): void {
    if (events.length === 0) return;
    const first = this.spool.append(datagrams);
    for (const feeder of this.#feeders) feeder.offer(first, events);
  }

  /**
   * Resolves once every sink has confirmed every accepted event, or when `signal` aborts;
   * what is still unconfirmed then stays in the spool for the next start.
   */
  async flush(signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) {
      this.#tick();
      const waiting = this.#feeders.filter((feeder) =>
        feeder.replaying || feeder.sink.stats().pending > 0
      );
      if (waiting.length === 0) break;
      // A replaying sink needs its next chunk as soon as it drains the one it has.
      await Promise.all(waiting.map((feeder) => feeder.sink.flush(signal)));
    }
    this.#tick();
  }

  /** Stops feeding, closes the sinks and the spool (positions are saved). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#tick();
    await Promise.all(this.sinks.map((sink) => sink.close()));
    await this.spool.close();
  }

  stats(): DeliveryStats {
    const spool = this.spool.stats();
    return {
      spool,
      sinks: this.#feeders.map((feeder) => ({
        name: feeder.sink.name,
        behind: spool.behind[feeder.sink.name] ?? 0,
        lost: feeder.lost,
        replaying: feeder.replaying,
      })),
    };
  }

  /**
   * Moves every position, then feeds the sinks that are behind from the spool. Sinks behind
   * at the same place (both are, when the centre is the bottleneck) share one read and one
   * decode of each record.
   */
  #tick(): void {
    const groups = new Map<number, { room: number; feeders: SinkFeeder[] }>();
    for (const feeder of this.#feeders) {
      feeder.settle();
      const room = feeder.replayRoom();
      if (room === 0) continue;
      const group = groups.get(feeder.next);
      if (group) {
        group.room = Math.min(group.room, room);
        group.feeders.push(feeder);
      } else {
        groups.set(feeder.next, { room, feeders: [feeder] });
      }
    }
    for (const [from, { room, feeders }] of groups) {
      const items = this.spool.read(from, room).map((record) => {
        const decoded = decodeDatagram(record.bytes, false);
        if (decoded.ok) return decoded.event;
        // Only a damaged file or a stricter schema since the event was spooled gets here.
        log.error("spooled event {index} no longer decodes ({reason}); it is skipped", {
          index: record.index,
          reason: decoded.reason,
        });
        return undefined;
      });
      for (const feeder of feeders) feeder.replay(items);
    }
  }
}
