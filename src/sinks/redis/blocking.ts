/**
 * The Redis sink as one blocking loop on its own thread, reading the spool itself: it waits
 * on the spool's head, reads a batch of records, writes their commands (`request.ts`: from
 * the datagrams' bytes, without decoding the plain ones) as one pipeline, reads the replies
 * and acknowledges the position Redis confirmed, all with blocking calls
 * (`blocking_connection.ts`). At a few events per wake-up the wake-ups are most of what the
 * sink costs, so none goes through the event loop; records that come one by one are gathered
 * before the spool has them (the receive thread waits a moment after a receive that emptied
 * the socket's queue), not here.
 *
 * Design invariants:
 * - One pipeline is in flight at a time, and events reach Redis in spool order.
 * - The position acknowledged is that of the first record whose event Redis has not confirmed
 *   (every record before it is confirmed, not an event, or lost); it is what the sink
 *   acknowledges, not a count that stands for it.
 * - The sink holds at most two batches, each of at most `maxBatch` events and about half of
 *   `memoryLimitBytes` of datagrams: the one in flight and the next, read and encoded
 *   while Redis works on the first. A failed batch is kept, less what Redis
 *   confirmed, and sent again after a back-off, before the next; while Redis is away the rest
 *   waits in the spool.
 * - The thread returns to its event loop when the main thread has posted it a message
 *   (`called`: its `drain`, `abort` and `close` are served there), once a drain is reached,
 *   for every back-off, and otherwise once every {@link SLICE_MS}: an idle thread sleeps on
 *   the spool's head, not on a timer. The loop posts its stats itself (`report`), as the event
 *   loop's timer does not run while it works. A call blocked in I/O gives up within 50 ms
 *   once the main thread closes the thread.
 * - Delivery is at-least-once, as with the event-loop sink (`sink.ts`): a batch cut by a lost
 *   connection is sent again from its first unconfirmed event.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { redactUrl } from "../../ops/config.ts";
import { Histogram } from "../../ops/metrics.ts";
import { Backoff, sleep } from "../backoff.ts";
import type { SinkThreadStats, SpoolSink, SpoolSinkPlace } from "../thread.ts";
import { BlockingRespConnection } from "./blocking_connection.ts";
import { RequestBuilder } from "./request.ts";
import type { RedisSinkOptions } from "./sink.ts";

/**
 * Longest the loop keeps its thread from the event loop when nothing calls it there: what
 * the event loop still does on its own (a closed-thread check, the stats timer) can wait.
 */
const SLICE_MS = 1_000;
/** Largest batch read at once, in datagram bytes (about: whole frames are read). */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;

/** Events read from the spool and not yet confirmed, with where their records are. */
interface Batch {
  /** The datagram of each event. */
  events: Uint8Array[];
  /** Spool index of each event's record. */
  indices: number[];
  /** Runs of records that were gone from the spool, before {@link end}. */
  gaps: { at: number; size: number }[];
  /** Index after the batch's last record: the position once every event is confirmed. */
  readonly end: number;
  /** Datagram bytes of its events. */
  bytes: number;
  /** Its events' commands, written when it was read (again after a partial confirmation). */
  request: RequestBuilder;
  /** Whether {@link request} still holds events Redis has confirmed since. */
  stale: boolean;
}

/** The Redis sink's blocking loop (plain TCP); see the module's invariants. */
export class BlockingRedisSink implements SpoolSink {
  readonly #log = getLogger(["tbg", "redis"]);
  readonly #options: RedisSinkOptions;
  readonly #place: SpoolSinkPlace;
  readonly #url: string;
  readonly #maxBatch: number;
  readonly #maxBytes: number;
  readonly #connectTimeoutMs: number;
  readonly #writeTimeoutMs: number;
  /** One request buffer per batch that can be held: the one in flight and the one read ahead. */
  readonly #builders: RequestBuilder[];
  // Capped low: a refused connection costs nothing, and the sink must be writing again well
  // within a second of Redis's return.
  readonly #backoff = new Backoff(25, 250);
  readonly #writeLatency = new Histogram();
  readonly #closed = new AbortController();
  readonly #channel = new MessageChannel();
  #connection: BlockingRespConnection | undefined;
  /**
   * Read and not yet confirmed, oldest first, at most two: the first is the one written (or
   * to be written again after a failure, less what was confirmed), the second was read ahead.
   */
  #batches: Batch[] = [];
  /** When the first batch's pipeline was written, while its replies are not taken. */
  #sentAt: number | undefined;
  #position: number;
  #written = 0;
  #retried = 0;
  #lost = 0;
  #failing = false;
  #drains: { until: number; signal?: AbortSignal; resolve: () => void }[] = [];
  readonly #loop: Promise<void>;

