/**
 * The spool's writer: appends frames to the newest segment file, one `write(2)` each, and
 * starts a new segment when the current one is full. It runs on the receive thread, so a
 * datagram is in the page cache before anything else is done with it: a crash of the
 * collector after that loses nothing.
 *
 * It only ever appends and never deletes: the main thread's {@link Spool} keeps the index of
 * what was written (from {@link FrameNote}s), serves reads, syncs, and deletes segments. A
 * write that fails (disk full) keeps a copy of the frame and is tried again before the next
 * one, so indices stay contiguous; the frame's bytes go to the main thread in memory meanwhile.
 *
 * @module
 */
import { frameCount } from "./spool_frame.ts";
import { SpoolSignals } from "./spool_signals.ts";

/** Where a written frame is. */
export interface FrameLocation {
  /** Index of the frame's first record. */
  readonly index: number;
  /** First index of the segment file holding it (its name). */
  readonly segment: number;
  /** Byte offset of the frame in that file. */
  readonly offset: number;
}

/** One appended frame, as the main thread's spool learns of it. */
export interface FrameNote {
  readonly index: number;
  readonly count: number;
  /** Bytes of the frame. */
  readonly bytes: number;
  /** Unset while the frame could not be written yet. */
  readonly location?: FrameLocation;
}

/**
 * What one append did, in order: the frames written late (they had failed before) and then
 * the frame appended. The main thread's spool applies them in this order.
 */
export type WriterStep =
  | { readonly kind: "frame"; readonly note: FrameNote }
  | { readonly kind: "late"; readonly location: FrameLocation };

/** Options for {@link SpoolWriter}. */
export interface SpoolWriterOptions {
  readonly dir: string;
  /** Index the next record gets. */
  readonly head: number;
  /** A new segment is started once the current one has this many bytes. */
  readonly segmentBytes: number;
  /** `fsync` after every frame (`SPOOL_FSYNC_INTERVAL=0`). */
  readonly syncEveryFrame: boolean;
  /** The spool's {@link SpoolSignals}: the head is published after every frame written. */
  readonly signals: SharedArrayBuffer;
}

/** The file name of the segment whose first record is `first`. */
export function segmentName(first: number): string {
  return `${String(first).padStart(16, "0")}.spool`;
}

/** Appends frames to the spool's segment files. */
export class SpoolWriter {
  readonly #dir: string;
  readonly #segmentBytes: number;
  readonly #syncEveryFrame: boolean;
  readonly #signals: SpoolSignals;
  #head: number;
  #file: Deno.FsFile | undefined;
  #segment = -1;
  #segmentSize = 0;
  /** Frames not written yet, oldest first, with a copy of their bytes. */
  readonly #unwritten: { index: number; bytes: Uint8Array }[] = [];
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
   * Appends one frame of `count` records (its bytes are not kept unless the write fails),
   * after any kept frame that can be written now, and says what went where, in order.
   */
  append(frame: Uint8Array, count: number): WriterStep[] {
    const steps = this.#retry();
    const index = this.#head;
    this.#head += count;
    if (this.#unwritten.length === 0) {
      const location = this.#tryWrite(index, frame);
      if (location) {
        steps.push({ kind: "frame", note: { index, count, bytes: frame.length, location } });
        return steps;
      }
    }
    this.#unwritten.push({ index, bytes: frame.slice() });
    steps.push({ kind: "frame", note: { index, count, bytes: frame.length } });
    return steps;
  }

  /** Closes the current segment file. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  #retry(): WriterStep[] {
    const steps: WriterStep[] = [];
    while (this.#unwritten.length > 0) {
      const { index, bytes } = this.#unwritten[0];
      const location = this.#tryWrite(index, bytes);
      if (!location) break;
      this.#unwritten.shift();
      steps.push({ kind: "late", location });
    }
    return steps;
  }

  #tryWrite(index: number, frame: Uint8Array): FrameLocation | undefined {
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
      return { index, segment: this.#segment, offset };
    } catch (error) {
      this.#lastError = error as Error;
      return undefined;
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
    this.#segment = first;
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
