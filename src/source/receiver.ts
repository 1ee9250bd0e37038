/**
 * Binds the collector's socket, or takes the one a service manager passed in, and runs the
 * receive thread.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { setThreadNice, threadNice } from "../../ffi/libc.ts";
import {
  adoptDatagramSocket,
  bindDatagramSocket,
  type BoundSocket,
  closeSocket,
  unlinkSocket,
} from "../../ffi/unix_datagram.ts";
import type { Spool } from "../buffer/spool.ts";
import { RateLimitedLog } from "../ops/log.ts";
import { ReceiveCounters, type ReceiveCounts } from "./counters.ts";
import type { ReceiverWorkerMessage, ReceiverWorkerStart } from "./receiver_worker.ts";

const log = getLogger(["tbg", "receiver"]);

/** Options for {@link startReceiver}. */
export interface ReceiverOptions {
  readonly path: string;
  /**
   * A socket passed in by socket activation ({@link import("./activation.ts")}): taken
   * instead of binding `path`, and never unlinked or closed (its holder keeps it).
   */
  readonly passedFd?: number;
  /** File mode of the socket. */
  readonly mode: number;
  /** Group id given to the socket file (`SOCKET_GROUP`); unset keeps the creating group. */
  readonly group?: number;
  /**
   * uids whose datagrams are accepted (`ALLOWED_SENDER_UIDS`); others are dropped on the
   * receive thread and counted as refused. Unset or empty accepts every sender.
   */
  readonly allowedSenderUids?: readonly number[];
  /** Requested `SO_RCVBUF` in bytes. */
  readonly receiveBufferBytes: number;
  /**
   * The spool the receive thread appends every receive to. Open it before, close it after
   * {@link Receiver.stop}.
   */
  readonly spool: Spool;
  /** Called if the receive thread fails; it has stopped by then. */
  readonly onError: (message: string) => void;
}

/** A bound, receiving socket. */
export interface Receiver {
  readonly path: string;
  /** Whether the socket was passed in (socket activation) rather than bound here. */
  readonly inherited: boolean;
  /** `SO_RCVBUF` the kernel granted. */
  readonly receiveBufferBytes: number;
  /** What the receive thread has counted so far. */
  counts(): ReceiveCounts;
  /**
   * Removes the socket path (new sends fail at once), takes what is still queued, then
   * closes the socket. Every datagram taken is in the spool when this resolves. A passed-in
   * socket stays as it is, with what is queued on it, for the next start.
   */
  stop(): Promise<void>;
}

/** Datagrams taken per system call. */
const SLOTS = 256;
/**
 * Largest datagram accepted. ckpool's events are well under 1 KiB; anything larger than
 * this arrives cut and is rejected as oversized.
 */
export const MAX_DATAGRAM_BYTES = 16 * 1024;
/**
 * Nice levels every other thread of the collector runs below the receive thread (the main
 * thread once the receive thread runs, a sink's thread when it starts). When the machine is
 * short of CPU (the pool, the databases and the collector on a few cores), the thread that
 * empties the kernel queue must win: whatever it does not read in time is lost, while
 * anything the others do late is only late. Threads are created with their creator's nice
 * value, so the receive thread keeps the process's own.
 */
const NICE_STEPS_BELOW_RECEIVER = 5;

let processNice: number | undefined;

/**
 * The nice value every thread but the receive thread runs at: {@link NICE_STEPS_BELOW_RECEIVER}
 * below the process's own, taken the first time this is asked (on the main thread, before any
 * thread stepped down). Absolute, not relative to a thread's current value, so that starting
 * and stopping receivers (tests do, in one process) never pushes a thread further down.
 */
export function backgroundNice(): number {
  return niceBelowReceiver(NICE_STEPS_BELOW_RECEIVER);
}

/**
 * How far below the receive thread the Redis sink's thread runs: above the other threads and
 * the database servers' share, since the game's live view reads Redis within milliseconds,
 * and still below the receive thread, which must never wait for it.
 */
const LIVE_NICE_STEPS_BELOW_RECEIVER = 2;

/** The nice value of the thread that feeds the live view (see {@link backgroundNice}). */
export function liveNice(): number {
  return niceBelowReceiver(LIVE_NICE_STEPS_BELOW_RECEIVER);
}

function niceBelowReceiver(steps: number): number {
  processNice ??= threadNice();
  return Math.min(19, processNice + steps);
}

