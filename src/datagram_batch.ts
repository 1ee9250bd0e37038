/**
 * The hand-over format between the receive thread and the collector's centre: datagrams
 * copied into one transferable buffer, each behind an 8-byte header (length, flags), and a
 * count of the datagrams the receive thread refused because of their sender.
 *
 * @module
 */

/** Flag bit: the datagram did not fit its receive slot and was cut. */
const FLAG_TRUNCATED = 1;

const HEADER_BYTES = 8;

/** Datagrams received by one system call, ready to be transferred to another thread. */
export interface DatagramBatch {
  readonly buffer: ArrayBuffer;
  /** Datagrams in `buffer`. */
  readonly count: number;
  /** Datagrams dropped, not copied, because their sender's uid is not allowed. */
  readonly refusedSenders: number;
  /** uid of the last refused datagram; -1 if none, or if it came without credentials. */
  readonly lastRefusedUid: number;
  /** pid of the last refused datagram's sender; -1 if unknown, 0 if not visible to us. */
  readonly lastRefusedPid: number;
  /** Called once the batch has been ingested, to free what held it (memory or a file). */
  readonly settle?: () => void;
}

/**
 * Gathers datagrams into one growing buffer, so the receive thread can hand over many
 * system calls' worth at once.
 */
export class DatagramBatchBuilder {
  #bytes = new Uint8Array(64 * 1024);
  #view = new DataView(this.#bytes.buffer);
  #length = 0;
  #count = 0;
  #refused = 0;
  #lastRefusedUid = -1;
  #lastRefusedPid = -1;

  /** Datagrams appended since the last {@link take}. */
  get count(): number {
    return this.#count;
  }

  /** Nothing appended nor refused since the last {@link take}. */
  get empty(): boolean {
    return this.#count === 0 && this.#refused === 0;
  }

  get byteLength(): number {
    return this.#length;
  }

  /** Copies one datagram in. */
  append(bytes: Uint8Array, truncated: boolean): void {
    const needed = this.#length + HEADER_BYTES + bytes.length;
    if (needed > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(needed, this.#bytes.length * 2));
      grown.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = grown;
      this.#view = new DataView(grown.buffer);
    }
    this.#view.setUint32(this.#length, bytes.length, true);
    this.#view.setUint32(this.#length + 4, truncated ? FLAG_TRUNCATED : 0, true);
    this.#bytes.set(bytes, this.#length + HEADER_BYTES);
    this.#length = needed;
    this.#count++;
  }

  /** Counts one datagram dropped for its sender, instead of copying it. */
  refuse(uid: number, pid: number): void {
    this.#refused++;
    this.#lastRefusedUid = uid;
    this.#lastRefusedPid = pid;
  }

  /** The batch so far, in a buffer of its own; the builder starts empty again. */
  take(): DatagramBatch {
    const batch = {
      buffer: this.#bytes.buffer.slice(0, this.#length),
      count: this.#count,
      refusedSenders: this.#refused,
      lastRefusedUid: this.#lastRefusedUid,
      lastRefusedPid: this.#lastRefusedPid,
    };
    this.#length = 0;
    this.#count = 0;
    this.#refused = 0;
    this.#lastRefusedUid = -1;
    this.#lastRefusedPid = -1;
    return batch;
  }
}

/** Datagrams in a batch's buffer, counted by walking their headers. */
export function countDatagrams(buffer: ArrayBuffer): number {
  const view = new DataView(buffer);
  let count = 0;
  for (
    let at = 0;
    at + HEADER_BYTES <= buffer.byteLength;
    at += HEADER_BYTES + view.getUint32(at, true)
  ) {
    count++;
  }
  return count;
}

/** Calls `visit` for each datagram of a batch, in arrival order. */
export function forEachDatagram(
  batch: DatagramBatch,
  visit: (bytes: Uint8Array, truncated: boolean) => void,
): void {
  const view = new DataView(batch.buffer);
  let offset = 0;
  for (let i = 0; i < batch.count; i++) {
    const length = view.getUint32(offset, true);
    const flags = view.getUint32(offset + 4, true);
    const start = offset + HEADER_BYTES;
    visit(new Uint8Array(batch.buffer, start, length), (flags & FLAG_TRUNCATED) !== 0);
    offset = start + length;
  }
}
