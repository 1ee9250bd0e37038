/**
 * What the receive thread counts, in shared memory the main thread reads whenever it likes:
 * datagrams taken off the socket, and those refused for their sender (never spooled), with
 * the last refused sender's uid and pid for the log.
 *
 * @module
 */

const RECEIVED = 0;
const REFUSED = 1;
const LAST_REFUSED_UID = 2;
const LAST_REFUSED_PID = 3;
const SLOTS = 4;

/** A snapshot of {@link ReceiveCounters}. */
export interface ReceiveCounts {
  /** Datagrams taken off the socket, refused ones included. */
  readonly received: number;
  /** Datagrams dropped because their sender's uid is not allowed. */
  readonly refused: number;
  /** uid of the last refused datagram; -1 if none, or if it came without credentials. */
  readonly lastRefusedUid: number;
  /** pid of the last refused datagram's sender; -1 if unknown, 0 if not visible to us. */
  readonly lastRefusedPid: number;
}

/** Counters with one writer (the receive thread) and any number of readers. */
export class ReceiveCounters {
  /** Pass this to the receive thread and wrap it there again. */
  readonly buffer: SharedArrayBuffer;
  readonly #slots: Float64Array;

  /** New counters, or the ones behind `buffer` made on another thread. */
  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(8 * SLOTS);
    this.#slots = new Float64Array(this.buffer);
    if (!buffer) {
      this.#slots[LAST_REFUSED_UID] = -1;
      this.#slots[LAST_REFUSED_PID] = -1;
    }
  }

  /** Receive thread: counts `received` datagrams, `refused` of them with the last sender. */
  add(received: number, refused: number, lastUid: number, lastPid: number): void {
    this.#slots[RECEIVED] += received;
    if (refused === 0) return;
    this.#slots[REFUSED] += refused;
    this.#slots[LAST_REFUSED_UID] = lastUid;
    this.#slots[LAST_REFUSED_PID] = lastPid;
  }

  read(): ReceiveCounts {
    return {
      received: this.#slots[RECEIVED],
      refused: this.#slots[REFUSED],
      lastRefusedUid: this.#slots[LAST_REFUSED_UID],
      lastRefusedPid: this.#slots[LAST_REFUSED_PID],
    };
  }
}
