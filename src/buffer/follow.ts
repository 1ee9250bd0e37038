/**
 * The loop every reader of the spool runs on its thread: wait on the head while there is
 * nothing to read (or no room for it), read, hand the records on, and then either let records
 * gather for a moment (after a read that left nothing behind: a wake-up costs more than a
 * record) or yield one task, so the thread's own I/O runs however fast records come.
 *
 * @module
 */
import type { SpoolReader } from "./reader.ts";
import type { SpoolRecord } from "./spool.ts";
import type { SpoolSignals } from "./signals.ts";

/** Options for {@link followSpool}. */
export interface FollowOptions {
  readonly reader: SpoolReader;
  readonly signals: SpoolSignals;
  /** Longest one wait on the head lasts before the loop looks around again. */
  readonly idleMs: number;
  /** After a read that left nothing behind, how long records gather before the next one. */
  readonly lingerMs: number;
  /** The loop ends once this is false. */
  running(): boolean;
  /**
   * Called first in every turn of the loop; true if it left work for the next turn, which
   * then comes at once rather than when the head moves.
   */
  look(): boolean;
  /** About how many bytes of records may be read now (whole frames); 0 waits. */
  room(): number;
  /** Takes what one read returned; `from` is where the read started. */
  take(records: readonly SpoolRecord[], from: number): void;
}

/** Runs the reading loop until `running()` is false. */
export async function followSpool(options: FollowOptions): Promise<void> {
  const { reader, signals } = options;
  // A task boundary without a timer's clamping: one message to itself.
  const channel = new MessageChannel();
  const yieldTask = () =>
    new Promise<void>((resolve) => {
      channel.port1.onmessage = () => resolve();
      channel.port2.postMessage(0);
    });
  try {
    while (options.running()) {
      const more = options.look();
      const head = signals.head();
      const room = options.room();
      if (reader.next >= head || room === 0) {
        if (more) await yieldTask();
        else await signals.waitForHead(head, options.idleMs);
        continue;
      }
      const from = reader.next;
      options.take(reader.read(Number.MAX_SAFE_INTEGER, room), from);
      if (options.lingerMs > 0 && !reader.behind) {
        await new Promise((resolve) => setTimeout(resolve, options.lingerMs));
      } else {
        await yieldTask();
      }
    }
  } finally {
    channel.port1.close();
  }
}
