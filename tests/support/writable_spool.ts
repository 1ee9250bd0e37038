/**
 * A spool with its writer in the same thread, for tests of what the spool does with frames
 * (the collector's writer is on the receive thread). Each append also has the ledger look at
 * the files at once, as its timer would a moment later.
 */
import { type Spool } from "../../src/buffer/spool.ts";
import { encodeFrame, type FrameRecord } from "../../src/buffer/frame.ts";
import { SpoolWriter } from "../../src/buffer/writer.ts";

/** A spool that can be appended to here. */
export type WritableSpool = Spool & {
  /** Appends `records` as one frame and returns the index of the first. */
  append(records: readonly (Uint8Array | FrameRecord)[]): number;
};

/** Gives `spool` a writer of its own; closing the spool closes the writer first. */
export function writable(spool: Spool): WritableSpool & { readonly writer: SpoolWriter } {
  const writer = new SpoolWriter(spool.writerOptions());
  const close = spool.close.bind(spool);
  return Object.assign(spool, {
    writer,
    append(records: readonly (Uint8Array | FrameRecord)[]): number {
      const first = spool.head;
      if (records.length === 0) return first;
      writer.append(encodeFrame(records), records.length);
      spool.refresh();
      return first;
    },
    close: async () => {
      writer.close();
      await close();
    },
  });
}
