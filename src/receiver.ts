/**
 * Binds the collector's socket and runs the receive thread.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { setThreadNice, threadNice } from "../ffi/libc.ts";
import { bindDatagramSocket, closeSocket, unlinkSocket } from "../ffi/unix_datagram.ts";
import type { DatagramBatch } from "./datagram_batch.ts";
import type { Handover, ReceiverWorkerMessage, ReceiverWorkerStart } from "./receiver_worker.ts";
import type { Spool } from "./spool.ts";
import { decodeFrames } from "./spool_frame.ts";

const log = getLogger(["tbg", "receiver"]);

/** Options for {@link startReceiver}. */
export interface ReceiverOptions {
  readonly path: string;
  /** File mode of the socket. */
  readonly mode: number;
  /** Group id given to the socket file (`SOCKET_GROUP`); unset keeps the creating group. */
  readonly group?: number;
  /**
   * uids whose datagrams are accepted (`ALLOWED_SENDER_UIDS`); others are dropped on the
   * receive thread and counted in {@link DatagramBatch.refusedSenders}. Unset or empty
   * accepts every sender.
   */
  readonly allowedSenderUids?: readonly number[];
  /** Requested `SO_RCVBUF` in bytes. */
  readonly receiveBufferBytes: number;
  /**
   * The spool the receive thread appends every receive to before anything else; it learns
   * of each frame before `onBatch` is called with it. Open it before, close it after.
   */
  readonly spool: Spool;
  /**
   * Bytes of frames handed over in memory and not yet settled, past which frames are handed
   * over by their place in the spool only (default 8 MiB).
   */
  readonly heldInMemoryBytes?: number;
  /** Called on the main thread for each batch, in arrival order; call `settle` after it. */
  readonly onBatch: (batch: DatagramBatch) => void;
  /** Called if the receive thread fails; it has stopped by then. */
  readonly onError: (message: string) => void;
}

/** A bound, receiving socket. */
export interface Receiver {
  readonly path: string;
  /** `SO_RCVBUF` the kernel granted. */
  readonly receiveBufferBytes: number;
  /**
   * Removes the socket path (new sends fail at once), takes what is still queued, then
   * closes the socket. Every batch has been passed to `onBatch` when this resolves.
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
export const NICE_STEPS_BELOW_RECEIVER = 5;

let processNice: number | undefined;

/**
 * The nice value every thread but the receive thread runs at: {@link NICE_STEPS_BELOW_RECEIVER}
 * below the process's own, taken the first time this is asked (on the main thread, before any
 * thread stepped down). Absolute, not relative to a thread's current value, so that starting
 * and stopping receivers (tests do, in one process) never pushes a thread further down.
 */
export function backgroundNice(): number {
  processNice ??= threadNice();
  return Math.min(19, processNice + NICE_STEPS_BELOW_RECEIVER);
}

/** Bytes of frames handed over in memory and not yet ingested before later ones are not. */
const HELD_IN_MEMORY_BYTES = 8 * 1024 * 1024;

/** The batch the centre gets for one hand-over, its records in memory or in the spool. */
function batchOf(spool: Spool, handover: Handover, settle?: () => void): DatagramBatch {
  let first = -1;
  let count = 0;
  for (const step of handover.steps) {
    if (step.kind !== "frame") continue;
    if (first < 0) first = step.note.index;
    count += step.note.count;
  }
  const buffer = handover.buffer;
  return {
    first: Math.max(first, 0),
    count,
    refusedSenders: handover.refusedSenders,
    lastRefusedUid: handover.lastRefusedUid,
    lastRefusedPid: handover.lastRefusedPid,
    settle,
    records: () => {
      if (count === 0) return [];
      if (!buffer) return spool.read(first, count);
      let index = first;
      return decodeFrames(new Uint8Array(buffer)).flat().map((record) => ({
        index: index++,
        ...record,
      }));
    },
  };
}

/** Binds the socket at `options.path` and starts receiving on a dedicated thread. */
export function startReceiver(options: ReceiverOptions): Receiver {
  const mainNice = threadNice();
  const nice = backgroundNice();
  const socket = bindDatagramSocket(options.path, {
    mode: options.mode,
    receiveBufferBytes: options.receiveBufferBytes,
    group: options.group,
  });
  const stopFlag = new SharedArrayBuffer(4);
  const held = new SharedArrayBuffer(4);
  const heldBytes = new Int32Array(held);
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
    closeSocket(socket.fd);
    unlinkSocket(socket.path);
    // Back to where it was where the kernel allows (raising needs privilege).
    setThreadNice(mainNice);
    finished();
  };
  worker.onmessage = (event: MessageEvent<ReceiverWorkerMessage>) => {
    const message = event.data;
    if (message.type === "running") {
      setThreadNice(nice);
      log.debug("receive thread running; main thread now at nice {nice}", { nice: threadNice() });
    } else if (message.type === "frames") {
      const bytes = message.buffer?.byteLength ?? 0;
      const frames = message.buffer && new Uint8Array(message.buffer);
      try {
        options.spool.apply(message.steps, frames, message.writeError);
      } catch (error) {
        close();
        options.onError(`the spool lost track of the receive thread: ${(error as Error).message}`);
        return;
      }
      const settle = bytes > 0 ? () => Atomics.sub(heldBytes, 0, bytes) : undefined;
      options.onBatch(batchOf(options.spool, message, settle));
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
    slots: SLOTS,
    slotBytes: MAX_DATAGRAM_BYTES,
    allowedSenderUids: options.allowedSenderUids ?? [],
    held,
    memoryBytes: options.heldInMemoryBytes ?? HELD_IN_MEMORY_BYTES,
    spool: options.spool.writerOptions(),
  };
  worker.postMessage(start);
  return {
    path: socket.path,
    receiveBufferBytes: socket.receiveBufferBytes,
    stop: () => {
      if (!closed) {
        unlinkSocket(socket.path);
        Atomics.store(new Int32Array(stopFlag), 0, 1);
      }
      return done;
    },
  };
}
