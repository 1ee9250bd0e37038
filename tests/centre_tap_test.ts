import assert from "node:assert/strict";
import { SpoolReader } from "../src/buffer/reader.ts";
import { Spool } from "../src/buffer/spool.ts";
import { CentreTap } from "../src/centre_tap.ts";
import { decodeDatagram } from "../src/datagram.ts";
import { encode, share } from "./support/spool_records.ts";
import { writable } from "./support/writable_spool.ts";

/** Every third datagram of `from`..`to` is not JSON; the others are shares numbered by index. */
const datagrams = (from: number, to: number) =>
  Array.from(
    { length: to - from },
    (_, i) => (from + i) % 3 === 2 ? encode("{oops") : encode(share(from + i)),
  );

/** Reads on as a fed sink does, giving the tap every record it decodes. */
function sinkReads(reader: SpoolReader, tap: CentreTap): number {
  let read = 0;
  while (reader.behind) {
    for (const record of reader.read(7)) {
      tap.decoded(record, decodeDatagram(record.bytes, record.truncated));
      read++;
    }
  }
  return read;
}

async function withSpool(run: (spool: ReturnType<typeof writable>) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-centre-" });
  const spool = writable(Spool.open({
    dir,
    maxBytes: 64 * 1024 * 1024,
    fsyncIntervalMs: 1000,
    readers: ["sink"],
    segmentBytes: 4096,
  }));
  try {
    run(spool);
  } finally {
    await spool.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the centre counts every record of this run once, from the sink's decode or its own", async () => {
  await withSpool((spool) => {
    // An earlier run's records, counted then; this run starts at 30.
    spool.append(datagrams(0, 30));
    const tap = new CentreTap(spool.dir, 30, spool.signals);
    const sink = new SpoolReader(spool.dir, 0, spool.signals);
    spool.append(datagrams(30, 60));

    // A sink replaying older records is not about to read the next one to count: the centre
    // reads it itself, and the sink's own decode of it later counts nothing.
    assert.equal(tap.catchUp(sink.next, true), false, "nothing is left to count");
    assert.equal(tap.next, 60);
    assert.equal(sinkReads(sink, tap), 60);
    let counters = tap.collector.counters();
    assert.equal(counters.received, 30);
    assert.equal(counters.accepted, 20);
    assert.equal(counters.invalid.not_json, 10);

    // A sink that keeps up is left to read: the centre counts its decode.
    spool.append(datagrams(60, 90));
    assert.equal(tap.catchUp(sink.next, true), false);
    assert.equal(tap.next, 60, "the centre waits for the sink's read");
    sinkReads(sink, tap);
    assert.equal(tap.next, 90);
    counters = tap.collector.counters();
    assert.equal(counters.received, 60);
    assert.equal(counters.accepted, 40);

    // A sink with no room to read: the centre goes on by itself, and the sink's late reads
    // count nothing twice.
    spool.append(datagrams(90, 120));
    tap.catchUp(sink.next, false);
    assert.equal(tap.next, 120);
    sinkReads(sink, tap);
    counters = tap.collector.counters();
    assert.equal(counters.received, 90);
    assert.equal(counters.accepted, 60);
    assert.equal(counters.invalid.not_json, 30);
    sink.close();
    tap.close();
  });
});

Deno.test("the centre counts up to a record on request, whatever the sink does", async () => {
  await withSpool((spool) => {
    const tap = new CentreTap(spool.dir, 0, spool.signals);
    spool.append(datagrams(0, 50));
    tap.countUntil(20);
    assert.equal(tap.next, 20);
    assert.equal(tap.collector.counters().received, 20);
    tap.countUntil(1_000); // past the head: counts what there is
    assert.equal(tap.next, 50);
    assert.equal(tap.collector.counters().received, 50);
    tap.close();
  });
});

Deno.test("the centre says when one catch-up left records to count, and goes on from there", async () => {
  await withSpool((spool) => {
    const tap = new CentreTap(spool.dir, 0, spool.signals);
    // Past the 4 MiB one catch-up reads.
    const padding = "x".repeat(60_000);
    for (let i = 0; i < 80; i++) {
      const event = share(i);
      spool.append([encode({ ...event, data: { ...event.data, padding } })]);
    }
    let turns = 0;
    while (tap.catchUp(0, false)) turns++;
    assert.ok(turns >= 1, "the first catch-up left records to count");
    assert.equal(tap.next, 80);
    assert.equal(tap.collector.counters().received, 80);
    assert.equal(tap.catchUp(0, false), false);
    tap.close();
  });
});
