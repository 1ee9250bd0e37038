/**
 * The spool's writer: appends frames to the newest segment file, one `write(2)` each, and
 * starts a new segment when the current one is full. It runs on the receive thread, so a
 * datagram is in the page cache before anything else is done with it: a crash of the
 * collector after that loses nothing. After each frame it publishes the new head in the
 * spool's {@link SpoolSignals}, which wakes every reader.
 *
 * It only ever appends and never deletes: the main thread's {@link Spool} deletes segments
 * and syncs. A write that fails (disk full) keeps a copy of the frame and is tried again
 * before the next one (or on {@link SpoolWriter.retry}), so indices stay contiguous; readers
 * see the frame once it is written.
 *
 * @module
 */
import { frameCount } from "./frame.ts";
import { SpoolSignals } from "./signals.ts";

/** Options for {@link SpoolWriter}. */
export interface SpoolWriterOptions {
  readonly dir: string;
  /** Index the next record gets. */
  readonly head: number;
  /** A new segment is started once the current one has this many bytes. */
  readonly segmentBytes: number;
  /** `fsync` after every frame (`SPOOL_FSYNC_INTERVAL=0`). */
  readonly syncEveryFrame: boolean;
  /** The spool's {@link SpoolSignals} buffer. */
  readonly signals: SharedArrayBuffer;
}

/** The file name of the segment whose first record is `first`. */
export function segmentName(first: number): string {
  return `${String(first).padStart(16, "0")}.spool`;
}

/** A segment's file name, its first record's index captured. */
export const SEGMENT_FILE = /^([0-9]{16})\.spool$/;

/** Appends frames to the spool's segment files. */
export class SpoolWriter {
  readonly #dir: string;
  readonly #segmentBytes: number;
  readonly #syncEveryFrame: boolean;
  readonly #signals: SpoolSignals;
  #head: number;
  #file: Deno.FsFile | undefined;
  #segmentSize = 0;
  /** Frames not written yet, oldest first, with a copy of their bytes. */
  readonly #unwritten: { index: number; bytes: Uint8Array; count: number }[] = [];
  #lastError: Error | undefined;

  constructor(options: SpoolWriterOptions) {
    this.#dir = options.dir;
    this.#head = options.head;
    this.#segmentBytes = options.segmentBytes;
    this.#syncEveryFrame = options.syncEveryFrame;
    this.#signals = new SpoolSignals(options.signals);
  }

  /** Frames kept in memory because they could not be written. */
  get unwritten(): number {
    return this.#unwritten.length;
  }

  /** The last write error, until a write succeeds again. */
  get lastError(): Error | undefined {
    return this.#lastError;
  }

  /**
   * Appends one frame of `count` records, after any kept frame that can be written now. Its
   * bytes are not kept unless the write fails.
   */
  append(frame: Uint8Array, count: number): void {
    const index = this.#head;
    this.#head += count;
    this.retry();
    if (this.#unwritten.length === 0 && this.#tryWrite(index, frame)) return;
    this.#unwritten.push({ index, bytes: frame.slice(), count });
    this.#signals.publishUnwritten(this.#unwrittenRecords());
  }

  /** Writes the kept frames that can be written now, in order. */
  retry(): void {
    if (this.#unwritten.length === 0) return;
    while (this.#unwritten.length > 0) {
      const { index, bytes } = this.#unwritten[0];
      if (!this.#tryWrite(index, bytes)) break;
      this.#unwritten.shift();
    }
    this.#signals.publishUnwritten(this.#unwrittenRecords());
  }

  /** Closes the current segment file. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  #unwrittenRecords(): number {
    let records = 0;
    for (const frame of this.#unwritten) records += frame.count;
    return records;
  }

  #tryWrite(index: number, frame: Uint8Array): boolean {
    try {
      if (!this.#file || this.#segmentSize >= this.#segmentBytes) this.#startSegment(index);
      const offset = this.#segmentSize;
      try {
        let written = 0;
        while (written < frame.length) written += this.#file!.writeSync(frame.subarray(written));
        if (this.#syncEveryFrame) this.#file!.syncDataSync();
      } catch (error) {
        // A partial frame would hide every later one from a reader: cut it off again.
        this.#file!.truncateSync(offset);
        this.#file!.seekSync(offset, Deno.SeekMode.Start);
        throw error;
      }
      this.#segmentSize += frame.length;
      this.#lastError = undefined;
      this.#signals.publishHead(index + frameCount(frame));
      return true;
    } catch (error) {
      this.#lastError = error as Error;
      return false;
    }
  }

  #startSegment(first: number): void {
    const file = Deno.openSync(`${this.#dir}/${segmentName(first)}`, {
      write: true,
      create: true,
      truncate: true,
    });
    this.#file?.close();
    this.#file = file;
    this.#segmentSize = 0;
    if (this.#syncEveryFrame) syncDirectory(this.#dir);
  }
}

/** Makes a new file's directory entry durable (best effort: not every filesystem allows it). */
export function syncDirectory(dir: string): void {
  try {
    const handle = Deno.openSync(dir, { read: true });
    try {
      handle.syncSync();
    } finally {
      handle.close();
    }
  } catch {
    // fsync on a directory is refused by some filesystems; the data files are still synced.
  }
}
