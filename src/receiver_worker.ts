/**
 * The receive thread: blocks in `recvmmsg` on the bound socket and hands each batch to the
 * main thread, so nothing the sinks do can keep datagrams waiting in the kernel queue.
 *
 * Protocol: the main thread posts {@link ReceiverWorkerStart}; this thread answers with
 * {@link ReceiverWorkerMessage}s. Setting the shared stop flag makes it drain what is still
 * queued, post `drained` and return.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { BatchReceiver } from "../ffi/unix_datagram.ts";
import { packDatagrams, type RawDatagram } from "./datagram_batch.ts";

/** First message from the main thread. */
export interface ReceiverWorkerStart {
  readonly fd: number;
  /** Int32 flag: 0 running, 1 stop. */
  readonly stop: SharedArrayBuffer;
  readonly slots: number;
  readonly slotBytes: number;
}

/** Messages this thread posts. */
export type ReceiverWorkerMessage =
  | { readonly type: "batch"; readonly buffer: ArrayBuffer; readonly count: number }
  | { readonly type: "drained" }
  | { readonly type: "error"; readonly message: string };

function postBatch(receiver: BatchReceiver, count: number): void {
  const datagrams: RawDatagram[] = new Array(count);
  for (let i = 0; i < count; i++) datagrams[i] = receiver.datagram(i);
  const batch = packDatagrams(datagrams);
  const message: ReceiverWorkerMessage = { type: "batch", ...batch };
  self.postMessage(message, [batch.buffer]);
}

function run({ fd, stop, slots, slotBytes }: ReceiverWorkerStart): void {
  const stopFlag = new Int32Array(stop);
  const receiver = new BatchReceiver(fd, slots, slotBytes);
  while (Atomics.load(stopFlag, 0) === 0) {
    const count = receiver.receive(true);
    if (count > 0) postBatch(receiver, count);
  }
  for (let count = receiver.receive(false); count > 0; count = receiver.receive(false)) {
    postBatch(receiver, count);
  }
}

self.onmessage = (event: MessageEvent<ReceiverWorkerStart>) => {
  let message: ReceiverWorkerMessage = { type: "drained" };
  try {
    run(event.data);
  } catch (error) {
    message = { type: "error", message: error instanceof Error ? error.message : String(error) };
  }
  self.postMessage(message);
};