/** Logs refused senders as their count grows (rate-limited), whenever the counts are read. */
class RefusalLog {
  readonly #counters: ReceiveCounters;
  readonly #log = new RateLimitedLog(log);
  #logged = 0;

  constructor(counters: ReceiveCounters) {
    this.#counters = counters;
  }

  check(): ReceiveCounts {
    const counts = this.#counters.read();
    if (counts.refused > this.#logged) {
      this.#log.warn(
        "refused {count} datagrams from a uid not in ALLOWED_SENDER_UIDS " +
          "(last: uid {uid}, pid {pid})",
        {
          reason: "unauthorized_sender",
          count: counts.refused - this.#logged,
          uid: counts.lastRefusedUid,
          pid: counts.lastRefusedPid,
        },
      );
      this.#logged = counts.refused;
    }
    return counts;
  }
}

/** The socket passed in, or a fresh one bound at `options.path`. */
function openSocket(options: ReceiverOptions): BoundSocket {
  if (options.passedFd === undefined) {
    return bindDatagramSocket(options.path, {
      mode: options.mode,
      receiveBufferBytes: options.receiveBufferBytes,
      group: options.group,
    });
  }
  const socket = adoptDatagramSocket(options.passedFd, options);
  log.info("receiving on the socket passed in at {path} (descriptor {fd}); SOCKET_PATH unused", {
    path: socket.path,
    fd: socket.fd,
  });
  return socket;
}

/**
 * Binds the socket at `options.path` (or takes the one passed in) and starts receiving on a
 * dedicated thread.
 */
export function startReceiver(options: ReceiverOptions): Receiver {
  const mainNice = threadNice();
  const nice = backgroundNice();
  const socket = openSocket(options);
  const release = () => {
    if (socket.inherited) return;
    closeSocket(socket.fd);
    unlinkSocket(socket.path);
  };
  const stopFlag = new SharedArrayBuffer(4);
  const counters = new ReceiveCounters();
  const refusals = new RefusalLog(counters);
  const refusalTimer = setInterval(() => refusals.check(), 1000);
  Deno.unrefTimer(refusalTimer);
  const worker = new Worker(new URL("./receiver_worker.ts", import.meta.url).href, {
    type: "module",
    name: "receiver",
  });
  let finished: () => void;
  const done = new Promise<void>((resolve) => finished = resolve);
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    worker.terminate();
    clearInterval(refusalTimer);
    refusals.check();
    release();
    // Back to where it was where the kernel allows (raising needs privilege).
    setThreadNice(mainNice);
    finished();
  };
  worker.onmessage = (event: MessageEvent<ReceiverWorkerMessage>) => {
    const message = event.data;
    if (message.type === "running") {
      setThreadNice(nice);
      log.debug("receive thread running; main thread now at nice {nice}", { nice: threadNice() });
    } else if (message.type === "spool") {
      if (message.error !== undefined) {
        log.error(
          "cannot write to the spool in {dir} ({error}); {frames} receives kept in memory " +
            "and tried again: free disk space or fix the volume",
          { dir: options.spool.dir, error: message.error, frames: message.unwrittenFrames },
        );
      } else {
        log.info("the spool in {dir} takes writes again", { dir: options.spool.dir });
      }
    } else {
      close();
      if (message.type === "error") options.onError(message.message);
    }
  };
  worker.onerror = (event) => {
    event.preventDefault();
    close();
    options.onError(event.message);
  };
  const start: ReceiverWorkerStart = {
    fd: socket.fd,
    stop: stopFlag,
    drainOnStop: !socket.inherited,
    slots: SLOTS,
    slotBytes: MAX_DATAGRAM_BYTES,
    allowedSenderUids: options.allowedSenderUids ?? [],
    spool: options.spool.writerOptions(),
    counters: counters.buffer,
  };
  worker.postMessage(start);
  return {
    path: socket.path,
    inherited: socket.inherited,
    receiveBufferBytes: socket.receiveBufferBytes,
    counts: () => refusals.check(),
    stop: () => {
      if (!closed) {
        if (!socket.inherited) unlinkSocket(socket.path);
        const flag = new Int32Array(stopFlag);
        Atomics.store(flag, 0, 1);
        Atomics.notify(flag, 0); // ends a gathering wait
      }
      return done;
    },
  };
}
