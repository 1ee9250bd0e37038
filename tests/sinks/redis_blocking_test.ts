/**
 * The Redis sink's blocking loop (`src/sinks/redis/blocking.ts`) on its real thread, against
 * a real redis-server: what it acknowledges, what it keeps through failures, and that a close
 * reaches it while it is blocked in I/O.
 */
import assert from "node:assert/strict";
import { createClient } from "redis";
import { Spool } from "../../src/buffer/spool.ts";
import { type SinkThread, startSinkThread } from "../../src/sinks/thread.ts";
import type { RedisSinkOptions } from "../../src/sinks/redis/sink.ts";
import { freePort, type Service, startRedis } from "../support/services.ts";
import { waitFor } from "../support/wait.ts";
import { writable, type WritableSpool } from "../support/writable_spool.ts";

const REDIS_WORKER = new URL("../../src/sinks/redis/worker.ts", import.meta.url);
const encoder = new TextEncoder();

/** A datagram as the emitter sends it. */
function datagram(seq: number, type = "share_submitted"): Uint8Array {
  const data = type === "share_submitted"
    ? { user: "tb1qexample", worker: `tb1qexample.w${seq % 5}`, diff: 1, sdiff: 2, accepted: true }
    : { user: "tb1qexample", worker: `tb1qexample.w${seq % 5}`, client_id: seq };
  return encoder.encode(JSON.stringify({
    event: type,
    ts: 1_764_000_000 + seq / 1000,
    source: "hosted",
    seq,
    emitter: "c0ffee",
    data,
  }));
}

