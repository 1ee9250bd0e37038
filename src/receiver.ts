/**
 * Binds the collector's socket and runs the receive thread.
 *
 * @module
 */
import { bindDatagramSocket, closeSocket, unlinkSocket } from "../ffi/unix_datagram.ts";
import type { DatagramBatch } from "./datagram_batch.ts";
import type { ReceiverWorkerMessage, ReceiverWorkerStart } from "./receiver_worker.ts";

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
  /** Called on the main thread for each batch, in arrival order. */
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

/** Binds the socket at `options.path` and starts receiving on a dedicated thread. */
export function startReceiver(options: ReceiverOptions): Receiver {
  const socket = bindDatagramSocket(options.path, {
    mode: options.mode,
    receiveBufferBytes: options.receiveBufferBytes,
    group: options.group,
  });
  const stopFlag = new SharedArrayBuffer(4);
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
    finished();
  };
  worker.onmessage = (event: MessageEvent<ReceiverWorkerMessage>) => {
    const message = event.data;
    if (message.type === "batch") {
      options.onBatch(message);
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
