/**
 * A first-in first-out queue of events waiting for a backend, which acknowledges the spool
 * position each push ends at once all its items (and all before them) have left the queue,
 * and tells callers when everything they handed over has left it. It takes everything
 * pushed: bounding memory is the delivery layer's job.
 *
 * @module
 */
import type { Acknowledge } from "../sink.ts";

/** FIFO of items waiting for a backend. */
export class PendingQueue<T> {
  readonly #acknowledge: Acknowledge;
  #items: T[] = [];
  #head = 0;
  /** Items ever taken in, and of those, items ever removed (delivered or discarded). */
  #taken = 0;
  #removed = 0;
  /** Where each push ends, oldest first: acknowledged once `taken` items are removed. */
  readonly #ends: { taken: number; position: number }[] = [];
  readonly #waiters = new Set<{ target: number; resolve: () => void }>();

  /** @param acknowledge called with the end of the pushes whose items have all left */
  constructor(acknowledge: Acknowledge) {
    this.#acknowledge = acknowledge;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  /** Items removed so far: the position of the first item from the start of the queue. */
  get removed(): number {
    return this.#removed;
  }

  /** Whether a {@link drained} call is still waiting. */
  get awaited(): boolean {
    return this.#waiters.size > 0;
  }

  /** Appends `items`, read from the spool up to position `end`. */
  push(items: readonly T[], end: number): void {
    for (const item of items) this.#items.push(item);
    this.#taken += items.length;
    this.#ends.push({ taken: this.#taken, position: end });
    this.#acknowledgeRemoved();
  }

  /** `count` items from the `skip`th, without removing them. */
  peek(count: number, skip = 0): T[] {
    const from = this.#head + skip;
    return this.#items.slice(from, from + count);
  }

  /** Removes the first `count` items: they were delivered, or given up. */
  remove(count: number): void {
    const removed = Math.min(count, this.length);
    this.#head += removed;
    this.#removed += removed;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    this.#acknowledgeRemoved();
    for (const waiter of this.#waiters) {
      if (this.#removed >= waiter.target) {
        this.#waiters.delete(waiter);
        waiter.resolve();
      }
    }
  }

  /**
   * Resolves once every item pushed before the call has been removed, when `signal` aborts,
   * or on {@link release}.
   */
  drained(signal?: AbortSignal): Promise<void> {
    if (this.length === 0 || signal?.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiter = {
        target: this.#taken,
        resolve: () => {
          signal?.removeEventListener("abort", abort);
          resolve();
        },
      };
      const abort = () => {
        this.#waiters.delete(waiter);
        waiter.resolve();
      };
      signal?.addEventListener("abort", abort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** Acknowledges the end of the last push whose items have all been removed, if any is new. */
  #acknowledgeRemoved(): void {
    let position: number | undefined;
    while (this.#ends.length > 0 && this.#ends[0].taken <= this.#removed) {
      position = this.#ends.shift()!.position;
    }
    if (position !== undefined) this.#acknowledge(position);
  }

  /** Resolves every waiting {@link drained} call, e.g. when the owner closes. */
  release(): void {
    for (const waiter of this.#waiters) waiter.resolve();
    this.#waiters.clear();
  }
}
