/**
 * The reading loop every fed sink runs (`src/buffer/follow.ts`): it sleeps on the spool's
 * head, and wakes for what else it must see without waiting out its idle time, which these
 * tests set far longer than their own deadlines.
 */
import assert from "node:assert/strict";
import { followSpool } from "../src/buffer/follow.ts";
import { SpoolReader } from "../src/buffer/reader.ts";
import { Spool } from "../src/buffer/spool.ts";
import type { SpoolRecord } from "../src/buffer/spool.ts";
import { encode, share } from "./support/spool_records.ts";
import { waitFor } from "./support/wait.ts";
import { writable, type WritableSpool } from "./support/writable_spool.ts";

/** Longer than any deadline below: a loop that waited it out would fail the test. */
const IDLE_MS = 60_000;

interface Loop {
  readonly taken: SpoolRecord[];
  looks: number;
  room: number;
  more: boolean;
  running: boolean;
  readonly done: Promise<void>;
}

async function withLoop(test: (spool: WritableSpool, loop: Loop) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "tbg-follow-" });
  const spool = writable(
    Spool.open({ dir, maxBytes: 1 << 26, fsyncIntervalMs: 1000, readers: ["sink"] }),
  );
  const reader = new SpoolReader(dir, 0, spool.signals);
  // Waits on the signals do not keep the event loop alive; the feed has a timer for that.
  const keepAlive = setInterval(() => {}, 1_000);
  const loop: Loop = {
    taken: [],
    looks: 0,
    room: 1 << 20,
    more: false,
    running: true,
    done: Promise.resolve(),
  };
  Object.assign(loop, {
    done: followSpool({
      reader,
      signals: spool.signals,
      idleMs: IDLE_MS,
      lingerMs: 0,
      running: () => loop.running,
      look: () => {
        loop.looks++;
        return loop.more;
      },
      room: () => loop.room,
      take: (records) => loop.taken.push(...records),
    }),
  });
  try {
    await test(spool, loop);
  } finally {
    loop.running = false;
    spool.signals.wakeReaders();
    await loop.done;
    clearInterval(keepAlive);
    reader.close();
    await spool.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const deadline = { timeoutMs: 10_000 };

Deno.test("the loop takes what the writer publishes, and ends at once when woken to stop", async () => {
  await withLoop(async (spool, loop) => {
    spool.append([encode(share(0)), encode(share(1))]);
    await waitFor(() => loop.taken.length === 2, { ...deadline, what: "the records taken" });
    const started = performance.now();
    loop.running = false;
    spool.signals.wakeReaders();
    await loop.done;
    const took = performance.now() - started;
    console.log(`stopped in ${took.toFixed(1)} ms, idle wait ${IDLE_MS} ms`);
    assert.ok(took < 10_000, `stopped in ${took} ms`);
  });
});

Deno.test("a sink without room is read again once woken for the room it freed", async () => {
  await withLoop(async (spool, loop) => {
    loop.room = 0;
    spool.append([encode(share(0))]);
    const looks = loop.looks;
    await waitFor(() => loop.looks > looks, { ...deadline, what: "a look with no room" });
    assert.equal(loop.taken.length, 0, "nothing is read without room");
    loop.room = 1 << 20;
    spool.signals.wakeReaders();
    await waitFor(() => loop.taken.length === 1, { ...deadline, what: "the record taken" });
  });
});

Deno.test("a look that left work for the next turn gets it without waiting on the head", async () => {
  await withLoop(async (spool, loop) => {
    const head = spool.signals.head();
    loop.more = true;
    spool.signals.wakeReaders();
    // The head does not move: each of these turns came without waiting on it.
    await waitFor(() => loop.looks >= 100, { ...deadline, what: "100 looks" });
    assert.equal(spool.signals.head(), head);
    loop.more = false;
  });
});
