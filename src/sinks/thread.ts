/**
 * Runs a sink on a thread of its own, reading the spool on that thread: its reading,
 * decoding, encoding and talking to the backend never hold up the main thread or another
 * sink. The main thread keeps a stand-in ({@link SinkThread}) whose stats are what the thread
 * last reported; it never sees an event.
 *
 * A worker module is one line. `serveSinkThread(createMySink)` feeds a {@link Sink} from the
 * spool with the event loop's help (`feed.ts`: see `postgres/worker.ts`);
 * `serveSpoolSinkThread(create)` runs a {@link SpoolSink} that reads the spool itself, as the
 * Redis sink's blocking loop does (`redis/worker.ts`). The thread runs below the receive
 * thread's priority ({@link SinkThreadOptions.nice}) and is named `tbg-{name}`.
 *
 * One fed sink's thread also hosts the centre ({@link SinkThreadOptions.centre}): the centre
 * counts the records that sink decodes (`centre_tap.ts`), and the thread reports its counters
 * with the sink's stats.
 *
 * @module
 */
import { setThreadName, setThreadNice } from "../../ffi/libc.ts";
import type { LogLevel } from "../ops/config.ts";
import { configureLogging } from "../ops/log.ts";
import { Histogram, type HistogramSnapshot } from "../ops/metrics.ts";
import { backgroundNice } from "../source/receiver.ts";
import type { Acknowledge, Sink, SinkStats } from "../sink.ts";
import { type FeedStats, SinkFeed } from "./feed.ts";
import { SpoolReader } from "../buffer/reader.ts";
import { SpoolSignals } from "../buffer/signals.ts";
import { WorkerPeer } from "../ops/worker_peer.ts";
import { CentreTap } from "../centre_tap.ts";
import { type CollectorCounters, noCounters } from "../collector.ts";

/** Where in the spool a sink thread reads. */
export interface SpoolPlace {
  readonly dir: string;
  /** The spool's {@link SpoolSignals} buffer. */
  readonly signals: SharedArrayBuffer;
  readonly readerIndex: number;
  /** The sink's saved position. */
  readonly position: number;
}

/** What a sink thread reports: its sink's counters and its feed's. */
export interface SinkThreadStats extends SinkStats, FeedStats {}

/** What a sink thread's spool reader is given besides its sink's options. */
export interface SpoolSinkPlace {
  /** Positioned at the sink's saved position. */
  readonly reader: SpoolReader;
  readonly signals: SpoolSignals;
  /** This sink's slot in the signals. */
  readonly readerIndex: number;
  /** Datagram bytes the sink may hold in memory at once. */
  readonly memoryLimitBytes: number;
  /** See {@link import("./feed.ts").SinkFeedOptions.lingerMs}. */
  readonly lingerMs: number;
  /**
   * True once the main thread has asked the thread to close: a loop blocked in I/O looks at
   * it between slices, as it cannot see the `close` message until it returns to its event loop.
   */
  readonly closing: () => boolean;
  /**
   * True while the main thread has posted the thread a message it has not handled yet: a loop
   * that keeps the thread from its event loop returns to it then. The main thread also
   * wakes the spool's readers ({@link SpoolSignals.wakeReaders}) after every message, so a
   * loop blocked on the head sees it at once.
   */
  readonly called: () => boolean;
  /** The centre, when this thread hosts it: the sink gives it every record it decodes. */
  readonly tap?: CentreTap;
  /**
   * Posts the sink's stats to the main thread if they changed, at most every
   * {@link STATS_INTERVAL_MS}. The thread also does so on a timer; a loop that keeps the thread
   * from its event loop (where the timer runs) calls this instead, as often as it likes.
   * Returns in how many milliseconds changed stats it held back may be posted (`Infinity`
   * when none wait), so that a loop about to block can wake for them.
   */
  readonly report: () => number;
}

/**
 * A sink that reads the spool itself, on its thread: it acknowledges in the signals the
 * position its backend confirmed, and reports its stats.
 */
