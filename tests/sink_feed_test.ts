import * as assert from "node:assert/strict";
import type { MiningEvent } from "../src/events.ts";
import { Histogram } from "../src/ops/metrics.ts";
import type { Acknowledge, Sink, SinkStats } from "../src/sink.ts";
import { SinkFeed } from "../src/sinks/feed.ts";
import { Spool } from "../src/buffer/spool.ts";
import { SpoolReader } from "../src/buffer/reader.ts";
import { writable, type WritableSpool } from "./support/writable_spool.ts";
import { waitFor } from "./support/wait.ts";

/** A sink whose backend can be taken away: while down it holds what it is pushed. */
class GatedSink implements Sink {
  readonly name: string;
  readonly delivered: MiningEvent[] = [];
  readonly writeLatency = new Histogram();
  #pending: MiningEvent[] = [];
  /** Where the last push ended: acknowledged with the next write. */
  #end = 0;
  /** Set by the feed that makes it ({@link feedOf}). */
  acknowledge: Acknowledge = () => {};
  #up: boolean;
  #waiters: (() => void)[] = [];
  /** Most events it ever held at once. */
  peakPending = 0;

  constructor(name: string, up = true) {
    this.name = name;
    this.#up = up;
  }

  set up(up: boolean) {
    this.#up = up;
    if (up) this.#write();
  }

  push(events: readonly MiningEvent[], end: number): void {
    this.#pending.push(...events);
    this.#end = end;
    this.peakPending = Math.max(this.peakPending, this.#pending.length);
    // Confirm on a later task, as a real backend would.
    setTimeout(() => this.#write(), 0);
  }

  flush(signal?: AbortSignal): Promise<void> {
    if (this.#pending.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      signal?.addEventListener("abort", () => resolve(), { once: true });
    });
  }

  close(): Promise<void> {
    for (const resolve of this.#waiters.splice(0)) resolve();
    return Promise.resolve();
  }

  stats(): SinkStats {
    return {
      written: this.delivered.length,
      retried: 0,
      pending: this.#pending.length,
      dropped: 0,
      up: this.#up,
      writeLatency: this.writeLatency,
    };
  }

  #write(): void {
    if (!this.#up) return;
    this.delivered.push(...this.#pending);
    this.#pending = [];
    this.acknowledge(this.#end);
    for (const resolve of this.#waiters.splice(0)) resolve();
  }
}

const encoder = new TextEncoder();

function datagram(seq: number): Uint8Array {
  return encoder.encode(JSON.stringify({
    event: "share_submitted",
    ts: 1708617600 + seq / 1000,
    source: "hosted",
    seq,
    emitter: "00000000000000aa",
    data: { user: "tb1q", worker: "w", sdiff: seq, accepted: true },
  }));
}

/**
 * Spools events `from`..`to` - 1 in frames of `batch`, as the receive thread does; with
 * `invalidEvery`, a datagram that is not JSON follows every so many.
 */
function spoolRange(
  spool: WritableSpool,
  from: number,
  to: number,
  { batch = FRAME_RECORDS, invalidEvery = 0 } = {},
): void {
  for (let start = from; start < to; start += batch) {
    const datagrams: Uint8Array[] = [];
    for (let seq = start; seq < Math.min(to, start + batch); seq++) {
      datagrams.push(datagram(seq));
      if (invalidEvery > 0 && seq % invalidEvery === 0) datagrams.push(encoder.encode("{oops"));
    }
    spool.append(datagrams);
  }
}

const seqs = (events: readonly MiningEvent[]) => events.map((event) => event.seq);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-feed-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function openSpool(dir: string, readers: string[], maxBytes = 64 * 1024 * 1024): WritableSpool {
  return writable(
    Spool.open({ dir, maxBytes, fsyncIntervalMs: 50, readers, segmentBytes: 16 * 1024 }),
  );
}

/** Bytes of the largest test datagram; memory limits below are so many of them. */
const RECORD_BYTES = datagram(99_999).length;
/** Records in one frame of {@link spoolRange}: what a read may take beyond the limit. */
const FRAME_RECORDS = 50;

/**
 * A feed for `sink` from its saved position, as its thread would run it, holding about
 * `records` test datagrams in memory.
 */
function feedOf(spool: Spool, sink: GatedSink, records: number): SinkFeed {
  return new SinkFeed({
    sink: (acknowledge) => Object.assign(sink, { acknowledge }),
    reader: new SpoolReader(spool.dir, spool.position(sink.name), spool.signals),
    signals: spool.signals,
    readerIndex: spool.readerIndex(sink.name),
    memoryLimitBytes: records * RECORD_BYTES,
    lingerMs: 0,
  });
}

/** What the main thread does with the acknowledgements. */
function takeAcks(spool: Spool, ...names: string[]): void {
  for (const name of names) spool.confirm(name, spool.signals.acked(spool.readerIndex(name)));
}

Deno.test("a sink that keeps up gets every event in order and its position reaches the head", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["live"]);
    const sink = new GatedSink("live");
    const feed = feedOf(spool, sink, 1000);
    spoolRange(spool, 1, 2001);
    await feed.drain(spool.head, AbortSignal.timeout(10_000));
    assert.deepEqual(seqs(sink.delivered), range(1, 2001));
    assert.equal(feed.stats().position, spool.head);
    takeAcks(spool, "live");
    assert.equal(spool.stats().behind.live, 0);
    await feed.close();
    await spool.close();
  });
});

Deno.test("a sink whose backend is away holds at most the memory limit, then gets the rest from the spool in order", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["away", "live"]);
    const away = new GatedSink("away", false);
    const live = new GatedSink("live");
    const feeds = [feedOf(spool, away, 200), feedOf(spool, live, 200)];
    spoolRange(spool, 1, 5001);
    await waitFor(() => live.delivered.length === 5000, { what: "5000 events in the live sink" });
    await waitFor(() => away.peakPending >= 100, { what: "the away sink to fill up" });
    assert.ok(away.peakPending <= 200 + FRAME_RECORDS, `held ${away.peakPending} in memory`);
    const held = feeds[0].stats().heldBytes;
    assert.ok(held > 0 && held <= (200 + FRAME_RECORDS) * RECORD_BYTES, `held ${held} bytes`);
    assert.ok(away.peakPending < 5000 / 2, "the limit is what stopped the feed");
    assert.equal(feeds[0].stats().behind, true);
    await feeds[1].drain(spool.head, AbortSignal.timeout(10_000));
    takeAcks(spool, "away", "live");
    assert.deepEqual([spool.stats().behind.away, spool.stats().behind.live], [5000, 0]);

