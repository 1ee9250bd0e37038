import assert from "node:assert/strict";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import {
  type DatagramBatch,
  DatagramBatchBuilder,
  forEachDatagram,
} from "../src/datagram_batch.ts";
import { startReceiver } from "../src/receiver.ts";
import { waitFor } from "./support/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-overflow-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const batchFiles = (dir: string) =>
  [...Deno.readDirSync(dir)].filter((entry) => entry.name.endsWith(".batch")).length;

function texts(batches: readonly DatagramBatch[]): string[] {
  const out: string[] = [];
  for (const batch of batches) forEachDatagram(batch, (bytes) => out.push(decoder.decode(bytes)));
  return out;
}

Deno.test("batches the main thread has not taken go to files past the memory bound, in order", () =>
  withDir(async (dir) => {
    const overflow = `${dir}/intake`;
    const batches: DatagramBatch[] = [];
    const receiver = startReceiver({
      path: `${dir}/events.sock`,
      mode: 0o600,
      receiveBufferBytes: 4 << 20,
      overflowDir: overflow,
      overflowAfterBytes: 4096,
      // A main thread that never gets round to them: nothing is settled.
      onBatch: (batch) => batches.push(batch),
      onError: (message) => assert.fail(message),
    });
    const sender = new DatagramSender(`${dir}/events.sock`);
    const total = 3000;
    try {
      for (let i = 0; i < total; i++) {
        const bytes = encoder.encode(`message ${i}`);
        await waitFor(() => sender.send(bytes), { what: `send ${i}` });
      }
      await waitFor(() => batches.reduce((sum, b) => sum + b.count, 0) === total, {
        what: `${total} datagrams handed over`,
      });
      assert.ok(batchFiles(overflow) > 0, "later batches went to files");
      assert.deepEqual(texts(batches), Array.from({ length: total }, (_, i) => `message ${i}`));
      for (const batch of batches) batch.settle?.();
      assert.equal(batchFiles(overflow), 0, "settled files are deleted");
    } finally {
      sender.close();
      await receiver.stop();
    }
  }));

Deno.test("batches a killed collector left in the overflow directory are handed over first", () =>
  withDir(async (dir) => {
    const overflow = `${dir}/intake`;
    Deno.mkdirSync(overflow);
    const builder = new DatagramBatchBuilder();
    builder.append(encoder.encode("left 1"), false);
    builder.append(encoder.encode("left 2"), false);
    Deno.writeFileSync(
      `${overflow}/000001700000000-000000000001.batch`,
      new Uint8Array(builder.take().buffer),
    );
    const batches: DatagramBatch[] = [];
    const receiver = startReceiver({
      path: `${dir}/events.sock`,
      mode: 0o600,
      receiveBufferBytes: 1 << 20,
      overflowDir: overflow,
      onBatch: (batch) => batches.push(batch),
      onError: (message) => assert.fail(message),
    });
    const sender = new DatagramSender(`${dir}/events.sock`);
    try {
      assert.ok(sender.send(encoder.encode("new 1")));
      await waitFor(() => texts(batches).length === 3, { what: "three datagrams" });
      assert.deepEqual(texts(batches), ["left 1", "left 2", "new 1"]);
      for (const batch of batches) batch.settle?.();
      assert.equal(batchFiles(overflow), 0);
    } finally {
      sender.close();
      await receiver.stop();
    }
  }));
