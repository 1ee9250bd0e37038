/**
 * The receive thread: blocks in `recvmmsg` on the bound socket and hands each batch to the
 * main thread, so nothing the sinks do can keep datagrams waiting in the kernel queue.
 * Datagrams from senders whose uid is not allowed are counted here and never copied.
 *
 * When the main thread falls behind by more than `memoryBytes` of batches it has not yet
 * ingested, further batches are written to files in `overflowDir` and handed over by name, so
 * a main thread that cannot keep up costs disk space, not memory, and never makes this thread
 * stop reading the socket.
 *
 * Protocol: the main thread posts {@link ReceiverWorkerStart}; this thread answers with
 * {@link ReceiverWorkerMessage}s. Setting the shared stop flag makes it drain what is still
 * queued, post `drained` and return.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { BatchReceiver } from "../ffi/unix_datagram.ts";
import { type DatagramBatch, DatagramBatchBuilder } from "./datagram_batch.ts";

/** First message from the main thread. */
export interface ReceiverWorkerStart {
  readonly fd: number;
  /** Int32 flag: 0 running, 1 stop. */
  readonly stop: SharedArrayBuffer;
  readonly slots: number;
  readonly slotBytes: number;
  /** uids whose datagrams are kept; empty keeps every datagram. */
  readonly allowedSenderUids: readonly number[];
  /** Int32: bytes of batches handed over in memory and not yet settled by the main thread. */
  readonly held: SharedArrayBuffer;
  /** Where batches go once `memoryBytes` are held; unset keeps every batch in memory. */
  readonly overflowDir?: string;
  readonly memoryBytes: number;
}

/** Messages this thread posts. */
export type ReceiverWorkerMessage =
  | { readonly type: "running" }
  | ({ readonly type: "batch" } & DatagramBatch)
  | ({ readonly type: "file"; readonly file: string } & Omit<DatagramBatch, "buffer">)
  | { readonly type: "drained" }
  | { readonly type: "error"; readonly message: string };

/** A hand-over is made once this many bytes are gathered... */
const HANDOVER_BYTES = 256 * 1024;
/** ...or once the oldest gathered datagram has waited this long, or the queue is empty. */
const HANDOVER_DELAY_MS = 1;

/** Hands batches over, in memory while the main thread keeps up, else through files. */
class Handover {
  readonly #held: Int32Array;
  readonly #overflowDir: string | undefined;
  readonly #memoryBytes: number;
  /** Sorts after every file of an earlier start, so leftovers are taken in order. */
  readonly #prefix = String(Date.now()).padStart(15, "0");
  #files = 0;

  constructor({ held, overflowDir, memoryBytes }: ReceiverWorkerStart) {
    this.#held = new Int32Array(held);
    this.#overflowDir = overflowDir;
    this.#memoryBytes = memoryBytes;
  }

  post(builder: DatagramBatchBuilder): void {
    const batch = builder.take();
    const bytes = batch.buffer.byteLength;
    if (this.#overflowDir && Atomics.load(this.#held, 0) + bytes > this.#memoryBytes) {
      const file = `${this.#overflowDir}/${this.#prefix}-${
        String(++this.#files).padStart(12, "0")
      }.batch`;
      try {
        Deno.writeFileSync(file, new Uint8Array(batch.buffer));
        const { buffer: _, ...rest } = batch;
        self.postMessage({ type: "file", file, ...rest } satisfies ReceiverWorkerMessage);
        return;
      } catch {
        // No room on disk: memory it is, as if there were no overflow directory.
      }
    }
    Atomics.add(this.#held, 0, bytes);
    const message: ReceiverWorkerMessage = { type: "batch", ...batch };
    self.postMessage(message, [batch.buffer]);
  }
}

/**
 * Copies what the last receive returned into the builder; with `allowed`, only datagrams
 * whose sender's uid is in it (one without credentials is refused too).
 */
function gather(
  receiver: BatchReceiver,
  count: number,
  builder: DatagramBatchBuilder,
  allowed: ReadonlySet<number> | undefined,
): void {
  for (let i = 0; i < count; i++) {
    if (allowed !== undefined && !allowed.has(receiver.senderUid(i))) {
      // Rare by design, so reading the whole ucred again for the log line costs nothing.
      const sender = receiver.credentials(i);
      builder.refuse(sender?.uid ?? -1, sender?.pid ?? -1);
      continue;
    }
    const datagram = receiver.datagram(i);
    builder.append(datagram.bytes, datagram.truncated);
  }
}

/**
 * Under load, one message per system call would flood the main thread; so this blocks only
 * while it holds nothing, and hands over when the kernel queue is empty, enough bytes are
 * gathered, or the oldest datagram has waited {@link HANDOVER_DELAY_MS}.
 */
function run(start: ReceiverWorkerStart): void {
  self.postMessage({ type: "running" } satisfies ReceiverWorkerMessage);
  const { fd, stop, slots, slotBytes, allowedSenderUids } = start;
  const handover = new Handover(start);
  const stopFlag = new Int32Array(stop);
  const receiver = new BatchReceiver(fd, slots, slotBytes);
  const builder = new DatagramBatchBuilder();
  // No list: no per-datagram check at all.
  const allowed = allowedSenderUids.length > 0 ? new Set(allowedSenderUids) : undefined;
  let oldest = 0;
  while (Atomics.load(stopFlag, 0) === 0) {
    const count = receiver.receive(builder.empty);
    if (count > 0) {
      if (builder.empty) oldest = performance.now();
      gather(receiver, count, builder, allowed);
    }
    if (
      !builder.empty &&
      (count === 0 || builder.byteLength >= HANDOVER_BYTES ||
        performance.now() - oldest >= HANDOVER_DELAY_MS)
    ) {
      handover.post(builder);
    }
  }
  for (let count = receiver.receive(false); count > 0; count = receiver.receive(false)) {
    gather(receiver, count, builder, allowed);
  }
  if (!builder.empty) handover.post(builder);
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
