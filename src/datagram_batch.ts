/**
 * What the centre gets from the receive thread: a run of consecutive spool records (the
 * datagrams of one or more receives, valid or not), and a count of the datagrams the receive
 * thread refused because of their sender, which are never spooled.
 *
 * @module
 */
import type { SpoolRecord } from "./spool.ts";

/** Datagrams of one hand-over, already in the spool. */
export interface DatagramBatch {
  /** Spool index of the first record. */
  readonly first: number;
  /** Records in the batch. */
  readonly count: number;
  /**
   * The records in arrival order: from the hand-over's memory, or read back from the spool
   * when the main thread was too far behind to be handed them in memory. Fewer than `count`
   * only if the spool lost some (evicted, damaged) before the centre got to them.
   */
  records(): readonly SpoolRecord[];
  /** Datagrams dropped, not spooled, because their sender's uid is not allowed. */
  readonly refusedSenders: number;
  /** uid of the last refused datagram; -1 if none, or if it came without credentials. */
  readonly lastRefusedUid: number;
  /** pid of the last refused datagram's sender; -1 if unknown, 0 if not visible to us. */
  readonly lastRefusedPid: number;
  /** Called once the batch has been ingested, to free the memory that held it. */
  readonly settle?: () => void;
}