  constructor(options: RedisSinkOptions, place: SpoolSinkPlace) {
    this.#options = options;
    this.#place = place;
    this.#url = redactUrl(options.url);
    this.#maxBatch = options.maxBatch ?? 5000;
    this.#maxBytes = Math.min(place.memoryLimitBytes / 2, MAX_BATCH_BYTES);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 3_000;
    this.#writeTimeoutMs = options.writeTimeoutMs ?? 15_000;
    this.#builders = [0, 1].map(() => new RequestBuilder(options.streamMaxLen));
    this.#position = place.reader.next;
    place.signals.ack(place.readerIndex, this.#position);
    this.#loop = this.#run();
  }

  stats(): SinkThreadStats {
    return {
      written: this.#written,
      retried: this.#retried,
      dropped: 0, // Redis refuses no event for its data
      pending: this.#batches.reduce((sum, batch) => sum + batch.events.length, 0),
      up: !this.#failing,
      writeLatency: this.#writeLatency,
      position: this.#position,
      lost: this.#lost,
      behind: this.#place.reader.behind,
      heldBytes: this.#batches.reduce((sum, batch) => sum + batch.bytes, 0),
    };
  }

  drain(until: number, signal?: AbortSignal): Promise<void> {
    if (this.#position >= until || this.#stopping() || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.#drains.push({ until, signal, resolve });
      signal?.addEventListener("abort", () => this.#settleDrains(), { once: true });
    });
  }

  async close(): Promise<void> {
    this.#closed.abort();
    await this.#loop;
    this.#connection?.close();
    this.#place.reader.close();
    this.#channel.port1.close();
  }

  #stopping(): boolean {
    return this.#closed.signal.aborted || this.#place.closing();
  }

  async #run(): Promise<void> {
    while (!this.#stopping()) {
      const pause = this.#work(performance.now() + SLICE_MS);
      this.#settleDrains();
      this.#place.report();
      if (pause > 0) await sleep(pause, this.#closed.signal);
      else await this.#yield();
    }
    this.#settleDrains();
  }

