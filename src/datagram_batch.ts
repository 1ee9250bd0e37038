/**
 * The hand-over format between the receive thread and the collector's centre: datagrams
 * copied into one transferable buffer, each behind an 8-byte header (length, flags).
 *
 * @module
 */

/** Flag bit: the datagram did not fit its receive slot and was cut. */
export const FLAG_TRUNCATED = 1;

const HEADER_BYTES = 8;

/** Datagrams received by one system call, ready to be transferred to another thread. */
export interface DatagramBatch {
  readonly buffer: ArrayBuffer;
  readonly count: number;
}

/** A datagram as it arrived on the socket. */
export interface RawDatagram {
  readonly bytes: Uint8Array;
  readonly truncated: boolean;
}

/** Copies datagrams into one new buffer. */
export function packDatagrams(datagrams: readonly RawDatagram[]): DatagramBatch {
  let size = 0;
  for (const datagram of datagrams) size += HEADER_BYTES + datagram.bytes.length;
  const buffer = new ArrayBuffer(size);
  const view = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  let offset = 0;
  for (const datagram of datagrams) {
    view.setUint32(offset, datagram.bytes.length, true);
    view.setUint32(offset + 4, datagram.truncated ? FLAG_TRUNCATED : 0, true);
    bytes.set(datagram.bytes, offset + HEADER_BYTES);
    offset += HEADER_BYTES + datagram.bytes.length;
  }
  return { buffer, count: datagrams.length };
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
