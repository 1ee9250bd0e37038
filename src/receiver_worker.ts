/**
 * The receive thread: blocks in `recvmmsg` on the bound socket, appends what each call
 * returned to the spool as one frame with one `write(2)`, and hands the frames to the main
 * thread. Nothing the main thread or the sinks do can keep datagrams waiting in the kernel
 * queue, and once a datagram is off that queue it is in the page cache: a crash of the
 * collector loses nothing it received. Datagrams from senders whose uid is not allowed are
 * counted here and never copied.
 *
 * While the main thread holds less than `memoryBytes` of frames it has not ingested, they are
 * handed over in memory (the bytes as written, transferred); past that, only where they are,
 * and the main thread reads them back from the spool when it gets to them. So a main thread
 * that cannot keep up costs disk space, not memory.
 *
 * Protocol: the main thread posts {@link ReceiverWorkerStart}; this thread answers with
 * {@link ReceiverWorkerMessage}s. Setting the shared stop flag makes it drain what is still
 * queued, post `drained` and return.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { setThreadName } from "../ffi/libc.ts";
import { BatchReceiver } from "../ffi/unix_datagram.ts";
import { FrameBuilder } from "./spool_frame.ts";
import { SpoolWriter, type SpoolWriterOptions, type WriterStep } from "./spool_writer.ts";

/** First message from the main thread. */
export interface ReceiverWorkerStart {
  readonly fd: number;
  /** Int32 flag: 0 running, 1 stop. */
  readonly stop: SharedArrayBuffer;
  readonly slots: number;
  readonly slotBytes: number;
  /** uids whose datagrams are kept; empty keeps every datagram. */
  readonly allowedSenderUids: readonly number[];
  /** Int32: bytes of frames handed over in memory and not yet settled by the main thread. */
  readonly held: SharedArrayBuffer;
  readonly memoryBytes: number;
  readonly spool: SpoolWriterOptions;
}

/** Frames appended since the last hand-over, and the senders refused meanwhile. */
export interface Handover {
  readonly steps: readonly WriterStep[];
  /** The appended frames' bytes back to back; unset when they are only in the spool. */
  readonly buffer?: ArrayBuffer;
  /** Why the writer could not write a frame it keeps in memory. */
  readonly writeError?: string;
  readonly refusedSenders: number;
  readonly lastRefusedUid: number;
  readonly lastRefusedPid: number;
}

/** Messages this thread posts. */
export type ReceiverWorkerMessage =
  | { readonly type: "running" }
  | ({ readonly type: "frames" } & Handover)
  | { readonly type: "drained" }
  | { readonly type: "error"; readonly message: string };

/** A hand-over is made once this many bytes are gathered... */
const HANDOVER_BYTES = 256 * 1024;
/** ...or once the oldest gathered datagram has waited this long, or the queue is empty. */
const HANDOVER_DELAY_MS = 1;

/** Frames appended and refusals counted since the last hand-over. */
class Gathered {
  readonly builder = new FrameBuilder();
  steps: WriterStep[] = [];
  refused = 0;
  lastRefusedUid = -1;
  lastRefusedPid = -1;

  get empty(): boolean {
    return this.steps.length === 0 && this.refused === 0;
  }
}

/**
 * Copies what the last receive returned into the open frame; with `allowed`, only datagrams
 * whose sender's uid is in it (one without credentials is refused too).
 */
function gather(
  receiver: BatchReceiver,
  count: number,
  gathered: Gathered,
  allowed: ReadonlySet<number> | undefined,
): void {
  for (let i = 0; i < count; i++) {
    if (allowed !== undefined && !allowed.has(receiver.senderUid(i))) {
      // Rare by design, so reading the whole ucred again for the log line costs nothing.
      const sender = receiver.credentials(i);
      gathered.refused++;
      gathered.lastRefusedUid = sender?.uid ?? -1;
      gathered.lastRefusedPid = sender?.pid ?? -1;
      continue;
    }
    const datagram = receiver.datagram(i);
    gathered.builder.append(datagram.bytes, datagram.truncated);
  }
}

/** Writes the open frame to the spool; it stays in the builder for the hand-over. */
function spoolFrame(writer: SpoolWriter, gathered: Gathered): void {
  const frame = gathered.builder.finishFrame();
  if (!frame) return;
  for (const step of writer.append(frame.bytes, frame.count)) gathered.steps.push(step);
}

function handOver(start: ReceiverWorkerStart, writer: SpoolWriter, gathered: Gathered): void {
  const held = new Int32Array(start.held);
  const bytes = gathered.builder.byteLength;
  // A frame kept in memory exists nowhere else: it goes over in memory whatever is held.
  const inMemory = writer.unwritten > 0 || Atomics.load(held, 0) + bytes <= start.memoryBytes;
  const buffer = gathered.builder.take();
  const handover = {
    steps: gathered.steps,
    writeError: writer.lastError?.message,
    refusedSenders: gathered.refused,
    lastRefusedUid: gathered.lastRefusedUid,
    lastRefusedPid: gathered.lastRefusedPid,
  };
  gathered.steps = [];
  gathered.refused = 0;
  gathered.lastRefusedUid = -1;
  gathered.lastRefusedPid = -1;
  if (inMemory && bytes > 0) {
    Atomics.add(held, 0, bytes);
    const message: ReceiverWorkerMessage = { type: "frames", ...handover, buffer };
    self.postMessage(message, [buffer]);
  } else {
    self.postMessage({ type: "frames", ...handover } satisfies ReceiverWorkerMessage);
  }
}

/**
 * Under load, one message per system call would flood the main thread; so this blocks only
 * while it holds nothing, and hands over when the kernel queue is empty, enough bytes are
 * gathered, or the oldest datagram has waited {@link HANDOVER_DELAY_MS}. The spool gets every
 * receive at once.
 */
function run(start: ReceiverWorkerStart): void {
  setThreadName("tbg-receive");
  self.postMessage({ type: "running" } satisfies ReceiverWorkerMessage);
  const { fd, stop, slots, slotBytes, allowedSenderUids } = start;
  const writer = new SpoolWriter(start.spool);
  const gathered = new Gathered();
  const stopFlag = new Int32Array(stop);
  const receiver = new BatchReceiver(fd, slots, slotBytes);
  // No list: no per-datagram check at all.
  const allowed = allowedSenderUids.length > 0 ? new Set(allowedSenderUids) : undefined;
  let oldest = 0;
  try {
    while (Atomics.load(stopFlag, 0) === 0) {
      const count = receiver.receive(gathered.empty);
      if (count > 0) {
        if (gathered.empty) oldest = performance.now();
        gather(receiver, count, gathered, allowed);
        spoolFrame(writer, gathered);
      }
      if (
        !gathered.empty &&
        (count === 0 || gathered.builder.byteLength >= HANDOVER_BYTES ||
          performance.now() - oldest >= HANDOVER_DELAY_MS)
      ) {
        handOver(start, writer, gathered);
      }
    }
    for (let count = receiver.receive(false); count > 0; count = receiver.receive(false)) {
      gather(receiver, count, gathered, allowed);
      spoolFrame(writer, gathered);
    }
    if (!gathered.empty) handOver(start, writer, gathered);
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