  /**
   * One task boundary, without a timer's clamping: one message to itself. It lets the main
   * thread's messages in, not the thread's timers (so the loop posts its stats itself).
   */
  #yield(): Promise<void> {
    return new Promise((resolve) => {
      this.#channel.port1.onmessage = () => resolve();
      this.#channel.port2.postMessage(0);
    });
  }

  /**
   * Reads and delivers until `until`; returns how long to back off after a failed write, or
   * 0. A pipeline written just before the slice ends has its replies taken in the next one.
   */
  #work(until: number): number {
    const { reader, signals } = this.#place;
    const batches = this.#batches;
    while (!this.#stopping() && !this.#place.called()) {
      // A drain resolves in the event loop: the loop goes there once one is reached.
      if (this.#drains.some((drain) => this.#position >= drain.until)) return 0;
      // The next batch is read and encoded while Redis works on the one in flight.
      if (batches.length < 2 && reader.next < signals.head()) batches.push(this.#read());
      if (this.#sentAt !== undefined) {
        const failure = this.#settle(batches[0]);
        if (failure !== undefined) return this.#failed(failure);
        // Where the stats change: a loop that never blocks still posts them.
        this.#place.report();
        continue;
      }
      if (batches.length === 0) {
        const head = signals.head();
        if (reader.next < head) continue;
        const left = until - performance.now();
        if (left <= 0) return 0;
        // Stats the interval held back are posted when it ends, not when the wait does.
        signals.blockForHead(head, Math.min(left, this.#place.report()));
        continue;
      }
      const failure = this.#write(batches[0]);
      if (failure !== undefined) return this.#failed(failure);
      if (performance.now() >= until) return 0;
    }
    return 0;
  }

  /**
   * The next batch of records, its commands written; records that are not events are
   * passed over.
   */
  #read(): Batch {
    const reader = this.#place.reader;
    let expected = reader.next;
    const records = reader.read(this.#maxBatch, this.#maxBytes);
    const request = this.#builders.find((builder) =>
      this.#batches.every((batch) => batch.request !== builder)
    )!;
    const batch: Batch = {
      events: [],
      indices: [],
      gaps: [],
      end: reader.next,
      bytes: 0,
      request,
      stale: false,
    };
    request.clear();
    for (const record of records) {
      if (record.index > expected) batch.gaps.push({ at: expected, size: record.index - expected });
      expected = record.index + 1;
      // Refused datagrams were counted when they were received; here they are only passed.
      if (!request.addDatagram(record.bytes, record.truncated, batch.events.length)) continue;
      batch.events.push(record.bytes);
      batch.indices.push(record.index);
      batch.bytes += record.bytes.length;
    }
    if (batch.end > expected) batch.gaps.push({ at: expected, size: batch.end - expected });
    return batch;
  }

  /** Writes the commands of the batch's events again, after Redis confirmed some of them. */
  #rebuild(batch: Batch): void {
    batch.request.clear();
    for (let i = 0; i < batch.events.length; i++) {
      batch.request.addDatagram(batch.events[i], false, i);
    }
    batch.stale = false;
  }

  /**
   * Writes the batch's pipeline (connecting first if need be), or acknowledges it at once if
   * it holds no event; returns the failure, if any.
   */
  #write(batch: Batch): unknown {
    if (batch.events.length === 0) {
      this.#confirm(batch, 0);
      this.#batches.shift();
      return undefined;
    }
    try {
      if (this.#connection === undefined || this.#connection.broken) {
        this.#connection = BlockingRespConnection.connect(
          this.#options.url,
          this.#connectTimeoutMs,
          () => this.#place.closing(),
        );
        this.#log.info("connected to {url}", { url: this.#url });
      }
      if (batch.stale) this.#rebuild(batch);
      const request = batch.request;
      this.#connection.write(request.bytes(), request.commands, this.#writeTimeoutMs);
      this.#sentAt = performance.now();
      return undefined;
    } catch (error) {
      return error;
    }
  }

  /**
   * Takes the replies of the batch's pipeline and acknowledges what Redis confirmed; returns
   * the failure, if any (the batch is then kept, less what was confirmed).
   */
  #settle(batch: Batch): unknown {
    const sentAt = this.#sentAt!;
    this.#sentAt = undefined;
    try {
      const { failedAt, error } = this.#connection!.replies();
      if (failedAt >= 0) {
        this.#confirm(batch, batch.request.owner(failedAt));
        return error;
      }
    } catch (error) {
      return error;
    }
    this.#writeLatency.observe((performance.now() - sentAt) / 1000);
    this.#confirm(batch, batch.events.length);
    this.#batches.shift();
    this.#recovered();
    return undefined;
  }

  /** Redis confirmed the batch's first `count` events: acknowledges where they end. */
  #confirm(batch: Batch, count: number): void {
    const whole = count >= batch.events.length;
    const position = whole ? batch.end : batch.indices[count];
    while (batch.gaps.length > 0 && batch.gaps[0].at < position) {
      this.#lost += batch.gaps.shift()!.size;
    }
    this.#written += count;
    if (!whole && count > 0) {
      batch.events = batch.events.slice(count);
      batch.indices = batch.indices.slice(count);
      batch.stale = true;
    }
    if (position !== this.#position) {
      this.#position = position;
      this.#place.signals.ack(this.#place.readerIndex, position);
    }
  }

  #recovered(): void {
    if (this.#failing) {
      this.#log.info("writing again; {pending} events waiting", {
        pending: this.#place.signals.head() - this.#position,
      });
    }
    this.#failing = false;
    this.#backoff.reset();
  }

  /** Counts a failed write and returns the back-off before the next. */
  #failed(error: unknown): number {
    this.#retried++;
    const delay = this.#backoff.next();
    if (!this.#failing && !this.#stopping()) {
      this.#log.warn(
        "write to {url} failed, {pending} events kept, retrying in {delay} ms: {error}",
        {
          url: this.#url,
          pending: this.#place.signals.head() - this.#position,
          delay,
          error: error instanceof Error ? error.message : String(error),
        },
      );
    }
    this.#failing = true;
    return delay;
  }

  #settleDrains(): void {
    if (this.#drains.length === 0) return;
    const stopping = this.#stopping();
    this.#drains = this.#drains.filter((drain) => {
      if (!stopping && this.#position < drain.until && !drain.signal?.aborted) return true;
      drain.resolve();
      return false;
    });
  }
}
