import assert from "node:assert/strict";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import type { DatagramBatch } from "../src/datagram_batch.ts";
import { frameCount, frameLength } from "../src/spool_frame.ts";
import { startSpooledReceiver } from "./support/receiver.ts";
import { waitFor } from "./support/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-receiver-spool-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Records in the whole frames of the spool's segment files, read straight from disk. */
function recordsOnDisk(dir: string): number {
  let records = 0;
  for (const entry of Deno.readDirSync(dir)) {
    if (!entry.name.endsWith(".spool")) continue;
    const data = Deno.readFileSync(`${dir}/${entry.name}`);
    for (let offset = 0, length; (length = frameLength(data, offset)) > 0; offset += length) {
      if (offset + length > data.length) break;
      records += frameCount(data, offset);
    }
  }
  return records;
}

/** A receiver on `dir` gathering every batch it hands over, never settling one. */
function gatheringReceiver(dir: string, heldInMemoryBytes?: number) {
  const path = `${dir}/events.sock`;
  const batches: DatagramBatch[] = [];
  const receiver = startSpooledReceiver({
    path,
    mode: 0o600,
    receiveBufferBytes: 4 << 20,
    heldInMemoryBytes,
    onBatch: (batch) => batches.push(batch),
    onError: (message) => assert.fail(message),
  });
  return { path, batches, receiver, sender: new DatagramSender(path) };
}

const texts = (batches: readonly DatagramBatch[]) =>
  batches.flatMap((batch) => batch.records().map((record) => decoder.decode(record.bytes)));

Deno.test("the receive thread spools every datagram by itself, while the main thread is busy elsewhere", () =>
  withDir(async (dir) => {
    const { path, batches, receiver, sender } = gatheringReceiver(dir);
    try {
      await waitFor(() => sender.send(encoder.encode("first")), { what: "the first send" });
      await waitFor(() => batches.length === 1, { what: "the first hand-over" });
      assert.equal(recordsOnDisk(`${path}.spool`), 1);
      // From here the main thread never yields: no hand-over reaches it, so whatever is on
      // disk the receive thread wrote alone, before the main thread could see it.
      const total = 2000;
      const deadline = Date.now() + 60_000;
      for (let i = 0; i < total; i++) {
        const bytes = encoder.encode(`message ${i}`);
        while (!sender.send(bytes)) {
          if (Date.now() > deadline) assert.fail(`send ${i} refused until the deadline`);
        }
      }
      let onDisk = 0;
      while ((onDisk = recordsOnDisk(`${path}.spool`)) < total + 1 && Date.now() < deadline) {
        // spinning on purpose
      }
      assert.equal(onDisk, total + 1, "every datagram on disk with the main thread blocked");
      assert.equal(batches.length, 1, "and none of them handed over yet");
      await waitFor(() => texts(batches).length === total + 1, { what: "the hand-overs" });
      assert.deepEqual(
        texts(batches),
        ["first", ...Array.from({ length: total }, (_, i) => `message ${i}`)],
      );
      assert.deepEqual(
        batches.map((batch) => batch.first),
        batches.map((_, i) => i === 0 ? 0 : batches[i - 1].first + batches[i - 1].count),
        "batches are consecutive runs of spool indices",
      );
    } finally {
      sender.close();
      await receiver.stop();
    }
  }));

Deno.test("past the memory bound, frames are handed over by their place and read back from the spool, in order", () =>
  withDir(async (dir) => {
    // A main thread that never gets round to them: nothing is settled.
    const { batches, receiver, sender } = gatheringReceiver(dir, 4096);
    const total = 3000;
    try {
      for (let i = 0; i < total; i++) {
        const bytes = encoder.encode(`message ${i}`);
        await waitFor(() => sender.send(bytes), { what: `send ${i}` });
      }
      await waitFor(() => batches.reduce((sum, b) => sum + b.count, 0) === total, {
        what: `${total} datagrams handed over`,
      });
      const byPlace = batches.filter((batch) => batch.settle === undefined);
      assert.ok(byPlace.length > 0, "later batches came without their bytes");
      assert.ok(byPlace.length < batches.length, "the first ones came in memory");
      assert.deepEqual(texts(batches), Array.from({ length: total }, (_, i) => `message ${i}`));
    } finally {
      sender.close();
      await receiver.stop();
    }
  }));
