/** Records as the centre reads them from the spool, built in memory for tests. */
import type { SpoolRecord } from "../../src/buffer/spool.ts";
import type { FrameRecord } from "../../src/buffer/frame.ts";

/** `records` as spooled from index `first` on. */
export function recordsOf(records: readonly FrameRecord[], first = 0): SpoolRecord[] {
  return records.map((record, i) => ({ index: first + i, ...record }));
}
