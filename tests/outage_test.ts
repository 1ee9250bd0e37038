/**
 * Outages and crashes, end to end: the collector as a child process, real redis-server and
 * postgres killed and restarted under it, and the collector itself killed with SIGKILL. Each
 * test ends with every accepted event exactly once in PostgreSQL and at least once in Redis.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import { decodeDatagram } from "../src/datagram.ts";
import { readMaxDgramQlen } from "../src/source/kernel_limits.ts";
import { Spool } from "../src/buffer/spool.ts";
import { RespConnection } from "../src/sinks/redis/resp.ts";
import { type CollectorProcess, spawnCollector } from "./support/collector_process.ts";
import { loadSchema, type Service, startPostgres, startRedis } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const EMITTER = "0123456789abcdef";
const USER = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
const encoder = new TextEncoder();

interface Stack {
  redis: Service;
  pg: Service;
  sql: postgres.Sql;
  dir: string;
  socket: string;
  spool: string;
}

async function withStack(test: (stack: Stack) => Promise<void>): Promise<void> {
  const [redis, pg, dir] = await Promise.all([
    startRedis({ appendOnly: true }),
    startPostgres({ crashSafe: true }),
    Deno.makeTempDir({ prefix: "tbg-outage-" }),
  ]);
  const sql = postgres(pg.url, { onnotice: () => {}, max: 1 });
  try {
    await loadSchema(pg);
    await test({ redis, pg, sql, dir, socket: `${dir}/events.sock`, spool: `${dir}/spool` });
  } finally {
    await sql.end({ timeout: 1 });
    await Promise.all([redis.stop(), pg.stop(), Deno.remove(dir, { recursive: true })]);
  }
}

function startCollector(stack: Stack): CollectorProcess {
  return spawnCollector({
    SOCKET_PATH: stack.socket,
    REDIS_URL: stack.redis.url,
    DATABASE_URL: stack.pg.url,
    SPOOL_DIR: stack.spool,
    BATCH_FLUSH_INTERVAL: "0.1",
    LOG_LEVEL: "INFO",
  });
}

function share(seq: number): Uint8Array<ArrayBuffer> {
  return encoder.encode(JSON.stringify({
    event: "share_submitted",
    ts: 1_767_225_600 + seq / 1000,
    source: "hosted",
    seq,
    emitter: EMITTER,
    data: { user: USER, worker: `w${seq % 4}`, sdiff: seq, diff: 1, accepted: true },
  }));
}

/** Sends shares `from`..`to` - 1, waiting while the kernel queue is full. */
async function sendRange(socket: string, from: number, to: number): Promise<void> {
  const sender = new DatagramSender(socket);
  try {
    for (let seq = from; seq < to; seq++) {
      const bytes = share(seq);
      await waitFor(() => sender.send(bytes), { what: `the socket to take ${seq}`, intervalMs: 1 });
    }
  } finally {
    sender.close();
  }
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

/** seq → rows in `mining_events`. */
async function rowsBySeq(sql: postgres.Sql): Promise<Map<number, number>> {
  const rows = await sql<{ seq: string; n: number }[]>`
    select seq, count(*)::int as n from mining_events where emitter = ${EMITTER} group by seq`;
  return new Map(rows.map((row) => [Number(row.seq), row.n]));
}

/** seq → entries in `mining:share_submitted`, read through each entry's `id` field. */
async function entriesBySeq(url: string): Promise<Map<number, number>> {
  const connection = await RespConnection.connect(url);
  try {
    const [entries] = await connection.pipeline([["XRANGE", "mining:share_submitted", "-", "+"]]);
    const counts = new Map<number, number>();
    for (const [, fields] of entries as [string, string[]][]) {
      const id = fields[fields.indexOf("id") + 1];
      const seq = Number(id.slice(EMITTER.length + 1));
      counts.set(seq, (counts.get(seq) ?? 0) + 1);
    }
    return counts;
  } finally {
    connection.close();
  }
}

/** Waits until PostgreSQL holds each of `seqs` exactly once and Redis at least once. */
async function assertDelivered(stack: Stack, seqs: readonly number[], timeoutMs = 60_000) {
  await waitFor(async () => {
    const rows = await rowsBySeq(stack.sql);
    return seqs.every((seq) => rows.has(seq));
  }, { timeoutMs, what: `${seqs.length} events in PostgreSQL` });
  await waitFor(async () => {
    const entries = await entriesBySeq(stack.redis.url);
    return seqs.every((seq) => entries.has(seq));
  }, { timeoutMs, what: `${seqs.length} events in Redis` });
  const rows = await rowsBySeq(stack.sql);
  const doubled = [...rows].filter(([, n]) => n !== 1);
  assert.deepEqual(doubled, [], "no event twice in PostgreSQL");
  const [{ n: shares, d: distinct }] = await stack.sql<{ n: number; d: number }[]>`
    select count(*)::int as n, count(distinct event_id)::int as d from shares`;
  assert.equal(shares, distinct, "no share twice in PostgreSQL");
}

const REDIS_FAILED = /tbg.redis: write to \S+ failed/;
const POSTGRES_FAILED = /tbg.postgres: write failed/;

async function outage(stack: Stack, down: Service[], failures: RegExp[]): Promise<void> {
  const collector = startCollector(stack);
  try {
    await collector.waitForOutput(/listening on/);
    await sendRange(stack.socket, 1, 501);
    await assertDelivered(stack, range(1, 501));

    await Promise.all(down.map((service) => service.kill()));
    await sendRange(stack.socket, 501, 1501);
    for (const failure of failures) await collector.waitForOutput(failure);
    if (down.includes(stack.pg)) {
      assert.equal((await rowsBySeq(stack.sql).catch(() => new Map())).size <= 500, true);
    }
    await Promise.all(down.map((service) => service.start()));
    await sendRange(stack.socket, 1501, 2001);
    await assertDelivered(stack, range(1, 2001));
    assert.equal(await collector.stop("SIGTERM"), 0);
  } catch (error) {
    console.error(collector.output());
    throw error;
  } finally {
    await collector.stop("SIGKILL");
  }
}

Deno.test("Redis stopped and restarted mid-stream: every event in both sinks", () =>
  withStack((stack) => outage(stack, [stack.redis], [REDIS_FAILED])));

Deno.test("PostgreSQL stopped and restarted mid-stream: every event in both sinks", () =>
  withStack((stack) => outage(stack, [stack.pg], [POSTGRES_FAILED])));

Deno.test("Redis and PostgreSQL stopped at once: every event in both sinks", () =>
  withStack((stack) => outage(stack, [stack.redis, stack.pg], [REDIS_FAILED, POSTGRES_FAILED])));

/** The seqs of the events in a stopped collector's spool. */
async function spooledSeqs(dir: string): Promise<number[]> {
  const spool = Spool.open({
    dir,
    maxBytes: 1024 * 1024 * 1024,
    fsyncIntervalMs: 1000,
    readers: ["redis", "postgres"],
  });
  try {
    return spool.read(0, 10_000_000).map((record) => {
      const decoded = decodeDatagram(record.bytes, false);
      if (!decoded.ok) throw new Error(`spool record ${record.index}: ${decoded.detail}`);
      return decoded.event.seq!;
    });
  } finally {
    await spool.close();
  }
}

Deno.test("collector killed with SIGKILL while PostgreSQL is away: the spool is delivered after the restart", () =>
  withStack(async (stack) => {
    let collector = startCollector(stack);
    try {
      await collector.waitForOutput(/listening on/);
      await stack.pg.kill();
      await sendRange(stack.socket, 1, 1001);
      // Redis has them all, so all were accepted, and so spooled; PostgreSQL has none.
      await waitFor(async () => (await entriesBySeq(stack.redis.url)).size === 1000, {
        what: "1000 events in Redis",
      });
      collector.child.kill("SIGKILL");
      await collector.exitCode();
      assert.deepEqual(await spooledSeqs(stack.spool), range(1, 1001));

      await stack.pg.start();
      collector = startCollector(stack);
      await collector.waitForOutput(/listening on/);
      await sendRange(stack.socket, 1001, 1501);
      await assertDelivered(stack, range(1, 1501));
      assert.equal(await collector.stop("SIGTERM"), 0);
    } finally {
      await collector.stop("SIGKILL");
    }
  }));

Deno.test("collector killed with SIGKILL mid-stream: nothing it took off the kernel queue is lost", () =>
  withStack(async (stack) => {
    let collector = startCollector(stack);
    const sent: number[] = [];
    try {
      await collector.waitForOutput(/listening on/);
      // Every one of 1..2000 is taken by the kernel (sends wait while its queue is full);
      // the kill comes right after the last, while the tail is still queued or in flight.
      await sendRange(stack.socket, 1, 2001);
      sent.push(...range(1, 2001));
      collector.child.kill("SIGKILL");
      // Sends to the dead socket fail: nothing after the kill counts as sent.
      const sender = new DatagramSender(stack.socket);
      for (let seq = 2001; seq <= 2100; seq++) {
        if (sender.send(share(seq))) sent.push(seq);
      }
      sender.close();
      await collector.exitCode();
      const spooled = await spooledSeqs(stack.spool);
      const lastSpooled = Math.max(...spooled);

      collector = startCollector(stack);
      await collector.waitForOutput(/listening on/);
      await assertDelivered(stack, spooled);
      const delivered = await rowsBySeq(stack.sql);
      const lost = sent.filter((seq) => !delivered.has(seq));
      console.log(
        `sent ${sent.length}, spooled ${spooled.length}, lost ${lost.length}: ` +
          `${lost.length === 0 ? "none" : `seq ${lost[0]}..${lost.at(-1)}`}`,
      );
      assert.ok(
        lost.every((seq) => seq > lastSpooled),
        "loss is only the tail the dead process had not received, never a gap",
      );
      // The receive thread spools each receive before anything else, so only what was still
      // in the socket's queue (at most max_dgram_qlen + 1 datagrams) can be lost.
      const qlen = readMaxDgramQlen() ?? 10;
      assert.ok(lost.length <= qlen + 1, `${lost.length} lost, the kernel queue holds ${qlen + 1}`);
      assert.equal(await collector.stop("SIGTERM"), 0);
    } finally {
      await collector.stop("SIGKILL");
    }
  }));
