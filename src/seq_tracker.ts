/**
 * Counts events lost between an emitter and the collector from gaps in `seq`.
 *
 * Each emitter numbers the events it tries to send 1, 2, 3, ...; ckpool sends from several
 * threads, so numbers may arrive slightly out of order. Per emitter this keeps the lowest
 * and highest number seen and how many arrived: the difference is what went missing. A
 * number far below the highest means the emitter restarted and starts a new count.
 *
 * @module
 */

/** How far below the highest number a late arrival may be before it counts as a restart. */
export const REORDER_WINDOW = 4096;
/** Emitters tracked at once; the least recently seen is retired beyond this. */
const MAX_EMITTERS = 1024;

interface Run {
  first: number;
  last: number;
  received: number;
}

function missing(run: Run): number {
  return Math.max(0, run.last - run.first + 1 - run.received);
}

/** Tracks `seq` per emitter. */
export class SeqTracker {
  readonly #runs = new Map<string, Run>();
  #retiredLost = 0;
  #restarts = 0;

  /** Records that event number `seq` of `emitter` arrived. */
  observe(emitter: string, seq: number): void {
    const run = this.#runs.get(emitter);
    if (run === undefined) {
      this.#start(emitter, seq);
    } else if (seq > run.last) {
      run.last = seq;
      run.received++;
    } else if (seq + REORDER_WINDOW >= run.last) {
      run.received++;
      if (seq < run.first) run.first = seq;
    } else {
      this.#restarts++;
      this.#retire(emitter, run);
      this.#start(emitter, seq);
    }
  }

  /** Events missing so far, over every emitter and restart. */
  get lost(): number {
    let lost = this.#retiredLost;
    for (const run of this.#runs.values()) lost += missing(run);
    return lost;
  }

  /** Emitter restarts seen (a number far below the highest). */
  get restarts(): number {
    return this.#restarts;
  }

  #start(emitter: string, seq: number): void {
    if (this.#runs.size >= MAX_EMITTERS) {
      const [oldest, run] = this.#runs.entries().next().value!;
      this.#retire(oldest, run);
    }
    this.#runs.set(emitter, { first: seq, last: seq, received: 1 });
  }

  #retire(emitter: string, run: Run): void {
    this.#retiredLost += missing(run);
    this.#runs.delete(emitter);
  }
}
