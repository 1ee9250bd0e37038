/**
 * Binds the collector's socket and runs the receive thread.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { setThreadNice, threadNice } from "../ffi/libc.ts";
import { bindDatagramSocket, closeSocket, unlinkSocket } from "../ffi/unix_datagram.ts";
import { countDatagrams, type DatagramBatch } from "./datagram_batch.ts";
import type { ReceiverWorkerMessage, ReceiverWorkerStart } from "./receiver_worker.ts";

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
   * Directory for batches the main thread has no room for in memory (see
   * `receiver_worker.ts`); batches left there by a previous run are handed over first.
   * Unset keeps every batch in memory.
   */
  readonly overflowDir?: string;
  /** Bytes of unsettled batches held in memory before the overflow directory is used. */
  readonly overflowAfterBytes?: number;
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

/** Bytes of batches held in memory before later ones go to files in the overflow directory. */
const OVERFLOW_AFTER_BYTES = 8 * 1024 * 1024;

const OVERFLOW_FILE = /^[0-9]{15}-[0-9]{12}\.batch$/;

/**
 * A batch handed over through a file: read when the centre gets to it, deleted after. A
 * file a previous run left comes without its count, which is then read from the file.
 */
function fileBatch(
  file: string,
  batch: Omit<DatagramBatch, "buffer" | "count" | "settle"> & { readonly count?: number },
): DatagramBatch {
  let loaded: { buffer: ArrayBuffer; count: number } | undefined;
  const load = () => {
    if (loaded !== undefined) return loaded;
    try {
      const buffer = Deno.readFileSync(file).buffer;
      loaded = { buffer, count: batch.count ?? countDatagrams(buffer) };
    } catch (error) {
      log.error("overflow batch {file} is unreadable, {count} datagrams lost: {error}", {
        file,
        count: batch.count ?? "its",
        error: (error as Error).message,
      });
      loaded = { buffer: new ArrayBuffer(0), count: 0 };
    }
    return loaded;
  };
  return {
    ...batch,
    get buffer() {
      return load().buffer;
    },
    get count() {
      return load().count;
    },
    settle: () => {
      try {
        Deno.removeSync(file);
      } catch {
        // already gone
      }
    },
  };
}

/** Batches a previous run left in the overflow directory (its crash stopped it). */
function leftoverBatches(dir: string): DatagramBatch[] {
  const names = [...Deno.readDirSync(dir)]
    .filter((entry) => entry.isFile && OVERFLOW_FILE.test(entry.name))
    .map((entry) => entry.name)
    .sort();
  if (names.length > 0) {
    log.info("taking {count} received batches a previous run left in {dir}", {
      count: names.length,
      dir,
    });
  }
  return names.map((name) =>
    fileBatch(`${dir}/${name}`, { refusedSenders: 0, lastRefusedUid: -1, lastRefusedPid: -1 })
  );
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
  if (options.overflowDir) {
    Deno.mkdirSync(options.overflowDir, { recursive: true, mode: 0o750 });
    for (const batch of leftoverBatches(options.overflowDir)) options.onBatch(batch);
  }
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
    } else if (message.type === "batch") {
      const bytes = message.buffer.byteLength;
      options.onBatch({ ...message, settle: () => Atomics.sub(heldBytes, 0, bytes) });
    } else if (message.type === "file") {
      const { file, type: _, ...batch } = message;
      options.onBatch(fileBatch(file, batch));
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
    overflowDir: options.overflowDir,
    memoryBytes: options.overflowAfterBytes ?? OVERFLOW_AFTER_BYTES,
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
