/**
 * End to end: Stratum miners -> a real ckpool built with the patch kit -> the event socket ->
 * the collector (run as `deno task start` runs it) -> Redis streams and PostgreSQL tables.
 *
 * Everything is a real process on free loopback ports in a temp dir: redis-server, postgres,
 * the collector, ckpool (solo mode, `-B`) and the bitcoind JSON-RPC peer it polls. Needs
 * `CKPOOL_SRC`, a clean ckpool checkout at the commit in `patches/UPSTREAM.lock`; the patched
 * build is cached between runs (`tests/support/ckpool_build.ts`).
 *
 * - The default test covers what costs no proof of work: connects, rejected shares with
 *   ckpool's reasons, best-difficulty events (rejected shares count: ckpool checks the best
 *   difficulty before it judges a share), a block found by the network, a disconnect.
 * - Accepted shares and blocks need a share of difficulty 1 (ckpool never asks for less), about
 *   2^32 double SHA-256: the real-mining test grinds one with the C grinder, only when
 *   `TBG_REAL_MINING=1` is set as well.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { createClient } from "redis";
import {
  addressToScript,
  type BitcoindPeer,
  bitsToDifficulty,
  blockSubsidy,
  encodeSegwitAddress,
  startBitcoindPeer,
  toHex,
} from "./support/bitcoind_peer.ts";
import { buildPatchedCkpool } from "./support/ckpool_build.ts";
import { type CkpoolProcess, startCkpool, writeCkpoolConfig } from "./support/ckpool_config.ts";
import { type CollectorProcess, spawnCollector } from "./support/collector_process.ts";
import {
  freePort,
  loadSchema,
  type Service,
  startPostgres,
  startRedis,
} from "./support/services.ts";
import {
  connectMiner,
  type ShareResult,
  type StratumMiner,
  stratumPrevHash,
} from "./support/stratum_miner.ts";
import { waitFor } from "./support/wait.ts";

const CKPOOL_SRC = Deno.env.get("CKPOOL_SRC");
const REAL_MINING = Deno.env.get("TBG_REAL_MINING") === "1";

if (!CKPOOL_SRC) {
  console.log(
    "e2e skipped: set CKPOOL_SRC=/path/to/ckpool checkout at the commit in patches/UPSTREAM.lock " +
      "(e.g. git clone https://github.com/skaisser/ckpool && git checkout <commit>)",
  );
} else if (!REAL_MINING) {
  console.log(
    "e2e real mining skipped: also set TBG_REAL_MINING=1 to mine a difficulty-1 share " +
      "(an accepted share and a block; several minutes of CPU)",
  );
}

/** ckpool's `btcsig`, which block_found reports as `coinbase_sig`. */
const BTCSIG = "/tbg-e2e/";

// ---------------------------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------------------------

interface Stack {
  work: string;
  socket: string;
  redis: Service;
  pg: Service;
  collector: CollectorProcess;
  peer: BitcoindPeer;
  ckpool: CkpoolProcess;
  /** The emitter id ckpool logged at start. */
  emitter: string;
  stratumPort: number;
  sql: postgres.Sql;
  rc: RedisClient;
  /** Messages received on the `blocks:found` channel. */
  blocksFound: string[];
  /** Miners connected by {@link connect}; closed at teardown. */
  miners: StratumMiner[];
  /** Milliseconds since the epoch when the stack was up, for ts checks. */
  startedAt: number;
}

async function redisClient(url: string) {
  const client = createClient({ url });
  client.on("error", () => {});
  await client.connect();
  return client;
}

type RedisClient = Awaited<ReturnType<typeof redisClient>>;

/**
 * Starts redis, postgres (schema loaded), the collector, the bitcoind peer and ckpool with its
 * `event_socket_path` at the collector's socket, in that order (the collector listens before
 * ckpool's first event), runs `test`, and stops every process whatever happens.
 */
