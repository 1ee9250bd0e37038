/**
 * A sink's thread reading a spool of its own, behind the {@link Sink} interface: what is
 * pushed is spooled as datagrams (the receive thread's part in the collector), and the thread
 * reads it from there. For tests written against `Sink` that must run a sink the way the
 * collector runs it.
 */
import type { MiningEvent } from "../../src/events.ts";
import type { Sink } from "../../src/sink.ts";
import { Spool } from "../../src/buffer/spool.ts";
import { startSinkThread } from "../../src/sinks/thread.ts";
import { writable } from "./writable_spool.ts";

const encoder = new TextEncoder();

/** Options for {@link spooledSinkThread}. */
export interface SpooledSinkOptions {
  readonly name: string;
  /** The sink's worker module. */
  readonly worker: URL;
  /** The sink's options, as the worker takes them. */
  readonly options: unknown;
  /** See `SinkThreadOptions.lingerMs`. */
  readonly lingerMs: number;
}

/** Starts the thread over a new spool in a temporary directory; `close` removes both. */
export async function spooledSinkThread(options: SpooledSinkOptions): Promise<Sink> {
  const dir = await Deno.makeTempDir({ prefix: `tbg-${options.name}-spooled-` });
  const spool = writable(
    Spool.open({ dir, maxBytes: 1 << 30, fsyncIntervalMs: 1000, readers: [options.name] }),
  );
  const thread = startSinkThread({
    name: options.name,
    worker: options.worker,
    options: options.options,
    spool: {
      dir,
      signals: spool.signals.buffer,
      readerIndex: 0,
      position: spool.position(options.name),
    },
    memoryLimitBytes: 64 << 20,
    lingerMs: options.lingerMs,
    onFatal: (message) => {
      throw new Error(message);
    },
  });
  return {
    name: options.name,
    push(events: readonly MiningEvent[]) {
      spool.append(events.map(({ id: _, ...sent }) => encoder.encode(JSON.stringify(sent))));
    },
    flush: (signal) => thread.drain(spool.head, signal),
    stats: () => thread.stats(),
    async close() {
      await thread.close();
      await spool.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
