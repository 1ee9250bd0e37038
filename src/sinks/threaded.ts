/**
 * Runs a sink on a thread of its own, so that its work (building batches, encoding them,
 * talking to the backend) never holds up the main thread, where every event waits to be
 * validated and written to the spool and to Redis.
 *
 * The main thread hands events over as one JSON text per push: a string crosses threads as
 * a single copy, where structured cloning would walk every object (about 0.25 µs an event
 * to stringify against 1 µs to clone). The worker posts its counters back whenever they
 * change, so {@link Sink.stats} stays synchronous; events still on their way to the worker
 * count as pending.
 *
 * A worker module is one line: `serveSink(createMySink)` (see `postgres_worker.ts`). The
 * thread runs below the receive thread's priority, like the main thread.
 *
 * @module
 */
import { setThreadName, setThreadNice } from "../../ffi/libc.ts";
import type { MiningEvent } from "../events.ts";
import type { LogLevel } from "../config.ts";
import { configureLogging } from "../log.ts";
import { Histogram, type HistogramSnapshot } from "../metrics.ts";
import { backgroundNice } from "../receiver.ts";
import type { Sink, SinkStats } from "../sink.ts";

/** Counters the worker reports; `pending` is worked out on the main thread. */
interface WorkerStats {
  readonly written: number;
  readonly retried: number;
  readonly dropped: number;
  readonly up: boolean;
  readonly writeLatency: HistogramSnapshot;
}

/** Messages from the main thread to a sink worker. */
type ToWorker =
  | {
    readonly type: "start";
    readonly options: unknown;
    readonly logLevel?: LogLevel;
    readonly nice: number;
    readonly name: string;
  }
  | { readonly type: "push"; readonly events: string }
  | { readonly type: "flush"; readonly id: number }
  | { readonly type: "abort"; readonly id: number }
  | { readonly type: "close" };

/** Messages from a sink worker to the main thread. */
type FromWorker =
  | { readonly type: "stats"; readonly stats: WorkerStats }
  | { readonly type: "flushed"; readonly id: number; readonly stats: WorkerStats }
  | { readonly type: "closed" };

/** How often a worker looks whether its counters changed. */
const STATS_INTERVAL_MS = 5;

/**
 * How long pushed events gather before they are sent to the worker: a message costs both
 * threads far more than an event, and the events come in small batches.
 */
const HAND_OVER_MS = 5;

/** Options for {@link startThreadedSink}. */
export interface ThreadedSinkOptions<T> {
  /** The sink's name, as the sink in the worker would give it. */
  readonly name: string;
  /** The worker module, one that calls {@link serveSink}. */
  readonly worker: URL;
  /** Passed to the worker's sink factory; must survive structured cloning. */
  readonly options: T;
  /** The worker logs at this level (default: its own logging stays unconfigured). */
  readonly logLevel?: LogLevel;
  /**
   * Called if the worker fails (an uncaught error): its events are then in the spool only,
   * and the caller should stop and restart the collector.
   */
  readonly onFatal: (message: string) => void;
}

