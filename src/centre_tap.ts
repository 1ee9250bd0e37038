/**
 * The centre ({@link Collector}) on a sink's thread. That thread decodes every record it reads
 * anyway, so the centre counts the same decode instead of reading and decoding the spool once
 * more on a thread of its own.
 *
 * Design invariants:
 * - Every record from `from` (the first of this run) on is counted once, in spool order:
 *   records before `from` were counted by an earlier run, and a record the tap has counted
 *   is never counted again when the sink reads it later.
 * - Counting never waits for the sink. Where the sink is not about to read the next record
 *   to count (its backend is away and its memory full, or it is still replaying older
 *   records), {@link CentreTap.catchUp} reads and decodes it with a reader of the tap's own.
 *   That costs a second decode only while the sink lags.
 * - Records the spool lost before anyone read them are not counted: the receive thread
 *   counted them as received, and the sink counts them as lost.
 *
 * @module
 */
import { SpoolReader } from "./buffer/reader.ts";
import type { SpoolSignals } from "./buffer/signals.ts";
import type { SpoolRecord } from "./buffer/spool.ts";
import { Collector } from "./collector.ts";
import { decodeDatagram, type DecodeResult } from "./datagram.ts";

/** Most datagram bytes one {@link CentreTap.catchUp} reads, so that it never holds a thread long. */
const CATCH_UP_BYTES = 4 * 1024 * 1024;

/** The centre, counting what a sink's thread decodes; see the module's invariants. */
export class CentreTap {
  readonly collector = new Collector();
  readonly #dir: string;
  readonly #signals: SpoolSignals;
  #next: number;
  /** The tap's own cursor, for catching up; made when first needed. */
  #reader: SpoolReader | undefined;

  /**
   * @param dir the spool's directory
   * @param from index of this run's first record
   */
  constructor(dir: string, from: number, signals: SpoolSignals) {
    this.#dir = dir;
    this.#next = from;
    this.#signals = signals;
  }

  /** Index of the first record not counted yet. */
  get next(): number {
    return this.#next;
  }

  /** The sink's thread decoded `record` as `result`: counted if it was not yet. */
  decoded(record: SpoolRecord, result: DecodeResult): void {
    if (record.index < this.#next) return;
    // A record after `next`: the ones between were gone from the spool before anyone read them.
    this.#next = record.index + 1;
    this.collector.count(result, record.bytes.length);
  }

  /**
   * Counts, with a read of its own, records the sink will not read now: unless the sink's
   * next read starts at the next record to count (`sinkNext`) and the sink is reading
   * (`sinkReading`). Reads at most about 4 MiB per call; returns whether it left records to
   * count that the spool still has.
   */
  catchUp(sinkNext: number, sinkReading: boolean): boolean {
    if (this.#next >= this.#signals.head()) return false;
    if (sinkReading && sinkNext === this.#next) return false;
    const before = this.#next;
    this.#read(this.#signals.head());
    return this.#next > before && this.#next < this.#signals.head();
  }

  /** Counts every record before `until` (as far as the spool has them), reading them itself. */
  countUntil(until: number): void {
    while (this.#next < Math.min(until, this.#signals.head())) {
      const before = this.#next;
      this.#read(until);
      if (this.#next === before) return; // nothing left to read: the rest is gone
    }
  }

  close(): void {
    this.#reader?.close();
    this.#reader = undefined;
  }

  #read(until: number): void {
    if (this.#reader?.next !== this.#next) {
      this.#reader?.close();
      this.#reader = new SpoolReader(this.#dir, this.#next, this.#signals);
    }
    const reader = this.#reader;
    let bytes = 0;
    while (this.#next < until && reader.behind && bytes < CATCH_UP_BYTES) {
      const records = reader.read(until - this.#next, CATCH_UP_BYTES - bytes);
      if (records.length === 0) break;
      for (const record of records) {
        this.decoded(record, decodeDatagram(record.bytes, record.truncated));
        bytes += record.bytes.length;
      }
    }
    // Records past the last one read were gone: the reader went on after them.
    if (reader.next > this.#next) this.#next = Math.min(reader.next, until);
  }
}
