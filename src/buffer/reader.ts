/**
 * Reads the spool's records in order, straight from the segment files, on any thread: a
 * sink's thread reads what the receive thread has just written (from the page cache), or,
 * when its backend was away, further back. It needs nothing from the main thread but the
 * {@link SpoolSignals}: how far the files go, and where they start.
 *
 * Records the files no longer hold (deleted from a full spool, or in a damaged frame) are
 * skipped; the index jump in what {@link SpoolReader.read} returns shows them.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { RateLimitedLog } from "../ops/log.ts";
import type { SpoolRecord } from "./spool.ts";
import { decodeFrame, FRAME_HEADER_BYTES, frameCount, frameLength } from "./frame.ts";
import type { SpoolSignals } from "./signals.ts";
import { SEGMENT_FILE, segmentName } from "./writer.ts";

const log = getLogger(["tbg", "spool"]);

/** Bytes a reader asks of a segment file at once, so that one system call reads many frames. */
const CHUNK_BYTES = 256 * 1024;

/** First indices of the segment files in `dir`, oldest first. */
function segmentFirsts(dir: string): number[] {
  const firsts: number[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const match = SEGMENT_FILE.exec(entry.name);
    if (entry.isFile && match) firsts.push(Number(match[1]));
  }
  return firsts.sort((a, b) => a - b);
}

/** One reader's cursor over the spool. */
export class SpoolReader {
  readonly #dir: string;
  readonly #signals: SpoolSignals;
  #next: number;
  #file: Deno.FsFile | undefined;
  /** Byte offset of the next frame in the open file. */
  #offset = 0;
  /** Records of the frame at `#offset` that were read already. */
  #skip = 0;
  /** Where the open file's own position is, so that reading on needs no seek. */
  #filePosition = 0;
  /**
   * The open file's bytes from {@link #chunkStart} on, as far as one read found them: many
   * frames per system call. The files only grow, so what it holds stays true.
   */
  #chunk = new Uint8Array(CHUNK_BYTES);
  #chunkStart = 0;
  #chunkLength = 0;
  /** Records taken in this read whose bytes are still views of the chunk. */
  readonly #pending: SpoolRecord[] = [];
  /** What this read returns, once copied out of the chunk. */
  #out: SpoolRecord[] = [];
  readonly #damage = new RateLimitedLog(log);

  /** A cursor at record `position`. */
  constructor(dir: string, position: number, signals: SpoolSignals) {
    this.#dir = dir;
    this.#next = position;
    this.#signals = signals;
  }

  /** Index of the next record to read. */
  get next(): number {
    return this.#next;
  }

  /** Whether records are written that this reader has not read. */
  get behind(): boolean {
    return this.#next < this.#signals.head();
  }

