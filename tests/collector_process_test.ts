/**
 * The collector as an operator runs it: a child process configured by environment
 * variables, fed through its socket, writing to real redis-server and postgres.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import { spawnCollector } from "./support/collector_process.ts";
import { foreignSenderUnavailable, sendAs } from "./support/foreign_sender.ts";
import { loadSchema, type Service, startPostgres, startRedis } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const USER = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
const OTHER = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7";

interface Stack {
  redis: Service;
  pg: Service;
  dir: string;
  socket: string;
}

async function withStack(test: (stack: Stack) => Promise<void>) {
  const [redis, pg, dir] = await Promise.all([
    startRedis(),
    startPostgres(),
    Deno.makeTempDir({ prefix: "tbg-collector-" }),
  ]);
  try {
    await loadSchema(pg);
    await test({ redis, pg, dir, socket: `${dir}/events.sock` });
  } finally {
    await Promise.all([redis.stop(), pg.stop(), Deno.remove(dir, { recursive: true })]);
  }
}

function envFor(stack: Stack, extra: Record<string, string> = {}): Record<string, string> {
  return {
    SOCKET_PATH: stack.socket,
    REDIS_URL: stack.redis.url,
    DATABASE_URL: stack.pg.url,
    BATCH_FLUSH_INTERVAL: "0.1",
    LOG_LEVEL: "INFO",
    ...extra,
  };
}

/** Sends one datagram, retrying while the kernel queue is full. */
async function send(sender: DatagramSender, payload: unknown): Promise<void> {
  const bytes = payload instanceof Uint8Array
    ? payload
    : new TextEncoder().encode(typeof payload === "string" ? payload : JSON.stringify(payload));
  await waitFor(() => sender.send(bytes as Uint8Array<ArrayBuffer>), {
    what: "the socket to take a datagram",
    intervalMs: 1,
  });
}

let seq = 0;
function event(type: string, data: Record<string, unknown>, ts = 1_767_225_600 + seq) {
  return { event: type, ts, source: "hosted", seq: ++seq, emitter: "c0ffee", data };
}

async function redisClient(url: string) {
  const client = createClient({ url });
  client.on("error", () => {});
  await client.connect();
  return client;
}