async function withStack(
  test: (stack: Stack) => Promise<void>,
  options: { hashrateInterval?: number } = {},
): Promise<void> {
  const work = await Deno.makeTempDir({ prefix: "tbg-e2e-" });
  const socket = `${work}/events.sock`;
  assert.ok(
    new TextEncoder().encode(socket).length < 107,
    `socket path too long for sun_path: ${socket}`,
  );
  let redis: Service | undefined;
  let pg: Service | undefined;
  let collector: CollectorProcess | undefined;
  let peer: BitcoindPeer | undefined;
  let ckpool: CkpoolProcess | undefined;
  let sql: postgres.Sql | undefined;
  let rc: RedisClient | undefined;
  let subscriber: RedisClient | undefined;
  const miners: StratumMiner[] = [];
  try {
    const build = await buildPatchedCkpool(CKPOOL_SRC!);
    console.log(
      `ckpool ${build.cached ? "from cache" : "built"} (build took ${build.seconds} s): ` +
        build.ckpool,
    );
    [redis, pg] = await Promise.all([startRedis(), startPostgres()]);
    await loadSchema(pg);
    collector = spawnCollector({
      SOCKET_PATH: socket,
      REDIS_URL: redis.url,
      DATABASE_URL: pg.url,
      BATCH_FLUSH_INTERVAL: "0.1",
      LOG_LEVEL: "INFO",
    });
    await collector.waitForOutput(/listening on/);
    sql = postgres(pg.url, { onnotice: () => {}, max: 1 });
    rc = await redisClient(redis.url);
    const blocksFound: string[] = [];
    subscriber = await redisClient(redis.url);
    await subscriber.subscribe("blocks:found", (message: string) => blocksFound.push(message));

    peer = await startBitcoindPeer();
    const stratumPort = freePort();
    await Deno.mkdir(`${work}/ckp`);
    const configPath = await writeCkpoolConfig(`${work}/ckpool.conf`, {
      btcdUrl: peer.url,
      btcdUser: peer.user,
      btcdPass: peer.pass,
      stratumPort,
      logdir: `${work}/logs`,
      btcsig: BTCSIG,
      // no work updates while a test runs: jobs change only when the tip does
      updateInterval: 600,
      eventSocketPath: socket,
      // 0: no hashrate_update, so that a test can count every event ckpool sends
      extra: { event_hashrate_interval: options.hashrateInterval ?? 0 },
    });
    ckpool = startCkpool({ binary: build.ckpool, configPath, sockDir: `${work}/ckp`, loglevel: 6 });
    const [, emitter, path, interval] = await ckpool.waitForOutput(
      /TBG events: emitter ([0-9a-f]{16}) sending to (\S+), send buffer \d+ bytes, hashrates every (\d+) s/,
      60_000,
    );
    assert.equal(path, socket);
    assert.equal(Number(interval), options.hashrateInterval ?? 0);
    await ckpool.waitForOutput(/Network diff set to/, 60_000);
    // The image's health check, against this ckpool: it answers ping and mining.subscribe.
    const health = await new Deno.Command("bash", {
      args: [new URL("../ckpool/healthcheck.sh", import.meta.url).pathname],
      env: {
        CKPOOL_SOCKET_DIR: `${work}/ckp`,
        STRATUM_PORT: String(stratumPort),
        CKPMSG: `${build.binDir}/ckpmsg`,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      health.code,
      0,
      `ckpool health check: ${new TextDecoder().decode(health.stderr)}`,
    );
    await test({
      work,
      socket,
      redis,
      pg,
      collector,
      peer,
      ckpool,
      emitter,
      stratumPort,
      sql,
      rc,
      blocksFound,
      miners,
      startedAt: Date.now(),
    });
    assert.doesNotMatch(
      ckpool.output(),
      /TBG events: \d+ event\(s\) not delivered/,
      "ckpool failed to send an event",
    );
  } catch (error) {
    const tail = (text: string) => text.replaceAll("\r", "\n").split("\n").slice(-40).join("\n");
    if (ckpool) console.error(`ckpool output (tail):\n${tail(ckpool.output())}`);
    if (collector) console.error(`collector output (tail):\n${tail(collector.output())}`);
    throw error;
  } finally {
    for (const miner of miners) await miner.close().catch(() => {});
    await ckpool?.stop().catch(() => {});
    await collector?.stop("SIGKILL").catch(() => {});
    await subscriber?.close().catch(() => {});
    await rc?.close().catch(() => {});
    await sql?.end().catch(() => {});
    await peer?.close().catch(() => {});
    await Promise.all([redis?.stop(), pg?.stop()].map((p) => p?.catch(() => {})));
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** A fresh random signet address: P2WPKH (20-byte program) or P2WSH (32). */
function randomAddress(programBytes: 20 | 32): string {
  return encodeSegwitAddress("tb", 0, crypto.getRandomValues(new Uint8Array(programBytes)));
}

/** Connects, subscribes and authorizes `address.worker`; waits for difficulty and its own job. */
async function connect(
  stack: Stack,
  address: string,
  worker: string,
  userAgent: string,
): Promise<StratumMiner> {
  const miner = await waitFor(
    () => connectMiner({ port: stack.stratumPort, user: `${address}.${worker}`, userAgent }),
    { timeoutMs: 20_000, what: "ckpool's stratum port" },
  );
  stack.miners.push(miner);
  await miner.subscribe();
  assert.equal(await miner.authorize(), true, `ckpool refused ${address}.${worker}`);
  assert.equal(await miner.waitForDifficulty(), 1);
  const payout = toHex(addressToScript(address));
  await miner.waitFor(
    () => miner.jobs.find((j) => j.coinb2.includes(payout)),
    "a job whose coinbase pays the miner's address",
  );
  return miner;
}

// ---------------------------------------------------------------------------------------------
// Reading the sinks
// ---------------------------------------------------------------------------------------------

interface StreamEntry {
  id: string;
  event: string;
  ts: number;
  source: string;
  data: Record<string, unknown>;
}

async function readStream(rc: RedisClient, type: string): Promise<StreamEntry[]> {
  const raw = await rc.sendCommand(["XRANGE", `mining:${type}`, "-", "+"]) as [
    string,
    string[],
  ][];
  return raw.map(([id, fields]) => {
    const f: Record<string, string> = {};
    for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
    assert.deepEqual(Object.keys(f), ["id", "event", "ts", "source", "data"]);
    assert.match(f.id, /^([0-9a-f]+:[0-9]+|sha256:[0-9a-f]{32})$/);
    return { id, event: f.event, ts: Number(f.ts), source: f.source, data: JSON.parse(f.data) };
  });
}

/** The collector's fatal log line, if it has one (it exits after it). */
function collectorFailure(stack: Stack): string | undefined {
  return stack.collector.output().match(/^.*\[FTL\].*$/m)?.[0];
}

/**
 * Waits until the stream `mining:<type>` holds at least `count` entries; returns them all.
 * Fails at once, with its message, when the collector has died meanwhile.
 */
async function waitForStream(
  stack: Stack,
  type: string,
  count: number,
  timeoutMs = 30_000,
): Promise<StreamEntry[]> {
  const result = await waitFor(async () => {
    if (collectorFailure(stack)) return "dead" as const;
    const entries = await readStream(stack.rc, type);
    return entries.length >= count ? entries : undefined;
  }, { timeoutMs, intervalMs: 50, what: `${count} entries in mining:${type}` });
  if (result === "dead") {
    throw new Error(
      `the collector died while waiting for mining:${type}: ${collectorFailure(stack)}`,
    );
  }
  return result;
}

interface EventRow {
  ts: Date;
  event_type: string;
  source: string;
  emitter: string;
  seq: number;
  payload: Record<string, unknown>;
}

async function eventRows(sql: postgres.Sql): Promise<EventRow[]> {
  return (await sql`
    select ts, event_type, source, emitter, seq::int as seq, payload
    from mining_events order by seq`) as unknown as EventRow[];
}

function near(actual: unknown, expected: number, what: string, relative = 1e-9): void {
  assert.equal(typeof actual, "number", `${what} is not a number: ${actual}`);
  const a = actual as number;
  assert.ok(
    a === expected || Math.abs(a - expected) <= relative * Math.abs(expected),
    `${what}: ${a} is not ${expected}`,
  );
}

/**
 * Checks what every test checks once the events are in: each event in both sinks, all from
 * ckpool's one emitter with seq 1..n and none lost; Redis entries (no seq there) in the same
 * order and with the same data as the PostgreSQL rows ordered by seq.
 */
async function checkEnvelopes(stack: Stack, expected: Record<string, number>): Promise<EventRow[]> {
  const total = Object.values(expected).reduce((a, b) => a + b, 0);
  const rows = await waitFor(async () => {
    const rows = await eventRows(stack.sql);
    return rows.length >= total ? rows : undefined;
  }, { timeoutMs: 30_000, intervalMs: 50, what: `${total} mining_events rows` });
  const counts: Record<string, number> = {};
  for (const row of rows) counts[row.event_type] = (counts[row.event_type] ?? 0) + 1;
  assert.deepEqual(counts, expected, "events per type in mining_events");
  assert.deepEqual(
    rows.map((r) => r.seq),
    Array.from({ length: total }, (_, i) => i + 1),
    "seq counts every event of the emitter from 1 with no gap",
  );
  const now = Date.now();
  for (const row of rows) {
    assert.equal(row.emitter, stack.emitter);
    assert.equal(row.source, "hosted");
    assert.ok(
      row.ts.getTime() >= stack.startedAt - 120_000 && row.ts.getTime() <= now + 1_000,
      `ts ${row.ts.toISOString()} of ${row.event_type} #${row.seq} is not from this run`,
    );
  }
  for (const type of Object.keys(expected)) {
    const entries = await readStream(stack.rc, type);
    const byType = rows.filter((r) => r.event_type === type);
    assert.equal(entries.length, byType.length, `entries in mining:${type}`);
    for (let i = 0; i < entries.length; i++) {
      assert.equal(entries[i].event, type);
      assert.equal(entries[i].source, "hosted");
      assert.deepEqual(entries[i].data, byType[i].payload, `mining:${type} entry ${i}`);
      assert.ok(
        Math.abs(entries[i].ts * 1000 - byType[i].ts.getTime()) < 1,
        `ts of mining:${type} entry ${i}`,
      );
      if (i > 0) assert.ok(entries[i].ts >= entries[i - 1].ts, `mining:${type} ts order`);
    }
  }
  return rows;
}

/** SIGTERM: exit 0, and the `stopped:` line counts exactly `total` events, none invalid or lost. */
async function stopCollector(stack: Stack, total: number): Promise<void> {
  assert.equal(await stack.collector.stop("SIGTERM"), 0);
  const line = stack.collector.output().match(/stopped: (received=.*)/)?.[1];
  assert.ok(line, `no stopped: line in\n${stack.collector.output()}`);
  console.log(`collector stopped: ${line}`);
  assert.match(line, /invalid=0 lost=0 /);
  assert.match(line, new RegExp(`^received=${total} accepted=${total} `));
  assert.match(line, new RegExp(`redis: up written=${total} pending=0 retried=\\d+ dropped=0`));
  assert.match(line, new RegExp(`postgres: up written=${total} pending=0 retried=\\d+ dropped=0`));
  const [{ n }] = await stack.sql`select count(*)::int as n from mining_events`;
  assert.equal(n, total, "nothing arrived after the checks");
}

/**
 * The share_best_diff events ckpool emits for these scored shares, in order: one each time a
 * user's share beats that user's best so far (starting from 0).
 */
function bestDiffEvents(
  scored: Array<{ addr: string; sdiff: number }>,
): Array<{ addr: string; newBest: number; prevBest: number }> {
  const out: Array<{ addr: string; newBest: number; prevBest: number }> = [];
  const best = new Map<string, number>();
  for (const { addr, sdiff } of scored) {
    const prev = best.get(addr) ?? 0;
    if (sdiff > prev) {
      out.push({ addr, newBest: sdiff, prevBest: prev });
      best.set(addr, sdiff);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The default test
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "e2e: miners -> patched ckpool -> collector -> Redis and PostgreSQL (rejected shares, " +
    "best diff, network block, disconnect)",
  ignore: !CKPOOL_SRC,
  // child processes' pipes and the Redis subscriber are torn down in withStack's finally
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withStack(async (stack) => {
      const { peer, rc, sql } = stack;
      const started = performance.now();
      const startHeight = peer.height;
      const startHash = peer.tipHash;
      // ckpool rounds a network difficulty below 1 up to 1 (stratifier.c add_base), and reports
      // that: the peer's regtest-easy bits are difficulty 4.66e-10.
      const networkDiff = Math.max(1, bitsToDifficulty(peer.bits));

      // ckpool announces the tip it starts on
      const [first] = await waitForStream(stack, "new_block_network", 1);
      assert.deepEqual(first.data, {
        height: startHeight,
        hash: startHash,
        diff: first.data.diff,
        prev_hash: "",
      });
      near(first.data.diff, networkDiff, "network diff");

      // Two miners: different address types, worker names and user agents. B's worker name
      // holds a quote, a backslash, a space and non-ASCII: ckpool takes it as is (it refuses
      // only "/" and a leading "." or "_").
      const addrA = randomAddress(20);
      const addrB = randomAddress(32);
      const workerA = "rig-1";
      const workerB = 'bitaxe "ü" \\2';
      const a = await connect(stack, addrA, workerA, "tbg-e2e-a/1.0");
      const b = await connect(stack, addrB, workerB, "tbg-e2e-b/2.0");

      const connected = await waitForStream(stack, "miner_connected", 2);
      assert.equal(connected.length, 2);
      const clientId = new Map<string, number>();
      for (
        const [entry, addr, worker, ua] of [
          [connected[0], addrA, workerA, "tbg-e2e-a/1.0"],
          [connected[1], addrB, workerB, "tbg-e2e-b/2.0"],
        ] as const
      ) {
        const id = entry.data.client_id as number;
        assert.ok(Number.isInteger(id) && id >= 0, `client_id ${id}`);
        clientId.set(addr, id);
        assert.deepEqual(entry.data, {
          user: addr,
          worker,
          client_id: id,
          ip: "127.0.0.1",
          useragent: ua,
          initial_diff: 1,
        });
      }
      assert.notEqual(clientId.get(addrA), clientId.get(addrB));

      // Random nonces: below difficulty 1, rejected "Above target"; then an unknown job id.
      const sent: Array<{ addr: string; share: ShareResult }> = [];
      for (const [miner, addr] of [[a, addrA], [b, addrB]] as const) {
        for (let i = 0; i < 3; i++) {
          const share = await miner.submitShare();
          assert.equal(share.accepted, false);
          assert.equal(share.rejectReason, "Above target");
          assert.ok(share.shareDifficulty < 1);
          sent.push({ addr, share });
        }
        const badJob = await miner.submitShare({ jobId: "feedfacecafe" });
        assert.equal(badJob.accepted, false);
        assert.equal(badJob.rejectReason, "Invalid JobID");
        sent.push({ addr, share: badJob });
      }

      // The network finds a block: ckpool sees the new tip, both miners get a clean job.
      const oldJob = a.job!;
      const jobsA = a.jobs.length;
      const jobsB = b.jobs.length;
      const newHash = await peer.mineBlock();
      assert.equal(peer.height, startHeight + 1);
      const networkBlocks = await waitForStream(stack, "new_block_network", 2);
      assert.deepEqual(networkBlocks[1].data, {
        height: startHeight + 1,
        hash: newHash,
        diff: networkBlocks[1].data.diff,
        prev_hash: "",
      });
      near(networkBlocks[1].data.diff, networkDiff, "network diff");
      for (const [miner, seen] of [[a, jobsA], [b, jobsB]] as const) {
        await miner.waitFor(
          () =>
            miner.jobs.slice(seen).find((j) =>
              j.cleanJobs && j.prevHash === stratumPrevHash(newHash)
            ),
          "a clean job on the new tip",
        );
      }
      // Work on the old tip is now stale.
      const stale = await a.submitShare({ jobId: oldJob.jobId });
      assert.equal(stale.accepted, false);
      assert.equal(stale.rejectReason, "Stale");
      sent.push({ addr: addrA, share: stale });

      // A leaves.
      await a.close();
      const [gone] = await waitForStream(stack, "miner_disconnected", 1);
      const duration = gone.data.session_duration as number;
      assert.ok(duration >= 0 && duration < 600, `session_duration ${duration}`);
      assert.deepEqual(gone.data, {
        user: addrA,
        worker: workerA,
        client_id: clientId.get(addrA),
        ip: "127.0.0.1",
        session_duration: duration,
        shares_session: 0,
        rejects_session: 5,
      });

      // B asks for difficulty 2: ckpool tells B so, and the kit reports the change.
      const told = b.difficulties.length;
      await b.notify("mining.suggest_difficulty", [2]);
      assert.equal(await b.waitForDifficulty({ after: told }), 2);
      const [changed] = await waitForStream(stack, "diff_updated", 1);
      assert.deepEqual(changed.data, {
        user: addrB,
        worker: workerB,
        client_id: clientId.get(addrB),
        old_diff: 1,
        new_diff: 2,
      });

      // Every share as ckpool judged it, in the order sent.
      const expectedShares = sent.map(({ addr, share }) => ({
        user: addr,
        worker: addr === addrA ? workerA : workerB,
        client_id: clientId.get(addr),
        diff: 1,
        // ckpool scores no share for a job it does not know
        sdiff: share.rejectReason === "Invalid JobID" ? 0 : share.shareDifficulty,
        accepted: false,
        reject_reason: share.rejectReason,
        ip: "127.0.0.1",
        is_block: false,
      }));
      const shares = await waitForStream(stack, "share_submitted", expectedShares.length);
      assert.equal(shares.length, expectedShares.length);
      for (let i = 0; i < shares.length; i++) {
        const { sdiff, ...rest } = expectedShares[i];
        const { sdiff: got, ...gotRest } = shares[i].data;
        assert.deepEqual(gotRest, rest, `share_submitted ${i}`);
        near(got, sdiff, `sdiff of share ${i}`);
      }

      // share_best_diff: each time a user beats their best since the pool's last block,
      // rejected shares included (ckpool checks before it judges). Stale work counts too.
      const expectedBest = bestDiffEvents(
        sent.filter(({ share }) => share.rejectReason !== "Invalid JobID")
          .map(({ addr, share }) => ({ addr, sdiff: share.shareDifficulty })),
      );
      const best = await waitForStream(stack, "share_best_diff", expectedBest.length);
      assert.equal(best.length, expectedBest.length);
      for (let i = 0; i < best.length; i++) {
        const want = expectedBest[i];
        assert.deepEqual(
          { ...best[i].data, new_best: 0, prev_best: 0 },
          {
            user: want.addr,
            worker: want.addr === addrA ? workerA : workerB,
            new_best: 0,
            prev_best: 0,
            timeframe: "round",
          },
          `share_best_diff ${i}`,
        );
        near(best[i].data.new_best, want.newBest, `new_best ${i}`);
        near(best[i].data.prev_best, want.prevBest, `prev_best ${i}`);
      }

      const expected = {
        new_block_network: 2,
        miner_connected: 2,
        share_submitted: expectedShares.length,
        share_best_diff: expectedBest.length,
        miner_disconnected: 1,
        diff_updated: 1,
      };
      const total = Object.values(expected).reduce((x, y) => x + y, 0);
      const rows = await checkEnvelopes(stack, expected);

      // PostgreSQL: shares
      const shareRows = await sql`
        select btc_address, worker_name, difficulty, share_diff, is_valid, is_block,
               reject_reason, ip_address, source, emitter, seq::int as seq
        from shares order by seq`;
      assert.equal(shareRows.length, expectedShares.length);
      const shareSeqs = rows.filter((r) => r.event_type === "share_submitted").map((r) => r.seq);
      for (let i = 0; i < shareRows.length; i++) {
        const row = shareRows[i];
        const want = expectedShares[i];
        assert.deepEqual(
          { ...row, share_diff: 0 },
          {
            btc_address: want.user,
            worker_name: want.worker,
            difficulty: 1,
            share_diff: 0,
            is_valid: false,
            is_block: false,
            reject_reason: want.reject_reason,
            ip_address: "127.0.0.1",
            source: "hosted",
            emitter: stack.emitter,
            seq: shareSeqs[i],
          },
          `shares row ${i}`,
        );
        near(row.share_diff, want.sdiff, `shares.share_diff ${i}`);
      }
      const reasons = await sql`
        select btc_address, reject_reason, count(*)::int as n from shares
        group by 1, 2 order by 1, 2`;
      assert.deepEqual(
        reasons.map((r) => [r.btc_address, r.reject_reason, r.n]),
        [
          [addrA, "Above target", 3],
          [addrA, "Invalid JobID", 1],
          [addrA, "Stale", 1],
          [addrB, "Above target", 3],
          [addrB, "Invalid JobID", 1],
        ].sort((x, y) => x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0),
      );

      // users: both addresses, last_seen = their latest event
      const lastEvent = (addr: string) =>
        Math.max(
          ...rows.filter((r) => r.payload.user === addr).map((r) => r.ts.getTime()),
        );
      const users = await sql`
        select btc_address, last_seen from users where btc_address in (${addrA}, ${addrB})
        order by btc_address`;
      assert.equal(users.length, 2);
      for (const user of users) {
        assert.ok(user.last_seen instanceof Date, `last_seen of ${user.btc_address}`);
        assert.equal(user.last_seen.getTime(), lastEvent(user.btc_address));
      }

      // workers: A offline, B online, with their counts and connection details
      const workers = await sql`
        select u.btc_address, w.worker_name, w.is_online, w.current_diff, w.ip_address,
               w.useragent, w.source, w.shares_accepted::int as shares_accepted,
               w.shares_rejected::int as shares_rejected,
               w.connected_at is not null as connected, w.disconnected_at is not null as left,
               w.last_share_at is not null as shared
        from workers w join users u on u.id = w.user_id order by w.is_online`;
      assert.deepEqual(workers.map((w) => ({ ...w })), [
        {
          btc_address: addrA,
          worker_name: workerA,
          is_online: false,
          current_diff: 1,
          ip_address: "127.0.0.1",
          useragent: "tbg-e2e-a/1.0",
          source: "hosted",
          shares_accepted: 0,
          shares_rejected: 5,
          connected: true,
          left: true,
          shared: true,
        },
        {
          btc_address: addrB,
          worker_name: workerB,
          is_online: true,
          current_diff: 2,
          ip_address: "127.0.0.1",
          useragent: "tbg-e2e-b/2.0",
          source: "hosted",
          shares_accepted: 0,
          shares_rejected: 4,
          connected: true,
          left: false,
          shared: true,
        },
      ]);

      // share_best_diff rows, in order
      const bestRows = rows.filter((r) => r.event_type === "share_best_diff");
      assert.deepEqual(
        bestRows.map((r) => r.payload.user),
        expectedBest.map((e) => e.addr),
      );

      // No accepted share, so no block and no weekly score.
      assert.equal((await sql`select count(*)::int as n from blocks`)[0].n, 0);
      assert.equal((await sql`select count(*)::int as n from weekly_best_diff`)[0].n, 0);
      assert.equal(Number(await rc.sendCommand(["XLEN", "mining:block_found"])), 0);
      assert.deepEqual(stack.blocksFound, []);

      await stopCollector(stack, total);
      console.log(
        `e2e: ${total} events checked in ${((performance.now() - started) / 1000).toFixed(1)} s ` +
          `after the stack was up`,
      );
    }),
});

// ---------------------------------------------------------------------------------------------
// Hashrate and difficulty: what a game shows of a worker
// ---------------------------------------------------------------------------------------------

/** A rate as ckpool's suffix_string() writes it: "0", "512", "1.23K" ... "4.56E". */
function fromSuffix(text: string): number {
  const match = /^([0-9.]+)([KMGTPE]?)$/.exec(text);
  assert.ok(match, `not a ckpool rate: ${text}`);
  return Number(match[1]) * 1000 ** "_KMGTPE".indexOf(match[2] || "_");
}

/** ckpool's last status line (it prints one a second): `| 0.00H/s  0.0 SPS  1 users ...`. */
function ckpoolStatus(stack: Stack): string {
  const lines = stack.ckpool.output().replaceAll("\r", "\n").split("\n");
  const status = lines.map((l) => l.replace(/^\[[^\]]*\] /, "")).filter((l) => /H\/s /.test(l));
  assert.ok(status.length > 0, "ckpool printed no status line");
  return status[status.length - 1];
}

Deno.test({
  name:
    "e2e: hashrate_update every event_hashrate_interval, diff_updated for every new difficulty; " +
    "both fill the worker's row",
  ignore: !CKPOOL_SRC,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withStack(async (stack) => {
      const { sql } = stack;
      await waitForStream(stack, "new_block_network", 1);
      const address = randomAddress(20);
      const worker = "s19";
      const miner = await connect(stack, address, worker, "tbg-e2e-rate/1.0");
      const [connected] = await waitForStream(stack, "miner_connected", 1);
      const clientId = connected.data.client_id;

      // A difficulty the miner asked for (mining.suggest_difficulty), then another.
      for (const [i, wanted] of [4, 3].entries()) {
        const told = miner.difficulties.length;
        await miner.notify("mining.suggest_difficulty", [wanted]);
        assert.equal(await miner.waitForDifficulty({ after: told }), wanted);
        const changes = await waitForStream(stack, "diff_updated", i + 1);
        assert.deepEqual(changes[i].data, {
          user: address,
          worker,
          client_id: clientId,
          old_diff: i === 0 ? 1 : 4,
          new_diff: wanted,
        });
      }

      // Rounds every second (ckpool's stats thread ticks every 1.875 s), one event per worker
      // with a connected client.
      const rounds = await waitForStream(stack, "hashrate_update", 3, 30_000);
      const gaps = rounds.slice(1).map((r, i) => r.ts - rounds[i].ts);
      console.log(`hashrate_update rounds ${gaps.map((g) => g.toFixed(2)).join(", ")} s apart`);
      for (const gap of gaps) assert.ok(gap > 1 && gap < 10, `rounds ${gap} s apart`);
      for (const round of rounds) {
        assert.deepEqual(Object.keys(round.data), [
          "user",
          "worker",
          "hashrate_1m",
          "hashrate_5m",
          "hashrate_1h",
          "hashrate_1d",
        ]);
        assert.equal(round.data.user, address);
        assert.equal(round.data.worker, worker);
      }

      // ckpool's averages grow only from accepted shares (add_submit), and none was accepted:
      // ckpool itself says 0 H/s, and so does every round.
      assert.match(ckpoolStatus(stack), /^ ?[|/\\-] 0\.00H\/s /);
      for (const round of rounds) {
        for (const field of ["hashrate_1m", "hashrate_5m", "hashrate_1h", "hashrate_1d"]) {
          assert.equal(round.data[field], 0, field);
        }
      }

      // The game reads a worker's state with one query.
      const last = rounds[rounds.length - 1];
      const row = await waitFor(async () => {
        const [row] = await sql`
          select w.current_diff, w.hashrate_1m, w.hashrate_5m, w.hashrate_1h, w.hashrate_24h,
                 extract(epoch from w.hashrate_at)::float8 as hashrate_at, w.is_online
          from workers w join users u on u.id = w.user_id
          where u.btc_address = ${address} and w.worker_name = ${worker}`;
        return row && row.hashrate_at !== null && row.hashrate_at >= last.ts - 1e-6
          ? row
          : undefined;
      }, { what: "the worker's row with the last hashrate_update" });
      assert.equal(row.current_diff, 3);
      assert.equal(row.is_online, true);
      // The row holds the latest round it has seen.
      const shown = (await readStream(stack.rc, "hashrate_update"))
        .find((r) => Math.abs(r.ts - row.hashrate_at) < 1e-6);
      assert.ok(shown, `no hashrate_update at ${row.hashrate_at}`);
      near(row.hashrate_1m, shown.data.hashrate_1m as number, "workers.hashrate_1m");
      near(row.hashrate_5m, shown.data.hashrate_5m as number, "workers.hashrate_5m");
      near(row.hashrate_1h, shown.data.hashrate_1h as number, "workers.hashrate_1h");
      near(row.hashrate_24h, shown.data.hashrate_1d as number, "workers.hashrate_24h");
    }, { hashrateInterval: 1 }),
});

// ---------------------------------------------------------------------------------------------
// Real mining (opt-in)
// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "e2e real mining: a difficulty-1 share is accepted and becomes a block (TBG_REAL_MINING=1)",
  ignore: !CKPOOL_SRC || !REAL_MINING,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withStack(async (stack) => {
      const { peer, sql } = stack;
      const started = performance.now();
      // ckpool rounds a network difficulty below 1 up to 1 (stratifier.c add_base), and reports
      // that: the peer's regtest-easy bits are difficulty 4.66e-10.
      const networkDiff = Math.max(1, bitsToDifficulty(peer.bits));
      await waitForStream(stack, "new_block_network", 1);

      const address = randomAddress(20);
      const worker = "grinder";
      const miner = await connect(stack, address, worker, "tbg-e2e-grinder/1.0");
      const [connected] = await waitForStream(stack, "miner_connected", 1);
      assert.equal(connected.data.user, address);
      const before = peer.submitted.length;

      const deadlineMs = Number(Deno.env.get("TBG_MINING_DEADLINE_MS") ?? 20 * 60_000);
      const share = await miner.submitValidShare({ deadlineMs });
      console.log(
        `e2e real mining: difficulty-1 share after ${share.grind.hashes} hashes in ` +
          `${share.grind.seconds.toFixed(1)} s (${(share.grind.rate / 1e6).toFixed(2)} MH/s), ` +
          `share difficulty ${share.shareDifficulty.toFixed(3)}: ${share.hash}`,
      );
      assert.equal(
        share.accepted,
        true,
        `share refused: ${share.rejectReason ?? JSON.stringify(share.error)}`,
      );

      // The peer got the block and made it its tip; the coinbase pays the miner.
      const block = await peer.waitForSubmission({ count: before, timeoutMs: 30_000 });
      assert.equal(block.hash, share.hash);
      assert.equal(block.result, null);
      assert.equal(block.accepted, true);
      assert.equal(peer.tipHash, share.hash);
      assert.equal(block.coinbase?.outputs[0].address, address);
      const height = block.height!;
      assert.equal(peer.height, height);

      // share_submitted, accepted
      const [accepted] = await waitForStream(stack, "share_submitted", 1);
      assert.deepEqual({ ...accepted.data, sdiff: 0 }, {
        user: address,
        worker,
        client_id: connected.data.client_id,
        diff: 1,
        sdiff: 0,
        accepted: true,
        reject_reason: "",
        ip: "127.0.0.1",
      });
      near(accepted.data.sdiff, share.shareDifficulty, "sdiff");

      // block_found on the stream and on the channel
      const [found] = await waitForStream(stack, "block_found", 1);
      // The hash is checked against bitcoind's form last (see the end), the rest first.
      const foundHash = found.data.hash as string;
      const expectedBlock = {
        user: address,
        worker,
        height,
        hash: foundHash,
        diff: 0,
        network_diff: 0,
        reward_sats: Number(blockSubsidy(height)),
        coinbase_sig: BTCSIG,
      };
      assert.deepEqual({ ...found.data, diff: 0, network_diff: 0 }, expectedBlock);
      near(found.data.diff, share.shareDifficulty, "block diff");
      near(found.data.network_diff, networkDiff, "network_diff");
      const published = await waitFor(() => stack.blocksFound[0], {
        what: "a message on blocks:found",
      });
      const message = JSON.parse(published);
      assert.equal(message.event, "block_found");
      assert.equal(message.source, "hosted");
      assert.equal(message.emitter, stack.emitter);
      assert.ok(Number.isInteger(message.seq));
      assert.deepEqual(message.data, found.data);
      assert.equal(stack.blocksFound.length, 1);

      // The best share of the round, then (the pool's block) ckpool moves to its own tip.
      const [best] = await waitForStream(stack, "share_best_diff", 1);
      assert.deepEqual({ ...best.data, new_best: 0 }, {
        user: address,
        worker,
        new_best: 0,
        prev_best: 0,
        timeframe: "round",
      });
      near(best.data.new_best, share.shareDifficulty, "new_best");
      const tips = await waitForStream(stack, "new_block_network", 2);
      assert.equal(tips[1].data.height, height);
      assert.equal(tips[1].data.hash, share.hash);

      await miner.close();
      const [gone] = await waitForStream(stack, "miner_disconnected", 1);
      assert.equal(gone.data.user, address);
      assert.equal(gone.data.worker, worker);
      assert.equal(gone.data.shares_session, 1);
      assert.equal(gone.data.rejects_session, 0);

      const expected = {
        new_block_network: 2,
        miner_connected: 1,
        share_best_diff: 1,
        share_submitted: 1,
        block_found: 1,
        miner_disconnected: 1,
      };
      const total = Object.values(expected).reduce((x, y) => x + y, 0);
      await checkEnvelopes(stack, expected);

      const [shareRow] = await sql`
        select btc_address, worker_name, difficulty, share_diff, is_valid, reject_reason
        from shares`;
      assert.deepEqual({ ...shareRow, share_diff: 0 }, {
        btc_address: address,
        worker_name: worker,
        difficulty: 1,
        share_diff: 0,
        is_valid: true,
        reject_reason: null,
      });
      near(shareRow.share_diff, share.shareDifficulty, "shares.share_diff");

      const blocks = await sql`
        select block_height::int as block_height, block_hash, btc_address, worker_name,
               reward_sats::bigint as reward_sats, difficulty, network_difficulty, coinbase_sig,
               source, user_id = (select id from users where btc_address = ${address}) as linked
        from blocks`;
      assert.equal(blocks.length, 1);
      assert.deepEqual({ ...blocks[0], difficulty: 0, network_difficulty: 0 }, {
        block_height: height,
        block_hash: foundHash,
        btc_address: address,
        worker_name: worker,
        reward_sats: String(blockSubsidy(height)),
        difficulty: 0,
        network_difficulty: 0,
        coinbase_sig: BTCSIG,
        source: "hosted",
        linked: true,
      });
      near(blocks[0].difficulty, share.shareDifficulty, "blocks.difficulty");
      near(blocks[0].network_difficulty, networkDiff, "blocks.network_difficulty");

      const weekly = await sql`
        select btc_address, week_start::text as week_start, best_difficulty,
               total_shares::int as total_shares
        from weekly_best_diff`;
      assert.equal(weekly.length, 1);
      const monday = new Date(accepted.ts * 1000);
      monday.setUTCDate(monday.getUTCDate() - ((monday.getUTCDay() + 6) % 7));
      assert.deepEqual({ ...weekly[0], best_difficulty: 0 }, {
        btc_address: address,
        week_start: monday.toISOString().slice(0, 10),
        best_difficulty: 0,
        total_shares: 1,
      });
      near(weekly[0].best_difficulty, share.shareDifficulty, "weekly best_difficulty");

      const [w] = await sql`
        select w.is_online, w.shares_accepted::int as shares_accepted,
               w.shares_rejected::int as shares_rejected
        from workers w join users u on u.id = w.user_id where u.btc_address = ${address}`;
      assert.deepEqual({ ...w }, { is_online: false, shares_accepted: 1, shares_rejected: 0 });

      await stopCollector(stack, total);

      // block_found.hash must be the block hash as bitcoind shows it (what getbestblockhash,
      // block explorers and new_block_network give).
      assert.equal(
        foundHash,
        share.hash,
        foundHash === stratumPrevHash(share.hash)
          ? "block_found.hash is ckpool's internal form of the block hash (its 4-byte words in " +
            `reverse order: ckpool's "blockhash" from process_block()'s flip_32), not ` +
            "bitcoind's; the patch kit's block_found hook should convert it"
          : "block_found.hash is not the block's hash",
      );
      console.log(
        `e2e real mining: grinding took ${share.grind.seconds.toFixed(1)} s, the whole test ` +
          `${((performance.now() - started) / 1000).toFixed(1)} s after the stack was up`,
      );
    }),
});

Deno.test({
  name: "e2e real mining: hashrate_update carries ckpool's own averages once a share is " +
    "accepted; the share is marked is_block (TBG_REAL_MINING=1)",
  ignore: !CKPOOL_SRC || !REAL_MINING,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withStack(async (stack) => {
      await waitForStream(stack, "new_block_network", 1);
      const address = randomAddress(20);
      const worker = "rated";
      const miner = await connect(stack, address, worker, "tbg-e2e-rated/1.0");
      const deadlineMs = Number(Deno.env.get("TBG_MINING_DEADLINE_MS") ?? 20 * 60_000);
      const share = await miner.submitValidShare({ deadlineMs });
      assert.equal(share.accepted, true, `share refused: ${share.rejectReason}`);
      const accepted = Date.now() / 1000;

      // The share met the (test chain's easy) network target: ckpool submitted it as a block.
      const [shareEvent] = (await waitForStream(stack, "share_submitted", 1))
        .filter((e) => e.data.accepted === true);
      assert.equal(shareEvent.data.is_block, true);
      const row = await waitFor(async () => {
        const [row] = await stack.sql`select is_block from shares where is_valid`;
        return row;
      }, { what: "the accepted share in PostgreSQL" });
      assert.equal(row.is_block, true);

      // ckpool logs each user with a share once a minute, its averages written by
      // suffix_string() to 3 digits; the round after that log reads the same averages (nothing
      // changes them but a share, or the decay of an idle worker right before the log).
      const logPath = `${stack.work}/logs/users/${address}`;
      const logged = await waitFor(async () => {
        const text = await Deno.readTextFile(logPath).catch(() => undefined);
        const entry = text === undefined ? undefined : JSON.parse(text).worker?.find(
          (w: { workername: string }) => w.workername === `${address}.${worker}`,
        );
        return entry?.hashrate1m && entry.hashrate1m !== "0"
          ? { entry: entry as Record<string, string>, at: Date.now() / 1000 }
          : undefined;
      }, { timeoutMs: 150_000, intervalMs: 200, what: "ckpool's minute log of the user" });
      const round = await waitFor(async () => {
        const rounds = await readStream(stack.rc, "hashrate_update");
        return rounds.find((r) => r.data.user === address && r.ts > logged.at);
      }, { timeoutMs: 150_000, intervalMs: 200, what: "a hashrate_update after ckpool's log" });
      console.log(
        `hashrate_update ${round.ts - accepted} s after the share: ` +
          JSON.stringify(round.data) + `; ckpool logged ${JSON.stringify(logged.entry)}`,
      );
      const fields = [
        ["hashrate_1m", "hashrate1m"],
        ["hashrate_5m", "hashrate5m"],
        ["hashrate_1h", "hashrate1hr"],
        ["hashrate_1d", "hashrate1d"],
      ];
      for (const [field, key] of fields) {
        const ours = round.data[field] as number;
        const theirs = fromSuffix(logged.entry[key]);
        assert.ok(ours > 0, `${field} is ${ours}`);
        // Below 1000 ckpool writes the integer part ("%d"), above it 3 significant digits.
        assert.ok(
          theirs < 1000 ? Math.trunc(ours) === theirs : Math.abs(ours - theirs) <= 0.005 * theirs,
          `${field} ${ours}, ckpool logged ${key} ${logged.entry[key]}`,
        );
      }
      // One share, just now: the shorter the window, the more it weighs.
      const rates = fields.map(([field]) => round.data[field] as number);
      for (let i = 1; i < rates.length; i++) assert.ok(rates[i - 1] >= rates[i], `${rates}`);
    }, { hashrateInterval: 60 }),
});