export interface SpoolSink {
  stats(): SinkThreadStats;
  /**
   * Resolves once every record before `until` is confirmed, or when `signal` aborts, or once
   * the sink is closed.
   */
  drain(until: number, signal?: AbortSignal): Promise<void>;
  /** Stops reading and closes the backend's connection and the reader. */
  close(): Promise<void>;
}

interface ReportedStats extends Omit<SinkThreadStats, "writeLatency"> {
  readonly writeLatency: HistogramSnapshot;
}

/** Messages from the main thread to a sink thread. */
type ToWorker =
  | {
    readonly type: "start";
    readonly name: string;
    readonly options: unknown;
    readonly spool: SpoolPlace;
    readonly memoryLimitBytes: number;
    readonly lingerMs: number;
    readonly logLevel?: LogLevel;
    readonly nice: number;
    /** Int32 slots: {@link CLOSING} and {@link POSTED}. */
    readonly bell: SharedArrayBuffer;
    /** Hosts the centre, counting from this run's first record. */
    readonly centre?: { readonly from: number };
  }
  | { readonly type: "drain"; readonly id: number; readonly until: number }
  | { readonly type: "count"; readonly id: number; readonly until: number }
  | { readonly type: "abort"; readonly id: number }
  | { readonly type: "close" };

/** Messages from a sink thread to the main thread. */
type FromWorker =
  | { readonly type: "stats"; readonly stats: ReportedStats; readonly counters?: CollectorCounters }
  | { readonly type: "drained"; readonly id: number; readonly stats: ReportedStats }
  | { readonly type: "counted"; readonly id: number; readonly counters: CollectorCounters }
  | { readonly type: "closed" };

/**
 * How often a sink thread looks whether its counters changed: fresh enough for health and
 * metrics, rare enough that an idle thread stays asleep.
 */
const STATS_INTERVAL_MS = 250;

/** In the bell: 1 once the main thread closes the thread. */
const CLOSING = 0;
/** In the bell: how many messages the main thread has posted the thread. */
const POSTED = 1;

/** Options for {@link startSinkThread}. */
export interface SinkThreadOptions<T> {
  /** The sink's name, as the sink in the worker gives it. */
  readonly name: string;
  /** The worker module, one that calls {@link serveSinkThread}. */
  readonly worker: URL;
  /** Passed to the worker's sink factory; must survive structured cloning. */
  readonly options: T;
  readonly spool: SpoolPlace;
  /** Datagram bytes the sink may hold in memory before its feed stops reading. */
  readonly memoryLimitBytes: number;
  /** See {@link import("./feed.ts").SinkFeedOptions.lingerMs}. */
  readonly lingerMs: number;
  /** The thread's nice value (default: {@link backgroundNice}). */
  readonly nice?: number;
  /** The worker logs at this level (default: its own logging stays unconfigured). */
  readonly logLevel?: LogLevel;
  /**
   * Hosts the centre, counting from record `from` (this run's first). Only a fed sink's thread
   * can: it decodes every record it reads in one place the centre can count.
   */
  readonly centre?: { readonly from: number };
  /**
   * Called if the thread fails (an uncaught error): its events stay in the spool, and the
   * caller should stop and restart the collector.
   */
  readonly onFatal: (message: string) => void;
}

/** The main thread's stand-in for a sink on its own thread. */
export interface SinkThread {
  readonly name: string;
  /** What the thread last reported. */
  stats(): SinkThreadStats;
  /**
   * Resolves once the sink confirmed every record before `until`, or when `signal` aborts,
   * or at once if the thread is gone.
   */
  drain(until: number, signal?: AbortSignal): Promise<void>;
  /** Stops the feed and the sink, and ends the thread. */
  close(): Promise<void>;
  /** The centre, if this thread hosts it. */
  readonly centre?: Centre;
}

