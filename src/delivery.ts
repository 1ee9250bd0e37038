/**
 * Delivery from the centre to the sinks through the spool.
 *
 * Every datagram is in the spool before the centre sees it (the receive thread puts it
 * there); the centre hands each run of records on with the events that were valid in it,
 * and the run is offered to each sink. A sink that keeps up takes events straight from memory. A sink whose backend is away or
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

/** A run of consecutive spool records, as the centre hands it on. */
export interface AcceptedRun {
  /** Spool index of the run's first record. */
  readonly first: number;
  /** Records in the run, valid or not. */
  readonly count: number;
  /** The valid ones, in order... */
  readonly events: readonly MiningEvent[];
  /** ...and the spool index of each: `indices[i]` is the record `events[i]` came from. */
  readonly indices: readonly number[];
}

/** Where the centre hands what it validated. */
export interface EventOutlet {
  /** Runs come in spool order, each starting where the one before ended. */
  accept(run: AcceptedRun): void;
}

/** A spooled record read back for a sink that is behind. */
type ReplayItem = MiningEvent | "invalid" | "lost";

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

  /** Index after the last record the centre handed on: the sink is fed no further. */
  readonly #acceptedHead: () => number;

  constructor(sink: Sink, spool: Spool, memoryLimit: number, acceptedHead: () => number) {
    this.sink = sink;
    this.#spool = spool;
    this.#memoryLimit = memoryLimit;
    this.#acceptedHead = acceptedHead;
    this.#start = spool.position(sink.name);
    this.#next = this.#start;
  }

  get replaying(): boolean {
    return this.#next < this.#acceptedHead();
  }

  get lost(): number {
    return this.#lost;
  }

  /** Hands the sink a run straight from memory when it is caught up and has room. */
  offer(run: AcceptedRun): void {
    const { first, count, events, indices } = run;
    if (this.#next !== first || this.sink.stats().pending + events.length > this.#memoryLimit) {
      return;
    }
    // Invalid records are gaps the position passes once the events before them are settled.
    let expected = first;
    for (let i = 0; i < indices.length; i++) {
      if (indices[i] > expected) {
        this.#gaps.push({ after: this.#handed + i, size: indices[i] - expected });
      }
      expected = indices[i] + 1;
    }
    if (first + count > expected) {
      this.#gaps.push({ after: this.#handed + events.length, size: first + count - expected });
    }
    if (events.length > 0) this.sink.push(events);
    this.#next = first + count;
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
      this.#skip(lost, true);
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

  /** Hands the sink the spooled records from {@link next} on. */
  replay(items: readonly ReplayItem[]): void {
    const events: MiningEvent[] = [];
    for (const item of items) {
      if (typeof item === "object") {
        events.push(item);
        continue;
      }
      this.#flushEvents(events);
      this.#skip(1, item === "lost");
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

  #skip(size: number, lost: boolean): void {
    this.#gaps.push({ after: this.#handed, size });
    this.#next += size;
    if (lost) this.#lost += size;
  }
}

/** The spool and one feeder per sink, behind the centre's {@link EventOutlet}. */
export class Delivery implements EventOutlet {
  readonly spool: Spool;
  readonly sinks: readonly Sink[];
  readonly #feeders: SinkFeeder[];
  /** Index after the last record the centre handed on (or that a previous run left). */
  #acceptedHead: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  /**
   * @param memoryLimit events a sink may hold in memory before it is fed from the spool
   */
  constructor(spool: Spool, sinks: readonly Sink[], memoryLimit: number) {
    this.spool = spool;
    this.sinks = sinks;
    this.#acceptedHead = spool.head;
    this.#feeders = sinks.map((sink) =>
      new SinkFeeder(sink, spool, memoryLimit, () => this.#acceptedHead)
    );
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

  accept(run: AcceptedRun): void {
    if (run.count === 0) return;
    if (run.first !== this.#acceptedHead) {
      throw new Error(`records from ${run.first} handed on where ${this.#acceptedHead} was due`);
    }
    this.#acceptedHead = run.first + run.count;
    for (const feeder of this.#feeders) feeder.offer(run);
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
      const records = this.spool.read(from, Math.min(room, this.#acceptedHead - from));
      const items = records.map((record): ReplayItem => {
        if (record.damaged) return "lost";
        const decoded = decodeDatagram(record.bytes, record.truncated);
        // Counted as invalid when it was received.
        return decoded.ok ? decoded.event : "invalid";
      });
      for (const feeder of feeders) feeder.replay(items);
    }
  }
}