/** A temporary spool with one reader, `redis`, and the Redis sink's thread reading it. */
async function withRedisThread(
  sinkOptions: RedisSinkOptions,
  test: (spool: WritableSpool, sink: SinkThread) => Promise<void>,
  spoolBytes = 64 << 20,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-redis-thread-" });
  const spool = writable(
    Spool.open({
      dir,
      maxBytes: spoolBytes,
      segmentBytes: 16 * 1024,
      fsyncIntervalMs: 1000,
      readers: ["redis"],
    }),
  );
  const sink = startSinkThread({
    name: "redis",
    worker: REDIS_WORKER,
    options: sinkOptions,
    spool: {
      dir,
      signals: spool.signals.buffer,
      readerIndex: 0,
      position: spool.position("redis"),
    },
    memoryLimitBytes: 1024 * 1024,
    lingerMs: 0,
    onFatal: (message) => {
      throw new Error(message);
    },
  });
  try {
    await test(spool, sink);
  } finally {
    await sink.close();
    await spool.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function withRedis(test: (redis: Service) => Promise<void>): Promise<void> {
  const redis = await startRedis();
  try {
    await test(redis);
  } finally {
    await redis.stop();
  }
}

/** The `id` fields of a stream's entries, in stream order. */
async function streamIds(url: string, key: string): Promise<string[]> {
  const client = createClient({ url });
  await client.connect();
  try {
    const entries = await client.sendCommand(["XRANGE", key, "-", "+"]) as [string, string[]][];
    return entries.map(([, fields]) => fields[fields.indexOf("id") + 1]);
  } finally {
    client.destroy();
  }
}

async function redisCommand(url: string, command: string[]): Promise<unknown> {
  const client = createClient({ url });
  await client.connect();
  try {
    return await client.sendCommand(command);
  } finally {
    client.destroy();
  }
}

/** Spools share datagrams `1..count`, 50 to a frame. */
function spoolShares(spool: WritableSpool, count: number): void {
  for (let seq = 1; seq <= count; seq += 50) {
    spool.append(
      Array.from({ length: Math.min(50, count + 1 - seq) }, (_, i) => datagram(seq + i)),
    );
  }
}

/** A TCP server that accepts connections and never reads from or answers them. */
async function withSilentServer(
  test: (port: number, held: readonly Deno.Conn[]) => Promise<void>,
): Promise<void> {
  const port = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    await test(port, held);
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
}

const ids = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `c0ffee:${from + i}`);

Deno.test("the blocking Redis sink delivers the spool in order and acknowledges past records that are not events", async () => {
  await withRedis(async (redis) => {
    await withRedisThread({ url: redis.url, streamMaxLen: 100_000 }, async (spool, sink) => {
      let seq = 1;
      for (let frame = 0; frame < 40; frame++) {
        const records = Array.from({ length: 25 }, () => datagram(seq++));
        // One datagram in every frame the collector would have refused.
        records.splice(
          7,
          0,
          encoder.encode(frame % 2 ? "not json" : '{"event":"share_submitted"}'),
        );
        spool.append(records);
      }
      await sink.drain(spool.head, AbortSignal.timeout(20_000));
      const stats = sink.stats();
      assert.equal(stats.position, spool.head, "acknowledged up to the head, refused records too");
      assert.equal(stats.written, 1000);
      assert.equal(stats.lost, 0);
      assert.equal(stats.pending, 0);
      assert.deepEqual(await streamIds(redis.url, "mining:share_submitted"), ids(1, 1001));
      assert.equal(spool.signals.acked(0), spool.head, "the acknowledgement is in the signals");
    });
  });
});

Deno.test("the blocking Redis sink's stats reach the main thread while it idles, without a drain", async () => {
  await withRedis(async (redis) => {
    await withRedisThread({ url: redis.url, streamMaxLen: 1000 }, async (spool, sink) => {
      spool.append([datagram(1), datagram(2), datagram(3)]);
      // The loop yields to its event loop with a message to itself, which runs no timer: the
      // stats must be posted all the same.
      const stats = await waitFor(() => sink.stats().written === 3 && sink.stats(), {
        what: "the stats saying three events were written",
      });
      assert.equal(stats.position, 3);
      assert.ok(stats.up);
    });
  });
});

Deno.test("a message from the main thread reaches the blocking Redis sink at once while it sleeps on the spool's head", async () => {
  await withRedis(async (redis) => {
    await withRedisThread({ url: redis.url, streamMaxLen: 1000 }, async (spool, sink) => {
      spool.append([datagram(1)]);
      await sink.drain(spool.head, AbortSignal.timeout(20_000));
      // Idle now: the loop blocks on the head for up to a second at a time. Each drain is
      // served in its event loop, which the main thread's message must bring it back to.
      const drains = 10;
      const started = performance.now();
      for (let i = 0; i < drains; i++) await sink.drain(spool.head, AbortSignal.timeout(20_000));
      const took = performance.now() - started;
      console.log(`${drains} drains of an idle thread in ${took.toFixed(0)} ms`);
      // Woken only by the end of each wait, they would take about half a second each.
      assert.ok(took < drains * 250, `${drains} drains took ${took} ms`);
    });
  });
});

Deno.test("the blocking Redis sink keeps its position where Redis refused an event, and resends from there", async () => {
  await withRedis(async (redis) => {
    // A key of the wrong type: every XADD to it is refused with WRONGTYPE.
    await redisCommand(redis.url, ["SET", "mining:share_submitted", "in the way"]);
    await withRedisThread({ url: redis.url, streamMaxLen: 100_000 }, async (spool, sink) => {
      spool.append([datagram(1, "miner_connected"), datagram(2), datagram(3, "miner_connected")]);
      const failing = await waitFor(() => {
        const stats = sink.stats();
        return stats.retried > 0 && !stats.up && stats;
      }, { what: "a refused write" });
      assert.equal(failing.position, 1, "the first event is confirmed, the refused one is not");
      assert.equal(failing.written, 1);
      assert.equal(failing.pending, 2, "the refused event and the one after it are kept");

      await redisCommand(redis.url, ["DEL", "mining:share_submitted"]);
      await sink.drain(spool.head, AbortSignal.timeout(10_000));
      assert.equal(sink.stats().position, 3);
      assert.ok(sink.stats().up);
      assert.deepEqual(await streamIds(redis.url, "mining:share_submitted"), ["c0ffee:2"]);
      // Redis took the third event in each refused pipeline too: it is sent again with the
      // second (at-least-once), and consumers drop the repeats by id.
      const [first, ...rest] = await streamIds(redis.url, "mining:miner_connected");
      assert.equal(first, "c0ffee:1", "the confirmed event is not sent again");
      assert.ok(rest.length >= 2, `${rest.length} copies of the third event`);
      assert.deepEqual(new Set(rest), new Set(["c0ffee:3"]));
    });
  });
});

Deno.test("a batch read ahead waits behind a refused one, and order holds", async () => {
  await withRedis(async (redis) => {
    await redisCommand(redis.url, ["SET", "mining:share_submitted", "in the way"]);
    await withRedisThread(
      { url: redis.url, streamMaxLen: 100_000, maxBatch: 50 },
      async (spool, sink) => {
        spool.append([datagram(1, "miner_connected"), datagram(2)]);
        for (let seq = 3; seq <= 1002; seq += 100) {
          spool.append(Array.from({ length: 100 }, (_, i) => datagram(seq + i, "miner_connected")));
        }
        await waitFor(() => sink.stats().retried >= 3, { what: "refused writes" });
        const held = sink.stats();
        assert.equal(held.position, 1, "nothing after the refused event is acknowledged");
        assert.ok(held.pending <= 100, `${held.pending} events held: two batches at most`);

        await redisCommand(redis.url, ["DEL", "mining:share_submitted"]);
        await sink.drain(spool.head, AbortSignal.timeout(10_000));
        assert.equal(sink.stats().position, 1002);
        const connected = await streamIds(redis.url, "mining:miner_connected");
        const firsts = [...new Set(connected)];
        assert.deepEqual(firsts, ["c0ffee:1", ...ids(3, 1003)], "each event first seen in order");
        assert.deepEqual(await streamIds(redis.url, "mining:share_submitted"), ["c0ffee:2"]);
      },
    );
  });
});

Deno.test("the blocking Redis sink waits out an absent Redis and delivers everything once it is back", async () => {
  await withRedis(async (redis) => {
    await redis.kill();
    await withRedisThread(
      { url: redis.url, streamMaxLen: 100_000, connectTimeoutMs: 500 },
      async (spool, sink) => {
        spoolShares(spool, 500);
        await waitFor(() => sink.stats().retried >= 2, { what: "failed connection attempts" });
        assert.equal(sink.stats().position, 0, "nothing acknowledged while Redis is away");
        assert.ok(!sink.stats().up);

        await redis.start();
        const back = performance.now();
        await sink.drain(spool.head, AbortSignal.timeout(10_000));
        console.log(
          `delivering again ${(performance.now() - back).toFixed(0)} ms after Redis was back`,
        );
        assert.equal(sink.stats().position, 500);
        assert.ok(sink.stats().up);
        assert.deepEqual(await streamIds(redis.url, "mining:share_submitted"), ids(1, 501));
      },
    );
  });
});

Deno.test("the blocking Redis sink counts what a full spool deleted while Redis was away, and delivers the rest", async () => {
  await withRedis(async (redis) => {
    await redis.kill();
    await withRedisThread(
      { url: redis.url, streamMaxLen: 100_000, connectTimeoutMs: 500 },
      async (spool, sink) => {
        spoolShares(spool, 3000);
        assert.ok(spool.signals.tail() > 0, "the spool deleted its oldest records");
        await redis.start();
        await sink.drain(spool.head, AbortSignal.timeout(10_000));
        const { written, lost, position } = sink.stats();
        const delivered = await streamIds(redis.url, "mining:share_submitted");
        assert.ok(lost > 0, "some were deleted before Redis got them");
        assert.equal(written + lost, 3000, "every event delivered or counted as lost");
        assert.equal(position, 3000);
        assert.deepEqual(delivered, ids(3001 - written, 3001), "the newest, in order");
      },
      128 * 1024,
    );
  });
});

Deno.test("the blocking Redis sink authenticates and selects the URL's database", async () => {
  const redis = await startRedis({ password: "s3cret pass" });
  try {
    const url = redis.url.replace(/\/0$/, "/3");
    await withRedisThread({ url, streamMaxLen: 1000 }, async (spool, sink) => {
      spool.append([datagram(1), datagram(2)]);
      await sink.drain(spool.head, AbortSignal.timeout(10_000));
      assert.deepEqual(await streamIds(url, "mining:share_submitted"), ids(1, 3));
      assert.deepEqual(await streamIds(redis.url, "mining:share_submitted"), [], "not in db 0");
    });
  } finally {
    await redis.stop();
  }
});

Deno.test("the blocking Redis sink gives up on a server that never answers, one deadline per connection", async () => {
  await withSilentServer(async (port, held) => {
    await withRedisThread(
      { url: `redis://127.0.0.1:${port}/0`, streamMaxLen: 1000, writeTimeoutMs: 300 },
      async (spool, sink) => {
        spool.append([datagram(1)]);
        await waitFor(() => sink.stats().retried >= 2 && held.length >= 2, {
          what: "two deadlines passed, each on a new connection",
        });
        assert.equal(sink.stats().position, 0);
      },
    );
  });
});

Deno.test("closing the blocking Redis sink's thread does not wait for a blocked read's deadline", async () => {
  await withSilentServer(async (port, held) => {
    await withRedisThread(
      { url: `redis://127.0.0.1:${port}/0`, streamMaxLen: 1000, writeTimeoutMs: 60_000 },
      async (spool, sink) => {
        spool.append([datagram(1)]);
        await waitFor(() => held.length === 1, { what: "the sink's connection" });
        // The loop is now blocked reading replies that never come, for up to 60 s.
        const started = performance.now();
        await sink.close();
        const closedIn = performance.now() - started;
        console.log(`closed in ${closedIn.toFixed(0)} ms with a read blocked (deadline 60 s)`);
        assert.ok(closedIn < 10_000, `closed in ${closedIn} ms`);
      },
    );
  });
});