  /**
   * The records from {@link next} on that are written, at most `maxRecords` and about
   * `maxBytes`; an index jump among them (or before the first) marks records that are gone.
   * Their bytes are views of one copy made for this call, so they stay valid after it.
   */
  read(maxRecords: number, maxBytes = 4 * 1024 * 1024): SpoolRecord[] {
    const head = this.#signals.head();
    let taken = 0;
    let bytes = 0;
    while (this.#next < head && taken < maxRecords && bytes < maxBytes) {
      const tail = this.#signals.tail();
      if (this.#next < tail) this.#jump(tail);
      if (!this.#file && !this.#open()) break;
      const header = this.#bytesAt(this.#offset, FRAME_HEADER_BYTES);
      if (header === undefined) {
        // The writer went on in a new segment, named by the index it starts at.
        this.#closeFile();
        if (!this.#open()) break;
        continue;
      }
      const length = frameLength(header);
      if (length === 0) {
        this.#damaged("a frame header is damaged; the rest of the segment is skipped");
        this.#skipSegment();
        continue;
      }
      const count = frameCount(header);
      const frame = this.#bytesAt(this.#offset, length);
      const records = frame === undefined ? undefined : decodeFrame(frame);
      if (!records || records.length !== count) {
        this.#damaged(`a frame of ${count} records is damaged and skipped`);
        this.#next += count - this.#skip;
        this.#frameDone(length);
        continue;
      }
      const take = Math.min(count - this.#skip, maxRecords - taken);
      for (let i = 0; i < take; i++) {
        const record = records[this.#skip + i];
        this.#pending.push({
          index: this.#next + i,
          bytes: record.bytes,
          truncated: record.truncated,
        });
        bytes += record.bytes.length;
      }
      taken += take;
      this.#next += take;
      if (this.#skip + take < count) this.#skip += take;
      else this.#frameDone(length);
    }
    this.#copyOut();
    const out = this.#out;
    this.#out = [];
    return out;
  }

  /** Closes the open segment file. */
  close(): void {
    this.#closeFile();
  }

  #frameDone(length: number): void {
    this.#offset += length;
    this.#skip = 0;
  }

  #jump(to: number): void {
    this.#closeFile();
    this.#next = to;
  }

  /** Opens the segment holding {@link next} and finds its frame; false if there is none yet. */
  #open(): boolean {
    const firsts = segmentFirsts(this.#dir);
    let first = -1;
    for (const candidate of firsts) if (candidate <= this.#next) first = candidate;
    if (first < 0) {
      // Deleted before this reader got to it: the oldest left is where it goes on.
      if (firsts.length === 0 || firsts[0] >= this.#signals.head()) return false;
      first = firsts[0];
      this.#next = first;
    }
    try {
      this.#file = Deno.openSync(`${this.#dir}/${segmentName(first)}`, { read: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false; // deleted meanwhile
      throw error;
    }
    this.#offset = 0;
    this.#filePosition = 0;
    this.#chunkLength = 0;
    let index = first;
    while (true) {
      const header = this.#bytesAt(this.#offset, FRAME_HEADER_BYTES);
      if (header === undefined) break;
      const length = frameLength(header);
      if (length === 0) break;
      const count = frameCount(header);
      if (index + count > this.#next) break;
      index += count;
      this.#offset += length;
    }
    // A frame cut short at a crash ends the segment; the next one starts after it.
    this.#skip = this.#next - index;
    return true;
  }

  #skipSegment(): void {
    this.#closeFile();
    const later = segmentFirsts(this.#dir).find((first) => first > this.#next);
    this.#next = later ?? this.#signals.head();
  }

  #damaged(what: string): void {
    this.#damage.error("spool in {dir}: {what}", { dir: this.#dir, what });
  }

  /**
   * The `length` bytes of the open file at `offset`, as a view of the chunk (read again from
   * there if it does not hold them), or undefined when the file is shorter.
   */
  #bytesAt(offset: number, length: number): Uint8Array | undefined {
    const start = offset - this.#chunkStart;
    if (start < 0 || start + length > this.#chunkLength) {
      // The chunk is about to change: records taken from it so far get a copy of their own.
      this.#copyOut();
      if (length > this.#chunk.length) this.#chunk = new Uint8Array(length);
      this.#chunkStart = offset;
      this.#chunkLength = this.#readInto(offset, this.#chunk, length);
      if (this.#chunkLength < length) return undefined;
      return this.#chunk.subarray(0, length);
    }
    return this.#chunk.subarray(start, start + length);
  }

  /** Copies the pending records out of the chunk, into one buffer for all of them. */
  #copyOut(): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    const from = pending[0].bytes.byteOffset;
    const last = pending[pending.length - 1].bytes;
    const copy = this.#chunk.slice(from, last.byteOffset + last.length);
    for (const record of pending) {
      const at = record.bytes.byteOffset - from;
      this.#out.push({
        index: record.index,
        bytes: copy.subarray(at, at + record.bytes.length),
        truncated: record.truncated,
      });
    }
    pending.length = 0;
  }

  /**
   * Reads into `target` from `offset` on until it holds at least `least` bytes, it is full,
   * or the file ends; returns the bytes read.
   */
  #readInto(offset: number, target: Uint8Array, least: number): number {
    const file = this.#file!;
    if (this.#filePosition !== offset) file.seekSync(offset, Deno.SeekMode.Start);
    let read = 0;
    while (read < least) {
      const n = file.readSync(target.subarray(read));
      if (n === null || n === 0) break;
      read += n;
    }
    this.#filePosition = offset + read;
    return read;
  }

  #closeFile(): void {
    this.#copyOut();
    this.#file?.close();
    this.#file = undefined;
    this.#offset = 0;
    this.#skip = 0;
    this.#chunkStart = 0;
    this.#chunkLength = 0;
  }
}
