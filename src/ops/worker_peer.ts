/**
 * The main thread's side of a worker that serves requests: posts messages while the worker
 * lives, resolves a request when its answer comes (or at once when the worker is gone), and
 * turns an uncaught error in the worker into one call of `onFatal`.
 *
 * @module
 */

/** Options for {@link WorkerPeer}. */
export interface WorkerPeerOptions<From> {
  readonly module: URL;
  /** The worker's name, in its messages and in `onFatal`'s. */
  readonly name: string;
  /** Every message from the worker, answers included. */
  readonly onMessage: (message: From) => void;
  readonly onFatal: (message: string) => void;
  /** Called after every message posted to the worker. */
  readonly posted?: () => void;
}

/** A worker and its pending requests. */
export class WorkerPeer<To, From> {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, () => void>();
  readonly #posted: (() => void) | undefined;
  #nextId = 0;
  #alive = true;
  #closed: (() => void) | undefined;

  constructor(options: WorkerPeerOptions<From>) {
    this.#worker = new Worker(options.module.href, { type: "module", name: options.name });
    this.#posted = options.posted;
    this.#worker.onmessage = (event: MessageEvent<From>) => options.onMessage(event.data);
    this.#worker.onerror = (event) => {
      event.preventDefault();
      this.finish();
      options.onFatal(`${options.name} thread failed: ${event.message}`);
    };
  }

  get alive(): boolean {
    return this.#alive;
  }

  /** Posts `message` if the worker still runs. */
  post(message: To): void {
    if (!this.#alive) return;
    this.#worker.postMessage(message);
    this.#posted?.();
  }

  /**
   * Posts the request `make(id)` and resolves when {@link answer} is called with `id`, when
   * `signal` aborts (then `onAbort(id)` is called), or when the worker ends.
   */
  request(make: (id: number) => To, signal?: AbortSignal, onAbort?: (id: number) => void) {
    if (!this.#alive || signal?.aborted) return Promise.resolve();
    const id = this.#nextId++;
    return new Promise<void>((resolve) => {
      const aborted = () => {
        this.#waiting.delete(id);
        onAbort?.(id);
        resolve();
      };
      signal?.addEventListener("abort", aborted, { once: true });
      this.#waiting.set(id, () => {
        signal?.removeEventListener("abort", aborted);
        resolve();
      });
      this.post(make(id));
    });
  }

  /** Resolves request `id`. */
  answer(id: number): void {
    this.#waiting.get(id)?.();
    this.#waiting.delete(id);
  }

  /** Posts `message` (the worker's last) and resolves once {@link finish} is called. */
  close(message: To): Promise<void> {
    if (!this.#alive) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.#closed = resolve);
    this.post(message);
    return done;
  }

  /** Ends the worker and every pending request. */
  finish(): void {
    this.#alive = false;
    this.#worker.terminate();
    for (const resolve of this.#waiting.values()) resolve();
    this.#waiting.clear();
    this.#closed?.();
  }
}
