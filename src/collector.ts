/**
 * The collector's centre: takes batches of spooled datagrams, validates them, counts what it
 * sees and hands the valid events, with their spool indices, to an outlet (the sinks behind
 * the spool). It knows nothing of any backend.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { DatagramBatch } from "./datagram_batch.ts";
import { decodeDatagram, REJECT_REASONS, type RejectReason } from "./datagram.ts";
import type { MiningEvent } from "./events.ts";
import { RateLimitedLog } from "./log.ts";
import { SeqTracker } from "./seq_tracker.ts";

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

/** Longest stretch the centre works through queued batches before letting sink I/O run. */
const SLICE_MS = 10;

/** Distinct event types counted by name; more are counted under `other`. */
const MAX_COUNTED_TYPES = 64;

/** What the centre has seen so far. */
export interface CollectorCounters {
  /** Datagrams taken off the socket. */
  readonly received: number;
  /** Datagrams that became events. */
  readonly accepted: number;
  /** Rejected datagrams, by reason. */
  readonly invalid: Readonly<Record<RejectReason, number>>;
  /** Accepted events, by type. */
  readonly byType: Readonly<Record<string, number>>;
  /** Events the emitters numbered that never arrived. */
  readonly lost: number;
  /** Emitter restarts seen in `seq`. */
  readonly emitterRestarts: number;
}

/** Validates datagrams and hands the valid ones on. */
export class Collector {
  readonly #outlet: EventOutlet;
  readonly #seq = new SeqTracker();
  readonly #invalidLog = new RateLimitedLog(getLogger(["tbg", "collector"]));
  #received = 0;
  #accepted = 0;
  readonly #invalid = Object.fromEntries(REJECT_REASONS.map((reason) => [reason, 0])) as Record<
    RejectReason,
    number
  >;
  readonly #byType = new Map<string, number>();
  #inbox: DatagramBatch[] = [];
  #scheduled: ReturnType<typeof setTimeout> | undefined;

  constructor(outlet: EventOutlet) {
    this.#outlet = outlet;
  }

  /**
   * Queues a batch from the receive thread and returns at once. Queued batches are worked
   * through in slices of {@link SLICE_MS}, each a task of its own, so the sinks' socket I/O
   * gets its turn even while batches keep arriving faster than one slice can take them.
   */
  enqueue(batch: DatagramBatch): void {
    this.#inbox.push(batch);
    this.#scheduled ??= setTimeout(() => this.#work(), 0);
  }

  /** Works through every queued batch now (used when stopping). */
  drain(): void {
    clearTimeout(this.#scheduled);
    this.#scheduled = undefined;
    const inbox = this.#inbox;
    this.#inbox = [];
    for (const batch of inbox) this.ingestBatch(batch);
  }

  #work(): void {
    this.#scheduled = undefined;
    const deadline = performance.now() + SLICE_MS;
    let taken = 0;
    while (taken < this.#inbox.length && performance.now() < deadline) {
      this.ingestBatch(this.#inbox[taken++]);
    }
    this.#inbox = this.#inbox.slice(taken);
    if (this.#inbox.length > 0) this.#scheduled = setTimeout(() => this.#work(), 0);
  }

  /** Processes one batch from the receive thread. */
  ingestBatch(batch: DatagramBatch): void {
    if (batch.refusedSenders > 0) this.#refuseSenders(batch);
    this.#acceptEach(batch);
    batch.settle?.();
  }

  /** Decodes every datagram of `batch` and hands the valid ones on together. */
  #acceptEach(batch: DatagramBatch): void {
    if (batch.count === 0) return;
    const events: MiningEvent[] = [];
    const indices: number[] = [];
    for (const record of batch.records()) {
      if (record.damaged) continue;
      const event = this.#decode(record.bytes, record.truncated);
      if (!event) continue;
      events.push(event);
      indices.push(record.index);
    }
    this.#outlet.accept({ first: batch.first, count: batch.count, events, indices });
  }

  /** Counts the datagrams the receive thread dropped because of their sender's uid. */
  #refuseSenders(batch: DatagramBatch): void {
    this.#received += batch.refusedSenders;
    this.#invalid.unauthorized_sender += batch.refusedSenders;
    this.#invalidLog.warn(
      "refused {count} datagrams from a uid not in ALLOWED_SENDER_UIDS " +
        "(last: uid {uid}, pid {pid})",
      {
        reason: "unauthorized_sender",
        count: batch.refusedSenders,
        uid: batch.lastRefusedUid,
        pid: batch.lastRefusedPid,
      },
    );
  }

  counters(): CollectorCounters {
    return {
      received: this.#received,
      accepted: this.#accepted,
      invalid: { ...this.#invalid },
      byType: Object.fromEntries(this.#byType),
      lost: this.#seq.lost,
      emitterRestarts: this.#seq.restarts,
    };
  }

  #decode(bytes: Uint8Array, truncated: boolean): MiningEvent | undefined {
    this.#received++;
    const result = decodeDatagram(bytes, truncated);
    if (!result.ok) {
      this.#invalid[result.reason]++;
      this.#invalidLog.warn("rejected a datagram ({reason}): {detail}", {
        reason: result.reason,
        detail: result.detail,
        bytes: bytes.length,
      });
      return undefined;
    }
    const event = result.event;
    this.#accepted++;
    const type = this.#byType.has(event.event) || this.#byType.size < MAX_COUNTED_TYPES
      ? event.event
      : "other";
    this.#byType.set(type, (this.#byType.get(type) ?? 0) + 1);
    if (event.seq !== undefined) this.#seq.observe(event.emitter ?? event.source, event.seq);
    return event;
  }
}