/** The centre as the main thread sees it: what it last reported, and a wait. */
export interface Centre {
  /** The counters the thread last reported (every 250 ms at most while they change). */
  counters(): CollectorCounters;
  /** Resolves once every record before `until` is counted, or when `signal` aborts. */
  drain(until: number, signal?: AbortSignal): Promise<void>;
}

/** Starts a thread running a sink fed from the spool. */
export function startSinkThread<T>(options: SinkThreadOptions<T>): SinkThread {
  let stats: ReportedStats = {
    written: 0,
    retried: 0,
    dropped: 0,
    pending: 0,
    up: true,
    writeLatency: new Histogram().snapshot(),
    position: options.spool.position,
    lost: 0,
    behind: false,
    heldBytes: 0,
  };
  let counters = noCounters();
  const bell = new Int32Array(new SharedArrayBuffer(8));
  const signals = new SpoolSignals(options.spool.signals);
  const peer: WorkerPeer<ToWorker, FromWorker> = new WorkerPeer({
    module: options.worker,
    name: `${options.name} sink`,
    onMessage: (message) => {
      if (message.type === "closed") return peer.finish();
      if (message.type === "counted") {
        counters = message.counters;
        return peer.answer(message.id);
      }
      stats = message.stats;
      if (message.type === "stats" && message.counters) counters = message.counters;
      if (message.type === "drained") peer.answer(message.id);
    },
    onFatal: options.onFatal,
    posted: () => {
      Atomics.add(bell, POSTED, 1);
      signals.wakeReaders();
    },
  });
  peer.post({
    type: "start",
    name: options.name,
    options: options.options,
    spool: options.spool,
    memoryLimitBytes: options.memoryLimitBytes,
    lingerMs: options.lingerMs,
    logLevel: options.logLevel,
    nice: options.nice ?? backgroundNice(),
    bell: bell.buffer as SharedArrayBuffer,
    centre: options.centre,
  });
  return {
    name: options.name,
    stats: () => stats,
    drain: (until, signal) =>
      peer.request(
        (id) => ({ type: "drain", id, until }),
        signal,
        (id) => peer.post({ type: "abort", id }),
      ),
    close: () => {
      Atomics.store(bell, CLOSING, 1);
      return peer.close({ type: "close" });
    },
    centre: options.centre && {
      counters: () => counters,
      drain: (until, signal) => peer.request((id) => ({ type: "count", id, until }), signal),
    },
  };
}

/**
 * A {@link Sink} fed from the spool by a {@link SinkFeed}, as a {@link SpoolSink}; `create`
 * makes the sink with the function it acknowledges through.
 */
export function feedSink(
  create: (acknowledge: Acknowledge) => Sink,
  place: SpoolSinkPlace,
): SpoolSink {
  const feed = new SinkFeed({ sink: create, ...place });
  return {
    stats: () => ({ ...feed.sink.stats(), ...feed.stats() }),
    drain: (until, signal) => feed.drain(until, signal),
    close: () => feed.close(),
  };
}

/**
 * The worker side for a {@link Sink}: builds it from the options {@link startSinkThread} was
 * given, feeds it from the spool and serves the main thread's calls until `close`.
 */
export function serveSinkThread<T>(
  createSink: (options: T, acknowledge: Acknowledge) => Sink,
): void {
  serveSpoolSinkThread(
    (options: T, place) => feedSink((acknowledge) => createSink(options, acknowledge), place),
    true,
  );
}

/**
 * The worker side for a {@link SpoolSink}: builds it from the options and the sink's place in
 * the spool, and serves the main thread's calls until `close`.
 *
 * @param hostsCentre whether the sink gives the centre what it decodes ({@link SpoolSinkPlace.tap});
 *   a thread asked to host the centre whose sink does not fails at start
 */
