/**
 * The receive thread: blocks in `recvmmsg` on the bound socket and appends what each call
 * returned to the spool as one frame, with one `write(2)`, before anything else; only then
 * are those datagrams taken off the socket's queue (they were peeked). After a call that
 * emptied the queue it lets datagrams gather there for {@link GATHER_MS}, so that at ordinary
 * rates a frame, and a wake-up of every reader of the spool, carries several. Nothing the main
 * thread or the sinks do can keep datagrams waiting in the kernel queue, and a datagram
 * leaves that queue only once it is in the page cache: a crash of the collector loses nothing
 * it received, and with a socket that outlives the process (socket activation) nothing that
 * reached the socket. A crash between the write and the take-off leaves a frame that the next
 * start spools again; every sink stores by event id, so that costs nothing but the repeat.
 * Nothing is handed to another thread: the sinks read the spool (and the centre counts what
 * the PostgreSQL thread decodes). Datagrams from senders whose uid is not allowed are counted
 * here and never copied.
 *
 * Protocol: the main thread posts {@link ReceiverWorkerStart}; this thread answers with
 * {@link ReceiverWorkerMessage}s. Setting the shared stop flag makes it drain what is still
 * queued (unless the socket is inherited: then the queue waits for the next start), post
 * `drained` and return.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { setThreadName } from "../../ffi/libc.ts";
import { BatchReceiver } from "../../ffi/unix_datagram.ts";
import { FrameBuilder } from "../buffer/frame.ts";
import { SpoolWriter, type SpoolWriterOptions } from "../buffer/writer.ts";
import { ReceiveCounters } from "./counters.ts";

/** First message from the main thread. */
export interface ReceiverWorkerStart {
  readonly fd: number;
  /** Int32 flag: 0 running, 1 stop. */
  readonly stop: SharedArrayBuffer;
  readonly slots: number;
  readonly slotBytes: number;
  /** Whether to take what is still queued when stopping (not on an inherited socket). */
  readonly drainOnStop: boolean;
  /** uids whose datagrams are kept; empty keeps every datagram. */
  readonly allowedSenderUids: readonly number[];
  readonly spool: SpoolWriterOptions;
  /** The {@link ReceiveCounters} buffer. */
  readonly counters: SharedArrayBuffer;
}

/** Messages this thread posts. */
export type ReceiverWorkerMessage =
  | { readonly type: "running" }
  /** The spool could not be written (`error`), or can again (no `error`). */
  | { readonly type: "spool"; readonly error?: string; readonly unwrittenFrames: number }
  | { readonly type: "drained" }
  | { readonly type: "error"; readonly message: string };

/** While frames wait to be written, the writer tries again at least this often. */
const RETRY_MS = 100;
/**
 * After a receive that emptied the queue, how long datagrams gather in it before the next:
 * at ordinary rates every datagram would otherwise be a wake-up of this thread and of every
 * reader of the spool, each costing more than the datagram. A receive that fills every slot
 * is followed by the next at once, so the queue never waits at high rates.
 */
const GATHER_MS = 2;

/**
 * Copies what the last receive returned into one frame and spools it; with `allowed`, only
 * datagrams whose sender's uid is in it (one without credentials is refused too).
 */
function spoolReceived(
  receiver: BatchReceiver,
  count: number,
  builder: FrameBuilder,
  writer: SpoolWriter,
  counters: ReceiveCounters,
  allowed: ReadonlySet<number> | undefined,
): void {
  let refused = 0;
  let lastUid = -1;
  let lastPid = -1;
  for (let i = 0; i < count; i++) {
    if (allowed !== undefined && !allowed.has(receiver.senderUid(i))) {
      // Rare by design, so reading the whole ucred again for the log line costs nothing.
      const sender = receiver.credentials(i);
      refused++;
      lastUid = sender?.uid ?? -1;
      lastPid = sender?.pid ?? -1;
      continue;
    }
    const datagram = receiver.datagram(i);
    builder.append(datagram.bytes, datagram.truncated);
  }
  const frame = builder.finishFrame();
  if (frame) writer.append(frame.bytes, frame.count);
  builder.clear();
  receiver.consume();
  counters.add(count, refused, lastUid, lastPid);
}

/** Tells the main thread when the spool stops, or starts again, taking writes. */
class WriteState {
  #failing = false;

  report(writer: SpoolWriter): void {
    const failing = writer.unwritten > 0;
    if (failing === this.#failing) return;
    this.#failing = failing;
    self.postMessage(
      {
        type: "spool",
        error: failing ? writer.lastError?.message ?? "unknown error" : undefined,
        unwrittenFrames: writer.unwritten,
      } satisfies ReceiverWorkerMessage,
    );
  }
}

function run(start: ReceiverWorkerStart): void {
  setThreadName("tbg-receive");
  self.postMessage({ type: "running" } satisfies ReceiverWorkerMessage);
  const { fd, stop, slots, slotBytes, allowedSenderUids } = start;
  const writer = new SpoolWriter(start.spool);
  const counters = new ReceiveCounters(start.counters);
  const builder = new FrameBuilder();
  const state = new WriteState();
  const stopFlag = new Int32Array(stop);
  const receiver = new BatchReceiver(fd, slots, slotBytes);
  // No list: no per-datagram check at all.
  const allowed = allowedSenderUids.length > 0 ? new Set(allowedSenderUids) : undefined;
  let retryAt = 0;
  try {
    while (Atomics.load(stopFlag, 0) === 0) {
      const count = receiver.receive(true);
      if (count > 0) spoolReceived(receiver, count, builder, writer, counters, allowed);
      if (count > 0 && count < slots) Atomics.wait(stopFlag, 0, 0, GATHER_MS);
      if (writer.unwritten > 0 && performance.now() >= retryAt) {
        writer.retry();
        retryAt = performance.now() + RETRY_MS;
      }
      state.report(writer);
    }
    while (start.drainOnStop) {
      const count = receiver.receive(false);
      if (count === 0) break;
      spoolReceived(receiver, count, builder, writer, counters, allowed);
    }
    writer.retry();
    state.report(writer);
  } finally {
    writer.close();
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
