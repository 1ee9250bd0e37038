/** Batches as the centre gets them from the receive thread, built in memory for tests. */
import type { DatagramBatch } from "../../src/datagram_batch.ts";
import type { FrameRecord } from "../../src/spool_frame.ts";

/** A batch of `records`, spooled from index `first` on, none refused. */
export function batchOf(records: readonly FrameRecord[], first = 0): DatagramBatch {
  return {
    first,
    count: records.length,
    refusedSenders: 0,
    lastRefusedUid: -1,
    lastRefusedPid: -1,
    records: () => records.map((record, i) => ({ index: first + i, ...record })),
  };
}