Deno.test("datagrams reach Redis streams and PostgreSQL tables; malformed ones are counted and skipped", () =>
  withStack(async (stack) => {
    const collector = spawnCollector(envFor(stack));
    const sql = postgres(stack.pg.url, { onnotice: () => {}, max: 1 });
    const redis = await redisClient(stack.redis.url);
    const blocks: string[] = [];
    const subscriber = await redisClient(stack.redis.url);
    await subscriber.subscribe("blocks:found", (message: string) => blocks.push(message));
    try {
      await collector.waitForOutput(/listening on/);
      const sender = new DatagramSender(stack.socket);
      const quirky = 'rig "α"\\01';
      const good = [
        event("miner_connected", {
          user: USER,
          worker: quirky,
          client_id: 1,
          ip: "127.0.0.1",
          useragent: "cpuminer/2.5",
          initial_diff: 1,
        }),
        event("share_submitted", {
          user: USER,
          worker: quirky,
          client_id: 1,
          diff: 1,
          sdiff: 3.5,
          accepted: true,
          ip: "127.0.0.1",
        }),
        event("share_submitted", {
          user: USER,
          worker: quirky,
          client_id: 1,
          diff: 1,
          sdiff: 0.01,
          accepted: false,
          reject_reason: "Above target",
          ip: "127.0.0.1",
        }),
        event("share_best_diff", {
          user: USER,
          worker: quirky,
          new_best: 3.5,
          prev_best: 0,
          timeframe: "all",
        }),
        event("block_found", {
          user: OTHER,
          worker: "big",
          height: 210_000,
          hash: "00000000000000000000000000000000000000000000000000000000000abcde",
          diff: 5,
          network_diff: 4,
          reward_sats: 312_500_000,
          coinbase_sig: "/TBG/",
        }),
        event("new_block_network", { height: 210_001, hash: "00ff", diff: 4, prev_hash: "00ee" }),
        event("miner_disconnected", {
          user: USER,
          worker: quirky,
          client_id: 1,
          ip: "127.0.0.1",
          session_duration: 12.5,
          shares_session: 2,
        }),
        event("pool_heartbeat", { anything: ["goes"] }),
      ];
      const malformed: unknown[] = [
        new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
        "this is not json",
        { ...event("share_submitted", { diff: "lots" }) },
        crypto.getRandomValues(new Uint8Array(64 * 1024)),
        // A block must be a real one: no data at all, or a hash that is not a block hash.
        event("block_found", {}),
        event("block_found", { user: OTHER, height: 5, hash: "00ab" }),
      ];
      for (let i = 0; i < good.length; i++) {
        await send(sender, good[i]);
        if (i < malformed.length) await send(sender, malformed[i]);
      }
      sender.close();

      await waitFor(
        async () => Number(await redis.sendCommand(["XLEN", "mining:share_submitted"])) === 2,
        {
          what: "shares in Redis",
        },
      );
      for (
        const type of [
          "miner_connected",
          "share_best_diff",
          "block_found",
          "new_block_network",
          "miner_disconnected",
          "pool_heartbeat",
        ]
      ) {
        await waitFor(
          async () => Number(await redis.sendCommand(["XLEN", `mining:${type}`])) === 1,
          {
            what: `mining:${type}`,
          },
        );
      }
      const [[, fields]] = await redis.sendCommand([
        "XRANGE",
        "mining:share_submitted",
        "-",
        "+",
        "COUNT",
        "1",
      ]) as [
        string,
        string[],
      ][];
      assert.equal(fields[0], "id");
      assert.match(fields[1], /^([0-9a-f]+:[0-9]+|sha256:[0-9a-f]{32})$/);
      assert.equal(fields[3], "share_submitted");
      assert.equal(fields[7], "hosted");
      assert.equal(JSON.parse(fields[9]).worker, quirky);
      await waitFor(() => blocks.length === 1, { what: "blocks:found message" });
      assert.equal(JSON.parse(blocks[0]).data.height, 210_000);

      await waitFor(
        async () => (await sql`select count(*)::int as n from mining_events`)[0].n === good.length,
        {
          what: "mining_events rows",
        },
      );
      const shares = await sql`
        select btc_address, worker_name, share_diff, is_valid, reject_reason
        from shares order by time`;
      assert.deepEqual(
        shares.map((r) => [r.btc_address, r.worker_name, r.share_diff, r.is_valid]),
        [
          [USER, quirky, 3.5, true],
          [USER, quirky, 0.01, false],
        ],
      );
      assert.equal(shares[1].reject_reason, "Above target");
      const [worker] = await sql`
        select w.is_online, w.last_share_at is not null as has_share
        from workers w join users u on u.id = w.user_id
        where u.btc_address = ${USER} and w.worker_name = ${quirky}`;
      assert.deepEqual({ ...worker }, { is_online: false, has_share: true });
      const blockRows =
        await sql`select block_height::int as block_height, btc_address from blocks`;
      assert.deepEqual(blockRows.map((r) => ({ ...r })), [
        { block_height: 210_000, btc_address: OTHER },
      ]);
      assert.equal(Number(await redis.sendCommand(["XLEN", "mining:block_found"])), 1);
      assert.equal(blocks.length, 1, "only the real block is published");
      const [weekly] = await sql`
        select best_difficulty, total_shares::int as total_shares from weekly_best_diff where btc_address = ${USER}`;
      assert.deepEqual({ ...weekly }, { best_difficulty: 3.5, total_shares: 1 });
      const users = await sql`select btc_address from users where last_seen is not null order by 1`;
      assert.deepEqual(users.map((r) => r.btc_address).sort(), [OTHER, USER].sort());

      assert.equal(await collector.stop("SIGTERM"), 0);
      assert.match(collector.output(), /stopped: received=14 accepted=8 invalid=6 lost=0/);
      assert.match(collector.output(), /rejected a datagram \(not_utf8\)/);
      assert.match(collector.output(), /rejected a datagram \(oversized\)/);
    } finally {
      await collector.stop("SIGKILL");
      await subscriber.close();
      await redis.close();
      await sql.end();
    }
  }));