/** Starts a worker running a sink and returns the sink's stand-in on this thread. */
export function startThreadedSink<T>(options: ThreadedSinkOptions<T>): Sink {
  const worker = new Worker(options.worker.href, { type: "module", name: options.name });
  let stats: WorkerStats = {
    written: 0,
    retried: 0,
    dropped: 0,
    up: true,
    writeLatency: new Histogram().snapshot(),
  };
  let pushed = 0;
  let gathered: MiningEvent[] = [];
  let handOver: ReturnType<typeof setTimeout> | undefined;
  let nextFlushId = 0;
  const flushes = new Map<number, () => void>();
  let closed: (() => void) | undefined;
  let alive = true;

  const finish = () => {
    alive = false;
    clearTimeout(handOver);
    worker.terminate();
    for (const resolve of flushes.values()) resolve();
    flushes.clear();
    closed?.();
  };
  worker.onmessage = (event: MessageEvent<FromWorker>) => {
    const message = event.data;
    if (message.type === "closed") return finish();
    stats = message.stats;
    if (message.type === "flushed") {
      flushes.get(message.id)?.();
      flushes.delete(message.id);
    }
  };
  worker.onerror = (event) => {
    event.preventDefault();
    finish();
    options.onFatal(`${options.name} sink thread failed: ${event.message}`);
  };
  post({
    type: "start",
    options: options.options,
    logLevel: options.logLevel,
    nice: backgroundNice(),
    name: options.name,
  });

  function post(message: ToWorker): void {
    if (alive) worker.postMessage(message);
  }

  function handOverGathered(): void {
    clearTimeout(handOver);
    handOver = undefined;
    if (gathered.length === 0) return;
    post({ type: "push", events: JSON.stringify(gathered) });
    gathered = [];
  }

  return {
    name: options.name,
    push(events: readonly MiningEvent[]): void {
      if (events.length === 0) return;
      pushed += events.length;
      for (const event of events) gathered.push(event);
      handOver ??= setTimeout(handOverGathered, HAND_OVER_MS);
    },
    flush(signal?: AbortSignal): Promise<void> {
      if (!alive || signal?.aborted) return Promise.resolve();
      handOverGathered();
      const id = nextFlushId++;
      return new Promise<void>((resolve) => {
        const onAbort = () => {
          flushes.delete(id);
          post({ type: "abort", id });
          resolve();
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        flushes.set(id, () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        });
        post({ type: "flush", id });
      });
    },
    close(): Promise<void> {
      if (!alive) return Promise.resolve();
      handOverGathered();
      const done = new Promise<void>((resolve) => closed = resolve);
      post({ type: "close" });
      return done;
    },
    stats(): SinkStats {
      return {
        written: stats.written,
        retried: stats.retried,
        dropped: stats.dropped,
        up: stats.up,
        pending: pushed - stats.written - stats.dropped,
        writeLatency: stats.writeLatency,
      };
    },
  };
}

/**
 * The worker side: builds the sink from the options {@link startThreadedSink} was given and
 * serves the main thread's calls until `close`.
 */
export function serveSink<T>(createSink: (options: T) => Sink): void {
  const scope = self as unknown as {
    postMessage(message: FromWorker): void;
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  };
  let sink: Sink | undefined;
  let ready: Promise<void> = Promise.resolve();
  const aborts = new Map<number, AbortController>();
  let reported: WorkerStats | undefined;

  /** `s` as the main thread gets it, remembered as the last sent. */
  const report = (s: SinkStats): WorkerStats => {
    const writeLatency = "snapshot" in s.writeLatency ? s.writeLatency.snapshot() : s.writeLatency;
    const { written, retried, dropped, up } = s;
    return reported = { written, retried, dropped, up, writeLatency };
  };
  const timer = setInterval(() => {
    if (sink === undefined) return;
    const s = sink.stats();
    if (
      reported !== undefined && s.written === reported.written &&
      s.dropped === reported.dropped && s.retried === reported.retried && s.up === reported.up
    ) {
      return;
    }
    scope.postMessage({ type: "stats", stats: report(s) });
  }, STATS_INTERVAL_MS);

  const handle = async (message: ToWorker): Promise<void> => {
    switch (message.type) {
      case "start":
        setThreadNice(message.nice);
        setThreadName(`tbg-${message.name}`);
        if (message.logLevel) await configureLogging(message.logLevel);
        sink = createSink(message.options as T);
        return;
      case "push":
        sink!.push(JSON.parse(message.events));
        return;
      case "flush": {
        const controller = new AbortController();
        aborts.set(message.id, controller);
        void sink!.flush(controller.signal).then(() => {
          aborts.delete(message.id);
          if (controller.signal.aborted) return;
          scope.postMessage({ type: "flushed", id: message.id, stats: report(sink!.stats()) });
        });
        return;
      }
      case "abort":
        aborts.get(message.id)?.abort();
        return;
      case "close":
        clearInterval(timer);
        for (const controller of aborts.values()) controller.abort();
        await sink!.close();
        scope.postMessage({ type: "closed" });
        return;
    }
  };
  // Start-up is asynchronous (logging), so every message waits its turn behind the ones
  // before it; order matters: pushes must reach the sink in the order they were made.
  scope.onmessage = (event) => {
    ready = ready.then(() => handle(event.data));
  };
}
