import assert from "node:assert/strict";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import { frameCount, frameLength } from "../src/buffer/frame.ts";
import { startSpooledReceiver } from "./support/receiver.ts";
import { waitFor } from "./support/wait.ts";

const encoder = new TextEncoder();

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

Deno.test("the receive thread spools every datagram by itself, while the main thread is busy elsewhere", () =>
  withDir(async (dir) => {
    const path = `${dir}/events.sock`;
    const receiver = startSpooledReceiver({ path, mode: 0o600, receiveBufferBytes: 4 << 20 });
    const sender = new DatagramSender(path);
    try {
      await waitFor(() => sender.send(encoder.encode("first")), { what: "the first send" });
      await waitFor(() => recordsOnDisk(`${path}.spool`) === 1, { what: "the first record" });
      // From here the main thread never yields: whatever reaches the disk the receive thread
      // wrote alone.
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
      assert.equal(receiver.spool.signals.head(), total + 1, "and the head published");
      assert.deepEqual(
        receiver.texts(),
        ["first", ...Array.from({ length: total }, (_, i) => `message ${i}`)],
      );
    } finally {
      sender.close();
      await receiver.stop();
    }
  }));
