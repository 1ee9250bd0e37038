/**
 * What the threads around the spool tell each other through shared memory, without a
 * message per frame: the writer publishes how far the files go, the main thread where the
 * oldest kept record is, and each reader (a sink's thread) how far its sink has confirmed.
 *
 * Every slot is a 64-bit record index with one writer. A reader that has read everything
 * waits on {@link SpoolSignals.waitForHead} (or blocks in {@link SpoolSignals.blockForHead}),
 * which the writer's {@link SpoolSignals.publishHead} wakes; so does
 * {@link SpoolSignals.wakeReaders}, for anything else a waiting reader must see.
 *
 * @module
 */

const HEAD = 0;
const TAIL = 1;
const UNWRITTEN = 2;
const ACKS = 3;

/** Shared indices of one spool. */
export class SpoolSignals {
  /** Pass this to another thread and wrap it there again. */
  readonly buffer: SharedArrayBuffer;
  readonly #slots: BigInt64Array;

  /** A new set for `readers` readers, or the one behind `buffer` made on another thread. */
  constructor(readers: number | SharedArrayBuffer) {
    this.buffer = typeof readers === "number"
      ? new SharedArrayBuffer(8 * (ACKS + readers))
      : readers;
    this.#slots = new BigInt64Array(this.buffer);
  }

  /** Index after the last record written to the files. */
  head(): number {
    return Number(Atomics.load(this.#slots, HEAD));
  }

  /** Writer: records up to `head` are in the files; wakes every waiting reader. */
  publishHead(head: number): void {
    Atomics.store(this.#slots, HEAD, BigInt(head));
    Atomics.notify(this.#slots, HEAD);
  }

  /** Index of the oldest record the files still hold. */
  tail(): number {
    return Number(Atomics.load(this.#slots, TAIL));
  }

  /** Main thread: records before `tail` were deleted. */
  publishTail(tail: number): void {
    Atomics.store(this.#slots, TAIL, BigInt(tail));
  }

  /** Records the writer holds in memory because it could not write them (yet). */
  unwritten(): number {
    return Number(Atomics.load(this.#slots, UNWRITTEN));
  }

  /** Writer: how many records it holds in memory, unwritten. */
  publishUnwritten(records: number): void {
    Atomics.store(this.#slots, UNWRITTEN, BigInt(records));
  }

  /** Reader `reader`: every record before `position` is confirmed (or passed). */
  ack(reader: number, position: number): void {
    Atomics.store(this.#slots, ACKS + reader, BigInt(position));
  }

  /** The last position reader `reader` acknowledged. */
  acked(reader: number): number {
    return Number(Atomics.load(this.#slots, ACKS + reader));
  }

  /**
   * Wakes every reader waiting on the head, though it has not moved: for a reader that must
   * look at something else (a message, a close, room freed), as readers wait on nothing else.
   */
  wakeReaders(): void {
    Atomics.notify(this.#slots, HEAD);
  }

  /**
   * Resolves once the head has moved past `seen` or {@link wakeReaders} is called, or after
   * `timeoutMs`. It does not keep the event loop alive by itself: the caller's thread must
   * have something else that does.
   */
  async waitForHead(seen: number, timeoutMs: number): Promise<void> {
    const wait = Atomics.waitAsync(this.#slots, HEAD, BigInt(seen), timeoutMs);
    if (wait.async) await wait.value;
  }

  /**
   * Blocks the calling thread until the head has moved past `seen` or {@link wakeReaders} is
   * called, or for `timeoutMs`: for a thread that runs its own loop (not the main thread,
   * which may not block).
   */
  blockForHead(seen: number, timeoutMs: number): void {
    Atomics.wait(this.#slots, HEAD, BigInt(seen), timeoutMs);
  }
}