    away.up = true;
    await feeds[0].drain(spool.head, AbortSignal.timeout(20_000));
    assert.deepEqual(seqs(away.delivered), range(1, 5001), "all, in order, once");
    assert.ok(away.peakPending <= 200 + FRAME_RECORDS, `held ${away.peakPending} in memory`);
    assert.equal(feeds[0].stats().behind, false);
    assert.equal(feeds[0].stats().heldBytes, 0, "everything settled, nothing held");
    takeAcks(spool, "away");
    assert.equal(spool.position("away"), spool.head);
    await Promise.all(feeds.map((feed) => feed.close()));
    await spool.close();
  });
});

Deno.test("invalid records in the spool are passed by every position and never count as lost", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["away", "live"]);
    const away = new GatedSink("away", false);
    const live = new GatedSink("live");
    const feeds = [feedOf(spool, away, 200), feedOf(spool, live, 200)];
    spoolRange(spool, 1, 3001, { invalidEvery: 7 });
    await feeds[1].drain(spool.head, AbortSignal.timeout(10_000));
    assert.equal(live.delivered.length, 3000);
    away.up = true;
    await feeds[0].drain(spool.head, AbortSignal.timeout(20_000));
    assert.deepEqual(seqs(away.delivered), range(1, 3001), "all valid ones, in order");
    assert.equal(spool.head, 3000 + Math.floor(3000 / 7));
    assert.deepEqual(feeds.map((feed) => feed.stats().position), [spool.head, spool.head]);
    assert.deepEqual(feeds.map((feed) => feed.stats().lost), [0, 0]);
    await Promise.all(feeds.map((feed) => feed.close()));
    await spool.close();
  });
});

Deno.test("events a sink had not confirmed when the collector stopped are delivered after the next start", async () => {
  await withDir(async (dir) => {
    const first = openSpool(dir, ["redis", "postgres"]);
    const redis = new GatedSink("redis");
    const postgres = new GatedSink("postgres", false);
    const feeds = [feedOf(first, redis, 100), feedOf(first, postgres, 100)];
    spoolRange(first, 1, 1001);
    await feeds[0].drain(first.head, AbortSignal.timeout(10_000));
    await feeds[1].drain(first.head, AbortSignal.timeout(200));
    await Promise.all(feeds.map((feed) => feed.close()));
    takeAcks(first, "redis", "postgres");
    assert.equal(first.stats().behind.postgres, 1000);
    await first.close();

    const second = openSpool(dir, ["redis", "postgres"]);
    const redis2 = new GatedSink("redis");
    const postgres2 = new GatedSink("postgres");
    const again = [feedOf(second, redis2, 100), feedOf(second, postgres2, 100)];
    spoolRange(second, 1001, 1101);
    await Promise.all(again.map((feed) => feed.drain(second.head, AbortSignal.timeout(10_000))));
    assert.deepEqual(seqs(postgres2.delivered), range(1, 1101), "the backlog first, then new");
    assert.deepEqual(seqs(redis2.delivered), range(1001, 1101), "redis had confirmed the rest");
    await Promise.all(again.map((feed) => feed.close()));
    await second.close();
  });
});

Deno.test("a spool too small for an outage drops the oldest events of the absent sink only, and counts them", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["away", "live"], 128 * 1024);
    const away = new GatedSink("away", false);
    const live = new GatedSink("live");
    const feeds = [feedOf(spool, away, 100), feedOf(spool, live, 100)];
    for (let from = 1; from < 3001; from += 50) {
      spoolRange(spool, from, from + 50);
      // The live backend keeps up, as a healthy one does between two batches.
      await feeds[1].drain(spool.head, AbortSignal.timeout(10_000));
      takeAcks(spool, "away", "live");
      assert.ok(spool.stats().bytes <= 128 * 1024);
    }

    away.up = true;
    await feeds[0].drain(spool.head, AbortSignal.timeout(20_000));
    const got = seqs(away.delivered);
    const lost = feeds[0].stats().lost;
    assert.ok(lost > 0, "some were evicted");
    assert.equal(got.length + lost, 3000, "every event delivered or counted as lost");
    assert.deepEqual(got.slice(100), range(3001 - got.length + 100, 3001), "the newest survive");
    assert.deepEqual(seqs(live.delivered), range(1, 3001));
    assert.equal(feeds[1].stats().lost, 0);
    await Promise.all(feeds.map((feed) => feed.close()));
    await spool.close();
  });
});