{
  Deno.test("SIGTERM flushes everything sent before it to both sinks, unlinks the socket and exits 0", () =>
    withStack(async (stack) => {
      // A long interval and a large batch: nothing reaches PostgreSQL before the shutdown flush.
      const collector = spawnCollector(
        envFor(stack, {
          BATCH_FLUSH_INTERVAL: "3600",
          BATCH_MAX_SIZE: "100000",
        }),
      );
      const sql = postgres(stack.pg.url, { onnotice: () => {}, max: 1 });
      try {
        await collector.waitForOutput(/listening on/);
        const sender = new DatagramSender(stack.socket);
        const total = 3000;
        for (let i = 0; i < total; i++) {
          await send(
            sender,
            event("share_submitted", { user: USER, worker: "w", sdiff: i, accepted: true }),
          );
        }
        sender.close();
        const [{ n: before }] = await sql`select count(*)::int as n from mining_events`;
        assert.equal(before, 0, "the database write waits for the interval");
        assert.equal(await collector.stop("SIGTERM"), 0);
        const [{ n: events }] = await sql`select count(*)::int as n from mining_events`;
        const [{ n: shares }] = await sql`select count(*)::int as n from shares`;
        assert.equal(events, total);
        assert.equal(shares, total);
        const redis = await redisClient(stack.redis.url);
        try {
          assert.equal(Number(await redis.sendCommand(["XLEN", "mining:share_submitted"])), total);
        } finally {
          await redis.close();
        }
        assert.throws(() => Deno.lstatSync(stack.socket), Deno.errors.NotFound);
      } finally {
        await collector.stop("SIGKILL");
        await sql.end();
      }
    }));
}

Deno.test("an invalid configuration value stops start-up, naming the variable", async () => {
  const collector = spawnCollector({ BATCH_MAX_SIZE: "lots", REDIS_URL: "localhost" });
  assert.equal(await collector.exitCode(), 2);
  assert.match(collector.output(), /BATCH_MAX_SIZE must be an integer/);
  assert.match(collector.output(), /REDIS_URL must be a URL/);
});

Deno.test("a socket path that cannot be bound stops start-up with the errno text", async () => {
  const collector = spawnCollector({ SOCKET_PATH: "/nonexistent-tbg-dir/events.sock" });
  assert.equal(await collector.exitCode(), 2);
  assert.match(collector.output(), /No such file or directory \(ENOENT\)/);
});

const foreignSender = foreignSenderUnavailable();
if (foreignSender) {
  console.warn(`tests/collector_process: the sender-uid test is skipped: ${foreignSender}`);
}

Deno.test({
  name: "with ALLOWED_SENDER_UIDS set, a datagram from another uid is refused and counted",
  ignore: foreignSender !== undefined,
  fn: () =>
    withStack(async (stack) => {
      // Let the other uid reach the socket at all: the refusal must come from the uid check.
      await Deno.chmod(stack.dir, 0o755);
      const collector = spawnCollector(
        envFor(stack, { ALLOWED_SENDER_UIDS: "0", SOCKET_MODE: "0666", STATS_INTERVAL: "0.2" }),
      );
      const sql = postgres(stack.pg.url, { onnotice: () => {}, max: 1 });
      try {
        await collector.waitForOutput(/listening on .*senders 0\)/);
        const forged = event("share_submitted", { user: OTHER, worker: "forged", accepted: true });
        await sendAs({ uid: 65534, gid: 65534 }, stack.socket, [JSON.stringify(forged)]);
        const sender = new DatagramSender(stack.socket);
        await send(
          sender,
          event("share_submitted", { user: USER, worker: "real", accepted: true }),
        );
        sender.close();
        await collector.waitForOutput(/received=2 accepted=1 invalid=1 /);
        await collector.waitForOutput(/uid 65534/);
        await waitFor(async () => {
          const [{ n }] = await sql`select count(*)::int as n from mining_events`;
          return n === 1;
        }, { what: "the root sender's event in PostgreSQL" });
        const workers = await sql`select worker_name from shares`;
        assert.deepEqual(workers.map((row) => row.worker_name), ["real"]);
      } finally {
        await collector.stop("SIGKILL");
        await sql.end();
      }
    }),
});
