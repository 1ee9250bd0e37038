/**
 * A spool with its writer in the same thread, for tests of what the spool does with frames
 * (the collector's writer is on the receive thread).
 */
import { type Spool } from "../../src/spool.ts";
import { encodeFrame, type FrameRecord } from "../../src/spool_frame.ts";
import { SpoolWriter } from "../../src/spool_writer.ts";

/** A spool that can be appended to here. */
export type WritableSpool = Spool & {
  /** Appends `records` as one frame and returns the index of the first. */
  append(records: readonly (Uint8Array | FrameRecord)[]): number;
};

/** Gives `spool` a writer of its own; closing the spool closes the writer first. */
export function writable(spool: Spool): WritableSpool {
  const writer = new SpoolWriter(spool.writerOptions());
  const close = spool.close.bind(spool);
  return Object.assign(spool, {
    append(records: readonly (Uint8Array | FrameRecord)[]): number {
      const first = spool.head;
      if (records.length === 0) return first;
      const frame = encodeFrame(records);
      spool.apply(writer.append(frame, records.length), frame, writer.lastError?.message);
      return first;
    },
    close: async () => {
      writer.close();
      await close();
    },
  });
}
