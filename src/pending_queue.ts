/**
 * A bounded first-in first-out queue of events waiting for a backend.
 *
 * @module
 */

/** FIFO with a fixed capacity; events beyond it are refused, not evicted. */
export class PendingQueue<T> {
  readonly capacity: number;
  #items: T[] = [];
  #head = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  /** Appends what fits and returns how many items were refused. */
  push(items: readonly T[]): number {
    const room = Math.max(0, this.capacity - this.length);
    const taken = Math.min(room, items.length);
    for (let i = 0; i < taken; i++) this.#items.push(items[i]);
    return items.length - taken;
  }

  /** The first `count` items, without removing them. */
  peek(count: number): T[] {
    return this.#items.slice(this.#head, this.#head + count);
  }

  /** Removes the first `count` items. */
  remove(count: number): void {
    this.#head += Math.min(count, this.length);
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }
}
