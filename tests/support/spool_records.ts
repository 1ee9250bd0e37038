/** Records as the centre reads them from the spool, built in memory for tests. */
import type { SpoolRecord } from "../../src/buffer/spool.ts";
import type { FrameRecord } from "../../src/buffer/frame.ts";

/** `records` as spooled from index `first` on. */
export function recordsOf(records: readonly FrameRecord[], first = 0): SpoolRecord[] {
  return records.map((record, i) => ({ index: first + i, ...record }));
}

/** A datagram's bytes: `value` as JSON, or a string as it is. */
export const encode = (value: unknown): Uint8Array =>
  new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value));

/** A valid `share_submitted` event numbered `seq` by one emitter. */
export const share = (seq: number) => ({
  event: "share_submitted",
  ts: 1708617600 + seq,
  source: "hosted",
  seq,
  emitter: "00aa",
  data: { user: "tb1q", worker: "w", sdiff: seq, accepted: true },
});
