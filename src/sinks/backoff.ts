/**
 * Exponential back-off between retries.
 *
 * @module
 */

/** Doubles a delay from `initialMs` up to `maxMs`; `reset` after a success. */
export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  #currentMs: number;

  constructor(initialMs: number, maxMs: number) {
    this.#initialMs = initialMs;
    this.#maxMs = maxMs;
    this.#currentMs = initialMs;
  }

  /** The delay to wait now; the next one is twice as long. */
  next(): number {
    const delay = this.#currentMs;
    this.#currentMs = Math.min(this.#currentMs * 2, this.#maxMs);
    return delay;
  }

  reset(): void {
    this.#currentMs = this.#initialMs;
  }
}

/** Resolves after `ms` milliseconds, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
