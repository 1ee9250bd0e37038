import * as assert from "node:assert/strict";
import { decodeDatagram } from "../src/datagram.ts";
import { Delivery } from "../src/delivery.ts";
import type { MiningEvent } from "../src/events.ts";
import { Histogram } from "../src/metrics.ts";
import type { Sink, SinkStats } from "../src/sink.ts";
import { Spool } from "../src/spool.ts";
import { RecordingSink } from "./support/recording_sink.ts";
import { writable, type WritableSpool } from "./support/writable_spool.ts";
import { waitFor } from "./support/wait.ts";

/** A sink whose backend can be taken away: while down it holds what it is pushed. */
class GatedSink implements Sink {
  readonly name: string;
  readonly delivered: MiningEvent[] = [];
  readonly writeLatency = new Histogram();
  #pending: MiningEvent[] = [];
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

  push(events: readonly MiningEvent[]): void {
    this.#pending.push(...events);
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
 * Spools events `from`..`to` - 1 in frames of `batch` and hands them on as the centre would;
 * with `invalidEvery`, a datagram that is not JSON follows every so many.
 */
function acceptRange(
  delivery: Delivery,
  from: number,
  to: number,
  { batch = 50, invalidEvery = 0 } = {},
): void {
  const spool = delivery.spool as WritableSpool;
  for (let start = from; start < to; start += batch) {
    const datagrams: Uint8Array[] = [];
    for (let seq = start; seq < Math.min(to, start + batch); seq++) {
      datagrams.push(datagram(seq));
      if (invalidEvery > 0 && seq % invalidEvery === 0) datagrams.push(encoder.encode("{oops"));
    }
    const first = spool.append(datagrams);
    const events: MiningEvent[] = [];
    const indices: number[] = [];
    datagrams.forEach((bytes, i) => {
      const decoded = decodeDatagram(bytes, false);
      if (!decoded.ok) return;
      events.push(decoded.event);
      indices.push(first + i);
    });
    delivery.accept({ first, count: datagrams.length, events, indices });
  }
}

const seqs = (events: readonly MiningEvent[]) => events.map((event) => event.seq);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-delivery-" });
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

Deno.test("a sink that keeps up gets every event from memory and its position follows", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["live"]);
    const sink = new GatedSink("live");
    const delivery = new Delivery(spool, [sink], 1000);
    acceptRange(delivery, 1, 2001);
    await delivery.flush(AbortSignal.timeout(10_000));
    assert.deepEqual(seqs(sink.delivered), range(1, 2001));
    assert.equal(spool.position("live"), spool.head);
    assert.equal(delivery.stats().sinks[0].behind, 0);
    await delivery.close();
  });
});

Deno.test("a sink whose backend is away holds at most the memory limit, then gets the rest from the spool in order", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["away", "live"]);
    const away = new GatedSink("away", false);
    const live = new GatedSink("live");
    const delivery = new Delivery(spool, [away, live], 200);
    acceptRange(delivery, 1, 5001);
    await waitFor(() => live.delivered.length === 5000, { what: "5000 events in the live sink" });
    assert.ok(away.peakPending <= 200, `held ${away.peakPending} in memory`);
    const stats = delivery.stats().sinks;
    assert.equal(stats[0].behind, 5000);
    assert.equal(stats[0].replaying, true);
    await waitFor(() => delivery.stats().sinks[1].behind === 0, { what: "live confirmed" });

    away.up = true;
    await delivery.flush(AbortSignal.timeout(20_000));
    assert.deepEqual(seqs(away.delivered), range(1, 5001), "all, in order, once");
    assert.ok(away.peakPending <= 200, `held ${away.peakPending} in memory`);
    assert.equal(delivery.stats().sinks[0].replaying, false);
    assert.equal(spool.position("away"), spool.head);
    await delivery.close();
  });
});

Deno.test("invalid records in the spool are passed by every position, live and in replay, and never count as lost", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["away", "live"]);
    const away = new GatedSink("away", false);
    const live = new GatedSink("live");
    const delivery = new Delivery(spool, [away, live], 200);
    acceptRange(delivery, 1, 3001, { invalidEvery: 7 });
    await waitFor(() => live.delivered.length === 3000, { what: "3000 events in the live sink" });
    await waitFor(() => spool.position("live") === spool.head, { what: "live past every record" });
    away.up = true;
    await delivery.flush(AbortSignal.timeout(20_000));
    assert.deepEqual(seqs(away.delivered), range(1, 3001), "replayed: all valid ones, in order");
    assert.equal(spool.head, 3000 + Math.floor(3000 / 7));
    assert.equal(spool.position("away"), spool.head);
    assert.deepEqual(delivery.stats().sinks.map((s) => s.lost), [0, 0]);
    await delivery.close();
  });
});

Deno.test("events a sink had not confirmed when the collector stopped are delivered after the next start", async () => {
  await withDir(async (dir) => {
    const first = new Delivery(openSpool(dir, ["redis", "postgres"]), [
      new GatedSink("redis"),
      new GatedSink("postgres", false),
    ], 100);
    acceptRange(first, 1, 1001);
    await first.flush(AbortSignal.timeout(200));
    // The open sink confirms everything; on a busy machine that may take longer than the flush.
    await waitFor(() => first.stats().sinks[0].behind === 0, { what: "redis to confirm all" });
    assert.equal(first.stats().sinks[1].behind, 1000);
    await first.close();

    const redis = new RecordingSink("redis");
    const postgres = new RecordingSink("postgres");
    const second = new Delivery(openSpool(dir, ["redis", "postgres"]), [redis, postgres], 100);
    acceptRange(second, 1001, 1101);
    await second.flush(AbortSignal.timeout(10_000));
    assert.deepEqual(seqs(postgres.events), range(1, 1101), "the backlog first, then new events");
    assert.deepEqual(seqs(redis.events), range(1001, 1101), "redis had confirmed the rest");
    await second.close();
  });
});

Deno.test("a spool too small for an outage drops the oldest events of the absent sink only, and counts them", async () => {
  await withDir(async (dir) => {
    const spool = openSpool(dir, ["away", "live"], 128 * 1024);
    const away = new GatedSink("away", false);
    const live = new GatedSink("live");
    const delivery = new Delivery(spool, [away, live], 100);
    for (let from = 1; from < 3001; from += 50) {
      acceptRange(delivery, from, from + 50);
      // The live backend keeps up, as a healthy one does between two batches.
      await waitFor(() => live.stats().pending === 0, { what: "the live sink to confirm" });
      assert.ok(spool.stats().bytes <= 128 * 1024);
    }

    away.up = true;
    await delivery.flush(AbortSignal.timeout(20_000));
    const got = seqs(away.delivered);
    const lost = delivery.stats().sinks[0].lost;
    assert.ok(lost > 0, "some were evicted");
    assert.equal(got.length + lost, 3000, "every event delivered or counted as lost");
    assert.deepEqual(got.slice(100), range(3001 - got.length + 100, 3001), "the newest survive");
    assert.deepEqual(seqs(live.delivered), range(1, 3001));
    assert.equal(delivery.stats().sinks[1].lost, 0);
    await delivery.close();
  });
});