export function serveSpoolSinkThread<T>(
  createSink: (options: T, place: SpoolSinkPlace) => SpoolSink,
  hostsCentre = false,
): void {
  const scope = self as unknown as {
    postMessage(message: FromWorker): void;
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  };
  let sink: SpoolSink | undefined;
  let tap: CentreTap | undefined;
  let reportedCount = -1;
  let ready: Promise<void> = Promise.resolve();
  const aborts = new Map<number, AbortController>();
  let reported: ReportedStats | undefined;
  /** Messages handled, to compare with what the main thread posted. */
  let handled = 0;

  const report = (stats = sink!.stats()): ReportedStats => {
    const latency = stats.writeLatency;
    const writeLatency = "snapshot" in latency ? latency.snapshot() : latency;
    return reported = { ...stats, writeLatency };
  };
  const changed = (s: SinkThreadStats): boolean =>
    reported === undefined || s.written !== reported.written ||
    s.dropped !== reported.dropped || s.retried !== reported.retried || s.up !== reported.up ||
    s.pending !== reported.pending || s.position !== reported.position ||
    s.lost !== reported.lost || s.behind !== reported.behind;
  /** Whether the stats or the centre's counts changed since they were last posted. */
  const unreported = (stats: SinkThreadStats): boolean =>
    changed(stats) || (tap !== undefined && tap.next !== reportedCount);
  let reportedAt = 0;
  const reportChanged = () => {
    if (sink === undefined) return;
    reportedAt = performance.now();
    const stats = sink.stats();
    if (!unreported(stats)) return;
    reportedCount = tap?.next ?? -1;
    scope.postMessage({ type: "stats", stats: report(stats), counters: tap?.collector.counters() });
  };
  const timer = setInterval(reportChanged, STATS_INTERVAL_MS);

  const handle = async (message: ToWorker): Promise<void> => {
    switch (message.type) {
      case "start": {
        setThreadNice(message.nice);
        setThreadName(`tbg-${message.name}`);
        if (message.logLevel) await configureLogging(message.logLevel);
        const signals = new SpoolSignals(message.spool.signals);
        const bell = new Int32Array(message.bell);
        if (message.centre) {
          if (!hostsCentre) throw new Error(`the ${message.name} sink cannot host the centre`);
          tap = new CentreTap(message.spool.dir, message.centre.from, signals);
        }
        sink = createSink(message.options as T, {
          reader: new SpoolReader(message.spool.dir, message.spool.position, signals),
          signals,
          readerIndex: message.spool.readerIndex,
          memoryLimitBytes: message.memoryLimitBytes,
          lingerMs: message.lingerMs,
          tap,
          closing: () => Atomics.load(bell, CLOSING) !== 0,
          called: () => Atomics.load(bell, POSTED) !== handled,
          report: () => {
            // Called first from within the sink's constructor, before there is a sink to ask.
            if (sink === undefined) return Infinity;
            const wait = STATS_INTERVAL_MS - (performance.now() - reportedAt);
            if (wait <= 0) {
              reportChanged();
              return Infinity;
            }
            return unreported(sink.stats()) ? wait : Infinity;
          },
        });
        return;
      }
      case "drain": {
        const controller = new AbortController();
        aborts.set(message.id, controller);
        void sink!.drain(message.until, controller.signal).then(() => {
          aborts.delete(message.id);
          if (controller.signal.aborted) return;
          scope.postMessage({ type: "drained", id: message.id, stats: report() });
        });
        return;
      }
      case "count":
        tap!.countUntil(message.until);
        scope.postMessage({ type: "counted", id: message.id, counters: tap!.collector.counters() });
        return;
      case "abort":
        aborts.get(message.id)?.abort();
        return;
      case "close":
        clearInterval(timer);
        for (const controller of aborts.values()) controller.abort();
        await sink?.close();
        tap?.close();
        scope.postMessage({ type: "closed" });
        return;
    }
  };
  // Start-up is asynchronous (logging), so every message waits its turn behind the ones
  // before it.
  scope.onmessage = (event) => {
    // Counted once handled, and after what the handling started at once (a drain already
    // reached posts its answer in a task of its own), so that a loop that blocks returns to
    // its event loop until then.
    ready = ready.then(() => handle(event.data)).finally(() => handled++);
  };
}
