import assert from "node:assert/strict";
import { createClient } from "redis";
import type { MiningEvent } from "../../src/events.ts";
import { createRedisSink } from "../../src/sinks/redis/sink.ts";
import { BLOCKS_CHANNEL } from "../../src/sinks/redis/request.ts";
import { startRedis } from "../support/services.ts";
import { waitFor } from "../support/wait.ts";
import { pushEvents } from "../support/sink_push.ts";

function share(i: number, user = "tb1quser"): MiningEvent {
  return {
    id: `0e:${i}`,
    event: "share_submitted",
    ts: 1708617600 + i / 1000,
    source: "hosted",
    seq: i,
    data: {
      user,
      worker: 'w"1\\',
      client_id: 1,
      diff: 1,
      sdiff: i,
      accepted: true,
      reject_reason: "",
      ip: "127.0.0.1",
    },
  };
}

async function withRedis(
  test: (url: string, service: Awaited<ReturnType<typeof startRedis>>) => Promise<void>,
  appendOnly = false,
) {
  const service = await startRedis({ appendOnly });
  try {
    await test(service.url, service);
  } finally {
    await service.stop();
  }
}

async function reader(url: string) {
  const client = createClient({ url });
  client.on("error", () => {});
  await client.connect();
  return client;
}

Deno.test("events land in mining:{event} with the fields id event ts source data", () =>
  withRedis(async (url) => {
    const sink = createRedisSink({ url, streamMaxLen: 1000 });
    const client = await reader(url);
    try {
      const unknown: MiningEvent = {
        id: "sha256:00112233445566778899aabbccddeeff",
        event: "pool_stats",
        ts: 1708617601.5,
        source: "proxy",
        data: { x: [1] },
      };
      pushEvents(sink, [share(1), share(2), unknown]);
      await sink.flush();
      const entries = await client.sendCommand(["XRANGE", "mining:share_submitted", "-", "+"]) as [
        string,
        string[],
      ][];
      assert.equal(entries.length, 2);
      const [, fields] = entries[0];
      assert.deepEqual(fields.filter((_, i) => i % 2 === 0), [
        "id",
        "event",
        "ts",
        "source",
        "data",
      ]);
      const record = Object.fromEntries(
        fields.flatMap((v, i) => i % 2 === 0 ? [[v, fields[i + 1]]] : []),
      );
      assert.equal(record.id, "0e:1");
      assert.equal(record.event, "share_submitted");
      assert.equal(record.ts, "1708617600.001");
      assert.equal(record.source, "hosted");
      assert.deepEqual(JSON.parse(record.data), share(1).data);
      const other = await client.sendCommand(["XRANGE", "mining:pool_stats", "-", "+"]) as [
        string,
        string[],
      ][];
      assert.equal(other.length, 1);
      assert.deepEqual(other[0][1].slice(0, 2), ["id", "sha256:00112233445566778899aabbccddeeff"]);
      assert.equal(sink.stats().written, 3);
      assert.equal(sink.stats().pending, 0);
      assert.equal(sink.stats().up, true);
      assert.ok(sink.stats().writeLatency.count >= 1);
    } finally {
      await sink.close();
      await client.close();
    }
  }));

Deno.test("block_found is also published on blocks:found", () =>
  withRedis(async (url) => {
    const sink = createRedisSink({ url, streamMaxLen: 1000 });
    const subscriber = await reader(url);
    const messages: string[] = [];
    await subscriber.subscribe(BLOCKS_CHANNEL, (message: string) => messages.push(message));
    try {
      const block: MiningEvent = {
        id: "b1:9",
        event: "block_found",
        ts: 1708617700,
        source: "hosted",
        seq: 9,
        data: { user: "tb1qwinner", worker: "rig", height: 123, hash: "00ff" },
      };
      pushEvents(sink, [share(1), block]);
      await waitFor(() => messages.length === 1, { what: "block message" });
      const published = JSON.parse(messages[0]);
      assert.equal(published.event, "block_found");
      assert.equal(published.data.height, 123);
      assert.equal(published.seq, 9);
      assert.equal(published.id, "b1:9");
    } finally {
      await sink.close();
      await subscriber.close();
    }
  }));

Deno.test("streams are capped with MAXLEN ~", () =>
  withRedis(async (url) => {
    const sink = createRedisSink({ url, streamMaxLen: 100 });
    const client = await reader(url);
    try {
      pushEvents(sink, Array.from({ length: 5000 }, (_, i) => share(i)));
      await sink.flush();
      const length = Number(await client.sendCommand(["XLEN", "mining:share_submitted"]));
      assert.ok(length >= 100 && length < 1000, `length ${length}`);
    } finally {
      await sink.close();
      await client.close();
    }
  }));

Deno.test("a Redis restart mid-stream loses nothing: every event arrives at least once", () =>
  withRedis(async (url, service) => {
    const sink = createRedisSink({ url, streamMaxLen: 1_000_000 });
    try {
      pushEvents(sink, Array.from({ length: 500 }, (_, i) => share(i)));
      await sink.flush();
      await service.kill();
      pushEvents(sink, Array.from({ length: 500 }, (_, i) => share(500 + i)));
      await waitFor(() => sink.stats().retried > 0, { what: "a failed write" });
      assert.ok(sink.stats().pending > 0);
      assert.equal(sink.stats().up, false, "down while its writes fail");
      await service.start();
      await sink.flush(AbortSignal.timeout(20_000));
      assert.equal(sink.stats().pending, 0);
      assert.equal(sink.stats().up, true, "up again after a write succeeded");
      const client = await reader(url);
      try {
        const entries = await client.sendCommand([
          "XRANGE",
          "mining:share_submitted",
          "-",
          "+",
        ]) as [
          string,
          string[],
        ][];
        // At least once: a repeat carries the same id, so a consumer can drop it.
        const seen = new Set(entries.map(([, fields]) => fields[1]));
        for (let i = 0; i < 1000; i++) assert.ok(seen.has(`0e:${i}`), `event ${i} missing`);
        for (const [, fields] of entries) {
          assert.equal(fields[1], `0e:${JSON.parse(fields[9]).sdiff}`, "id and data disagree");
        }
      } finally {
        await client.close();
      }
    } finally {
      await sink.close();
    }
  }, true));

Deno.test("with Redis away, the sink keeps everything pushed and drops nothing", async () => {
  const sink = createRedisSink({ url: "redis://127.0.0.1:1/0", streamMaxLen: 10 });
  try {
    // More than the old per-sink bound (1,000,000): the delivery layer bounds memory now.
    const chunk = Array.from({ length: 100_000 }, (_, i) => share(i));
    for (let i = 0; i < 11; i++) pushEvents(sink, chunk);
    const stats = sink.stats();
    assert.equal(stats.pending, 1_100_000);
    assert.equal(stats.dropped, 0);
    const aborted = AbortSignal.timeout(50);
    await sink.flush(aborted);
    await waitFor(() => sink.stats().retried > 0, { what: "a failed write" });
    assert.equal(sink.stats().pending, 1_100_000);
    assert.equal(sink.stats().written, 0);
  } finally {
    await sink.close();
  }
});
