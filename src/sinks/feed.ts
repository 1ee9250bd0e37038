/**
 * Feeds one sink from the spool, on the sink's own thread: reads the records the receive
 * thread wrote, decodes them, pushes the valid ones with the position the read ended at, and
 * passes on to the spool's signals each position the sink acknowledges. Nothing of it runs
 * on the main thread.
 *
 * - The sink holds about `memoryLimitBytes` of datagrams at most (the events it took and has
 *   not acknowledged, counted by the size of their records, give or take one frame); the
 *   feed reads on when it has room for half of that again, so a sink whose backend is away
 *   costs memory only up to the limit, and catches up from the files, in order, when it is
 *   back.
 * - Every read is pushed, events or not, so the position the sink acknowledges passes the
 *   records that are not events (invalid datagrams, or records a full spool deleted before
 *   this sink got them, which count as lost) as soon as everything before them is settled.
 * - A record `decode` refuses was counted when it was received; here it is only passed.
 *
 * @module
 */
import { decodeDatagram } from "../datagram.ts";
import { sleep } from "./backoff.ts";
import type { MiningEvent } from "../events.ts";
import type { Acknowledge, Sink } from "../sink.ts";
import { followSpool } from "../buffer/follow.ts";
import type { SpoolReader } from "../buffer/reader.ts";
import type { SpoolRecord } from "../buffer/spool.ts";
import type { SpoolSignals } from "../buffer/signals.ts";
import type { CentreTap } from "../centre_tap.ts";

/**
 * Longest the feed waits on the spool's head before it looks around again. Whatever else it
 * must see wakes it (`SpoolSignals.wakeReaders`): a message from the main thread, a close,
 * room freed by an acknowledgement. So an idle thread sleeps.
 */
const IDLE_MS = 1_000;
/** How often a drain looks again while the feed has not read as far as it waits for. */
const DRAIN_POLL_MS = 5;

/** Options for {@link SinkFeed}. */
export interface SinkFeedOptions {
  /** Makes the sink, which acknowledges through the function it is given. */
  readonly sink: (acknowledge: Acknowledge) => Sink;
  /** Positioned at the sink's saved position. */
  readonly reader: SpoolReader;
  readonly signals: SpoolSignals;
  /** This sink's slot in the signals. */
  readonly readerIndex: number;
  /** Datagram bytes the sink may hold before the feed stops reading. */
  readonly memoryLimitBytes: number;
  /**
   * After a read that left nothing behind, how long the feed waits before it reads again, so
   * that records arriving one by one are taken a few at a time: every wake-up of a thread
   * costs more than a record. It is added to the latency of the records it gathers.
   */
  readonly lingerMs: number;
  /** The centre, when this thread hosts it: it counts every record this feed decodes. */
  readonly tap?: CentreTap;
}

/** What a feed reports besides its sink's stats. */
export interface FeedStats {
  /** Records before this are confirmed (or passed). */
  readonly position: number;
  /** Records this sink never got: deleted from a full spool, or damaged in it. */
  readonly lost: number;
  /** Whether written records wait that the feed has not read. */
  readonly behind: boolean;
  /** Datagram bytes of the events the sink holds. */
  readonly heldBytes: number;
}

/** Reads the spool into one sink until closed. */
export class SinkFeed {
  readonly #sink: Sink;
  readonly #reader: SpoolReader;
  readonly #signals: SpoolSignals;
  readonly #readerIndex: number;
  readonly #memoryLimitBytes: number;
  readonly #tap: CentreTap | undefined;
  /** Bytes of the events pushed and not acknowledged, by push: released once `end` is. */
  readonly #held: { end: number; bytes: number }[] = [];
  #heldBytes = 0;
  #position: number;
  #lost = 0;
  #running = true;
  readonly #loop: Promise<void>;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(options: SinkFeedOptions) {
    this.#reader = options.reader;
    this.#signals = options.signals;
    this.#readerIndex = options.readerIndex;
    this.#memoryLimitBytes = options.memoryLimitBytes;
    this.#tap = options.tap;
    this.#position = this.#reader.next;
    this.#signals.ack(this.#readerIndex, this.#position);
    this.#sink = options.sink((position) => this.#acknowledged(position));
    // Waits on the signals do not keep the thread's event loop alive; this does.
    this.#timer = setInterval(() => {}, 1_000);
    this.#loop = followSpool({
      reader: this.#reader,
      signals: this.#signals,
      idleMs: IDLE_MS,
      lingerMs: options.lingerMs,
      running: () => this.#running,
      look: () => this.#tap?.catchUp(this.#reader.next, this.#room() > 0) ?? false,
      room: () => this.#room(),
      take: (records, from) => this.#feed(records, from),
    });
  }

  /** The sink this feed made and feeds. */
  get sink(): Sink {
    return this.#sink;
  }

  stats(): FeedStats {
    return {
      position: this.#position,
      lost: this.#lost,
      behind: this.#reader.behind,
      heldBytes: this.#heldBytes,
    };
  }

  /**
   * Resolves once every record before `until` is confirmed, or when `signal` aborts (then
   * the rest stays in the spool). The sink is asked to write what it holds at once.
   */
  async drain(until: number, signal?: AbortSignal): Promise<void> {
    while (this.#running && !signal?.aborted) {
      if (this.#position >= until) return;
      await this.#sink.flush(signal);
      if (this.#position >= until || signal?.aborted) return;
      // The feed has not read that far yet: it reads as soon as the sink has room.
      await sleep(DRAIN_POLL_MS, signal);
    }
  }

  /** Stops reading and closes the sink and the reader; the position is acknowledged last. */
  async close(): Promise<void> {
    this.#running = false;
    this.#signals.wakeReaders();
    clearInterval(this.#timer);
    await this.#loop;
    await this.#sink.close();
    this.#reader.close();
  }

  /** Bytes of records the feed may read now: none until half the limit is free again. */
  #room(): number {
    const room = this.#memoryLimitBytes - this.#heldBytes;
    return room < this.#memoryLimitBytes / 2 ? 0 : room;
  }

  /** Pushes the events among records read from `from` on, with where the read ended. */
  #feed(records: readonly SpoolRecord[], from: number): void {
    const events: MiningEvent[] = [];
    let expected = from;
    let bytes = 0;
    for (const record of records) {
      if (record.index > expected) this.#lost += record.index - expected;
      expected = record.index + 1;
      const decoded = decodeDatagram(record.bytes, record.truncated);
      this.#tap?.decoded(record, decoded);
      if (decoded.ok) {
        events.push(decoded.event);
        bytes += record.bytes.length;
      }
    }
    const end = this.#reader.next;
    if (end > expected) this.#lost += end - expected;
    // Held first: the sink may acknowledge within the push.
    this.#held.push({ end, bytes });
    this.#heldBytes += bytes;
    this.#sink.push(events, end);
  }

  /** The sink acknowledged `position`: passes it on and releases what it held before it. */
  #acknowledged(position: number): void {
    const full = this.#room() === 0;
    while (this.#held.length > 0 && this.#held[0].end <= position) {
      this.#heldBytes -= this.#held.shift()!.bytes;
    }
    this.#position = position;
    this.#signals.ack(this.#readerIndex, position);
    // The loop waits on the head while the sink is full.
    if (full && this.#room() > 0) this.#signals.wakeReaders();
  }
}
