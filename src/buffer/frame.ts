/**
 * The one record format of the collector: a frame holds the datagrams of one receive, each
 * behind its length, and is checked by CRC-32. The receive thread builds frames in place as
 * it copies datagrams out of the receive slots and writes each to the spool with one
 * `write(2)`; every other thread reads them from there.
 *
 * Frame: magic, record count, payload bytes, CRC-32 of the payload (4 bytes each, little
 * endian), then per record a 4-byte header (length; the top bit marks a datagram cut to its
 * receive slot) and the datagram.
 *
 * @module
 */
import { crc32 } from "node:zlib";

const MAGIC = 0x53474254; // "TBGS", little-endian
/** Bytes before a frame's first record. */
export const FRAME_HEADER_BYTES = 16;
const RECORD_HEADER_BYTES = 4;
const TRUNCATED = 0x8000_0000;

/** One record of a frame. */
export interface FrameRecord {
  readonly bytes: Uint8Array;
  /** The datagram did not fit its receive slot and was cut. */
  readonly truncated: boolean;
}

/**
 * Builds frames back to back in one growing buffer: records are copied in once, and a
 * finished frame is a view of the buffer, ready to be written as it is.
 */
export class FrameBuilder {
  #bytes = new Uint8Array(64 * 1024);
  #view = new DataView(this.#bytes.buffer);
  #length = 0;
  /** Where the open frame starts, or -1 with none open. */
  #frameStart = -1;
  #frameCount = 0;

  /** Bytes of finished frames (and of the open one). */
  get byteLength(): number {
    return this.#length;
  }

  /** Copies one record into the open frame, opening one if needed. */
  append(bytes: Uint8Array, truncated = false): void {
    if (this.#frameStart < 0) {
      this.#reserve(FRAME_HEADER_BYTES);
      this.#frameStart = this.#length;
      this.#length += FRAME_HEADER_BYTES;
    }
    this.#reserve(RECORD_HEADER_BYTES + bytes.length);
    this.#view.setUint32(this.#length, bytes.length | (truncated ? TRUNCATED : 0), true);
    this.#bytes.set(bytes, this.#length + RECORD_HEADER_BYTES);
    this.#length += RECORD_HEADER_BYTES + bytes.length;
    this.#frameCount++;
  }

  /**
   * Closes the open frame (header and CRC filled in) and returns a view of it, valid until
   * the next {@link take} or {@link clear}; `undefined` if no record was appended.
   */
  finishFrame(): { readonly bytes: Uint8Array; readonly count: number } | undefined {
    if (this.#frameStart < 0) return undefined;
    const start = this.#frameStart;
    const payloadBytes = this.#length - start - FRAME_HEADER_BYTES;
    const payload = this.#bytes.subarray(start + FRAME_HEADER_BYTES, this.#length);
    this.#view.setUint32(start, MAGIC, true);
    this.#view.setUint32(start + 4, this.#frameCount, true);
    this.#view.setUint32(start + 8, payloadBytes, true);
    this.#view.setUint32(start + 12, crc32(payload), true);
    const frame = { bytes: this.#bytes.subarray(start, this.#length), count: this.#frameCount };
    this.#frameStart = -1;
    this.#frameCount = 0;
    return frame;
  }

  /** The finished frames so far, in a buffer of their own; the builder starts empty again. */
  take(): ArrayBuffer {
    const buffer = this.#bytes.buffer.slice(0, this.#length);
    this.clear();
    return buffer;
  }

  /** Starts empty again, keeping the buffer for the next frames. */
  clear(): void {
    this.#length = 0;
    this.#frameStart = -1;
    this.#frameCount = 0;
  }

  #reserve(more: number): void {
    const needed = this.#length + more;
    if (needed <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(needed, this.#bytes.length * 2));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
    this.#view = new DataView(grown.buffer);
  }
}

/** Encodes records as one frame. */
export function encodeFrame(records: readonly (Uint8Array | FrameRecord)[]): Uint8Array {
  const builder = new FrameBuilder();
  for (const record of records) {
    if (record instanceof Uint8Array) builder.append(record);
    else builder.append(record.bytes, record.truncated);
  }
  builder.finishFrame();
  return new Uint8Array(builder.take());
}

/** Bytes a frame takes in all, read from its header; 0 if `bytes` does not start one. */
export function frameLength(bytes: Uint8Array, offset = 0): number {
  if (offset + FRAME_HEADER_BYTES > bytes.length) return 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, FRAME_HEADER_BYTES);
  if (view.getUint32(0, true) !== MAGIC) return 0;
  return FRAME_HEADER_BYTES + view.getUint32(8, true);
}

/** Records in a frame, read from its header (0 if `bytes` does not start one). */
export function frameCount(bytes: Uint8Array, offset = 0): number {
  if (frameLength(bytes, offset) === 0) return 0;
  return new DataView(bytes.buffer, bytes.byteOffset + offset + 4, 4).getUint32(0, true);
}

/** The records of a whole frame, or `undefined` if it is cut short or damaged. */
export function decodeFrame(frame: Uint8Array): FrameRecord[] | undefined {
  const length = frameLength(frame);
  if (length === 0 || frame.length < length) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const count = view.getUint32(4, true);
  const payload = frame.subarray(FRAME_HEADER_BYTES, length);
  if (crc32(payload) !== view.getUint32(12, true)) return undefined;
  const records: FrameRecord[] = [];
  let offset = 0;
  while (offset < payload.length) {
    if (offset + RECORD_HEADER_BYTES > payload.length) return undefined;
    const header = view.getUint32(FRAME_HEADER_BYTES + offset, true);
    const size = header & ~TRUNCATED;
    const start = offset + RECORD_HEADER_BYTES;
    if (start + size > payload.length) return undefined;
    records.push({ bytes: payload.subarray(start, start + size), truncated: header >= TRUNCATED });
    offset = start + size;
  }
  return records.length === count ? records : undefined;
}
