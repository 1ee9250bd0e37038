import assert from "node:assert/strict";
import postgres from "postgres";
import { MAX_TS, type MiningEvent, parseEvent } from "../../src/events.ts";
import { createPostgresSink, type PostgresSinkOptions } from "../../src/sinks/postgres/sink.ts";
import type { Acknowledge, Sink } from "../../src/sink.ts";
import { freePort, psqlPath, type Service, startPostgres } from "../support/services.ts";
import { unchecked } from "../support/unchecked_event.ts";
import { tableUpdates } from "../support/table_updates.ts";
import { waitFor } from "../support/wait.ts";
import { pushEvents } from "../support/sink_push.ts";

const INIT_SQL = new URL("../../sql/init.sql", import.meta.url).pathname;

// --- harness helpers -------------------------------------------------------------------------

/** The sink's counters, without its health and latency (checked where they matter). */
function counts(sink: Sink) {
  const { written, retried, pending, dropped } = sink.stats();
  return { written, retried, pending, dropped };
}

/** A fresh PostgreSQL with init.sql loaded, and a client for assertions. */
async function startDatabase(): Promise<{ service: Service; sql: postgres.Sql }> {
  const service = await startPostgres();
  const out = await new Deno.Command(psqlPath(), {
    args: ["--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-f", INIT_SQL, service.url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    await stopPostgres(service);
    throw new Error(`init.sql failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const sql = postgres(service.url, { max: 1, onnotice: () => {} });
  return { service, sql };
}

async function postmasterPid(service: Service): Promise<number | undefined> {
  try {
    const text = await Deno.readTextFile(`${service.dir}/data/postmaster.pid`);
    const pid = Number(text.split("\n")[0]);
    return isRunning(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isRunning(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) children.push(Number(entry.name));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}

/**
 * Crashes the server: SIGKILL to the postmaster and every server process, data kept.
 * As root the harness runs postgres under `runuser`, which forks, so `service.kill()` alone
 * would only kill runuser; the postmaster is found through postmaster.pid.
 */
async function crashPostgres(service: Service): Promise<void> {
  const pid = await postmasterPid(service);
  if (pid !== undefined) {
    const all = [pid, ...childrenOf(pid)];
    for (const each of all) {
      try {
        Deno.kill(each, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await waitFor(() => all.every((each) => !isRunning(each)), { what: "postgres to die" });
  }
  await service.kill();
}

/** Stops the server for good (fast shutdown of the real postmaster, then the harness). */
async function stopPostgres(service: Service): Promise<void> {
  const pid = await postmasterPid(service);
  if (pid !== undefined) {
    Deno.kill(pid, "SIGINT");
    await waitFor(() => !isRunning(pid), { what: "postgres to stop", timeoutMs: 30_000 });
  }
  await service.stop();
}

/**
 * A TCP proxy in front of PostgreSQL whose connections can be cut, to lose a reply in
 * flight. New connections keep working after a cut.
 */
class CuttableProxy {
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;

  /** Where new connections go; {@link retarget} moves it. */
  #targetPort: number;

  constructor(targetPort: number) {
    this.#targetPort = targetPort;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  /** Sends new connections to another server (one that replaced the first, say). */
  retarget(port: number): void {
    this.#targetPort = port;
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        const task = (async () => {
          let upstream: Deno.Conn;
          try {
            upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.#targetPort });
          } catch {
            quietClose(client);
            return;
          }
          this.#conns.add(client);
          this.#conns.add(upstream);
          await Promise.all([pump(client, upstream), pump(upstream, client)]);
          this.#conns.delete(client);
          this.#conns.delete(upstream);
        })();
        this.#tasks.add(task);
        task.finally(() => this.#tasks.delete(task));
      }
    } catch {
      // listener closed
    }
  }

  /** Closes every open connection, both ways. */
  cut(): void {
    for (const conn of this.#conns) quietClose(conn);
    this.#conns.clear();
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed already
    }
    this.cut();
    await this.#accepting;
    await Promise.all(this.#tasks);
  }
}

function quietClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed already
  }
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) break;
      let sent = 0;
      while (sent < n) sent += await to.write(buffer.subarray(sent, n));
    }
  } catch {
    // cut or closed
  } finally {
    quietClose(from);
    quietClose(to);
  }
}

// --- events ----------------------------------------------------------------------------------

/** A validated event (defaults applied), as the collector hands it to a sink. */
function ev(
  event: string,
  ts: number,
  data: Record<string, unknown> = {},
  extra: { seq?: number; emitter?: string; source?: string } = {},
): MiningEvent {
  const parsed = parseEvent({ event, ts, source: extra.source ?? "hosted", data, ...extra });
  if (!parsed.ok) throw new Error(`test event rejected: ${parsed.detail}`);
  return parsed.event;
}

/** `count` share events numbered by seq from `from`, alternately accepted and rejected. */
function shares(from: number, count: number, user = "tb1qstream"): MiningEvent[] {
  return Array.from({ length: count }, (_, i) =>
    ev("share_submitted", T0 + (from + i) / 1000, {
      user,
      worker: "rig",
      diff: 1,
      sdiff: from + i,
      accepted: (from + i) % 2 === 0,
      reject_reason: (from + i) % 2 === 0 ? "" : "Stale",
    }, { seq: from + i, emitter: "e0" }));
}

function sinkFor(
  url: string,
  options: Partial<PostgresSinkOptions> = {},
  acknowledge?: Acknowledge,
): Sink {
  return createPostgresSink({
    url,
    batchMaxSize: 500,
    flushIntervalMs: 50,
    ...options,
  }, acknowledge);
}

const T0 = Date.UTC(2024, 1, 22, 16) / 1000; // Thursday 2024-02-22 16:00:00 UTC
const SUNDAY = Date.UTC(2024, 1, 25, 23, 59, 59) / 1000; // last second of that ISO week
const MONDAY = Date.UTC(2024, 1, 26) / 1000; // first second of the next one
const ALICE = "tb1qalice0000000000000000000000000000000";
const BOB = `bob "the \\ miner" ü🚀\0`; // NUL is removed on the way in
const BOB_STORED = `bob "the \\ miner" ü🚀`;
const RIG = `rig 'ü' "1" \\ \0end`;
const RIG_STORED = `rig 'ü' "1" \\ end`;

/**
 * A proxy event from BOB's RIG. Validation refuses their NULs, so the event is built past it
 * (a sink must cope with anything it is handed, and strips NUL itself).
 */
function fromBob(event: string, ts: number, data: Record<string, unknown> = {}): MiningEvent {
  const base = ev(event, ts, { user: BOB_STORED, worker: RIG_STORED, ...data }, {
    source: "proxy",
  });
  return unchecked(base, { user: BOB, worker: RIG });
}

/** Nested deeper than PostgreSQL's JSON parser allows (stack depth limit exceeded). */
function tooDeep(): unknown {
  let deep: unknown = 1;
  for (let i = 0; i < 60_000; i++) deep = [deep];
  return deep;
}
const CAROL = "carol-only-in-an-unknown-event";
const HASH = "0000000000000012ab".padEnd(64, "0");

const epoch = (column: string) => `extract(epoch FROM ${column})::float8`;

// --- tests -----------------------------------------------------------------------------------

Deno.test("postgres sink writes every table from a realistic mix of events", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url);
  try {
    const first = [
      ev("miner_connected", T0 + 0.123456, {
        user: ALICE,
        worker: "w1",
        client_id: 1,
        ip: "10.0.0.1",
        useragent: "cgminer/4.12",
        initial_diff: 512,
      }, { seq: 1, emitter: "e1" }),
      ev("share_submitted", T0 + 1, {
        user: ALICE,
        worker: "w1",
        diff: 512,
        sdiff: 1000,
        accepted: true,
        ip: "10.0.0.1",
      }, { seq: 2, emitter: "e1" }),
      ev("share_submitted", T0 + 2, {
        user: ALICE,
        worker: "w1",
        diff: 512,
        sdiff: 300,
        accepted: false,
        reject_reason: "Stale",
      }, { seq: 3, emitter: "e1" }),
      ev("diff_updated", T0 + 3, { user: ALICE, worker: "w1", old_diff: 512, new_diff: 1024 }),
      ev("hashrate_update", T0 + 4, {
        user: ALICE,
        worker: "w1",
        hashrate_1m: 1e12,
        hashrate_5m: 2e12,
        hashrate_1h: 3e12,
        hashrate_1d: 4e12,
      }),
      ev("share_best_diff", T0 + 5, {
        user: ALICE,
        worker: "w1",
        new_best: 1000,
        prev_best: 10,
        timeframe: "week",
      }),
      ev("block_found", T0 + 6, {
        user: ALICE,
        worker: "w1",
        height: 812_345,
        hash: HASH,
        diff: 2e6,
        network_diff: 1.5e6,
        reward_sats: 312_500_000,
        coinbase_sig: "/TBG/",
      }),
      ev("block_found", T0 + 7, { user: ALICE, worker: "w1", height: 812_345, hash: HASH }),
      ev("new_block_network", T0 + 8, {
        height: 812_346,
        hash: "00cd",
        diff: 1.5e6,
        prev_hash: HASH,
      }),
      fromBob("miner_connected", T0 + 9, { ip: "2001:db8::1" }),
      fromBob("share_submitted", T0 + 10, { diff: 1, sdiff: 50, accepted: true }),
      fromBob("miner_disconnected", T0 + 11, { session_duration: 2, shares_session: 1 }),
      // Out of order: the disconnect is later in time, so w3 ends offline.
      ev("miner_disconnected", T0 + 31, { user: ALICE, worker: "w3" }),
      ev("miner_connected", T0 + 30, { user: ALICE, worker: "w3" }),
      // Past validation too: a NUL in a value and in a key, and a lone surrogate.
      unchecked(ev("future_thing", T0 + 12, { user: CAROL }, { source: "self-hosted" }), {
        note: "x\0y",
        nested: { "k\0": ["\uD800", 'q"\\'] },
      }),
      ev("share_submitted", SUNDAY, { user: ALICE, worker: "w1", sdiff: 5000, accepted: true }),
      ev("share_submitted", MONDAY, { user: ALICE, worker: "w1", sdiff: 7, accepted: true }),
    ];
    pushEvents(sink, first);
    await sink.flush(AbortSignal.timeout(10_000));
    assert.deepEqual(counts(sink), { written: first.length, retried: 0, pending: 0, dropped: 0 });

    // mining_events: every event, payload = data (NUL removed, lone surrogate replaced).
    const byType = await sql`
      SELECT event_type, count(*)::int AS n FROM mining_events GROUP BY 1 ORDER BY 1`;
    assert.deepEqual(Object.fromEntries(byType.map((r) => [r.event_type, r.n])), {
      block_found: 2,
      diff_updated: 1,
      future_thing: 1,
      hashrate_update: 1,
      miner_connected: 3,
      miner_disconnected: 2,
      new_block_network: 1,
      share_best_diff: 1,
      share_submitted: 5,
    });
    const [connected] = await sql`
      SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS ts, source, emitter,
             seq::int, payload
      FROM mining_events WHERE seq = 1`;
    assert.deepEqual({ ...connected }, {
      ts: "2024-02-22 16:00:00.123456",
      source: "hosted",
      emitter: "e1",
      seq: 1,
      payload: {
        user: ALICE,
        worker: "w1",
        client_id: 1,
        ip: "10.0.0.1",
        useragent: "cgminer/4.12",
        initial_diff: 512,
      },
    });
    const [unknown] = await sql`
      SELECT source, emitter, seq, payload FROM mining_events WHERE event_type = 'future_thing'`;
    assert.deepEqual({ ...unknown }, {
      source: "self-hosted",
      emitter: null,
      seq: null,
      payload: { user: CAROL, note: "xy", nested: { k: ["\uFFFD", 'q"\\'] } },
    });

    // shares: accepted and rejected, with reason.
    const shareRows = await sql`
      SELECT ${sql.unsafe(epoch("time"))} AS t, btc_address, worker_name, difficulty, share_diff,
             is_valid, is_block, reject_reason, ip_address, source, emitter, seq::int
      FROM shares ORDER BY time`;
    assert.deepEqual(shareRows.map((r) => ({ ...r })), [
      {
        t: T0 + 1,
        btc_address: ALICE,
        worker_name: "w1",
        difficulty: 512,
        share_diff: 1000,
        is_valid: true,
        is_block: false,
        reject_reason: null,
        ip_address: "10.0.0.1",
        source: "hosted",
        emitter: "e1",
        seq: 2,
      },
      {
        t: T0 + 2,
        btc_address: ALICE,
        worker_name: "w1",
        difficulty: 512,
        share_diff: 300,
        is_valid: false,
        is_block: false,
        reject_reason: "Stale",
        ip_address: null,
        source: "hosted",
        emitter: "e1",
        seq: 3,
      },
      {
        t: T0 + 10,
        btc_address: BOB_STORED,
        worker_name: RIG_STORED,
        difficulty: 1,
        share_diff: 50,
        is_valid: true,
        is_block: false,
        reject_reason: null,
        ip_address: null,
        source: "proxy",
        emitter: null,
        seq: null,
      },
      {
        t: SUNDAY,
        btc_address: ALICE,
        worker_name: "w1",
        difficulty: 0,
        share_diff: 5000,
        is_valid: true,
        is_block: false,
        reject_reason: null,
        ip_address: null,
        source: "hosted",
        emitter: null,
        seq: null,
      },
      {
        t: MONDAY,
        btc_address: ALICE,
        worker_name: "w1",
        difficulty: 0,
        share_diff: 7,
        is_valid: true,
        is_block: false,
        reject_reason: null,
        ip_address: null,
        source: "hosted",
        emitter: null,
        seq: null,
      },
    ]);

    // users: created on first sight (the seed user was there already), last_seen = max ts.
    const userRows = async () =>
      Object.fromEntries(
        (await sql`SELECT btc_address, ${sql.unsafe(epoch("last_seen"))} AS seen FROM users`)
          .map((r) => [r.btc_address, r.seen]),
      );
    assert.deepEqual(await userRows(), {
      "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx": null,
      [ALICE]: MONDAY,
      [BOB_STORED]: T0 + 11,
      [CAROL]: T0 + 12,
    });

    const workerRows = async () =>
      Object.fromEntries(
        (await sql`
          SELECT u.btc_address || '/' || w.worker_name AS key, w.is_online, w.current_diff,
                 w.hashrate_1m, w.hashrate_5m, w.hashrate_1h, w.hashrate_24h, w.ip_address,
                 w.useragent, w.source, ${sql.unsafe(epoch("w.connected_at"))} AS connected,
                 ${sql.unsafe(epoch("w.disconnected_at"))} AS disconnected,
                 ${sql.unsafe(epoch("w.last_share_at"))} AS last_share,
                 ${sql.unsafe(epoch("w.last_seen"))} AS seen,
                 w.shares_accepted::int AS accepted, w.shares_rejected::int AS rejected
          FROM workers w JOIN users u ON u.id = w.user_id`).map((r) => {
          const { key, ...rest } = r;
          return [key, rest];
        }),
      );
    assert.deepEqual(await workerRows(), {
      [`${ALICE}/w1`]: {
        is_online: true,
        current_diff: 1024,
        hashrate_1m: 1e12,
        hashrate_5m: 2e12,
        hashrate_1h: 3e12,
        hashrate_24h: 4e12,
        ip_address: "10.0.0.1",
        useragent: "cgminer/4.12",
        source: "hosted",
        connected: T0 + 0.123456,
        disconnected: null,
        last_share: MONDAY,
        seen: MONDAY,
        accepted: 3,
        rejected: 1,
      },
      [`${ALICE}/w3`]: {
        is_online: false,
        current_diff: 0,
        hashrate_1m: 0,
        hashrate_5m: 0,
        hashrate_1h: 0,
        hashrate_24h: 0,
        ip_address: null,
        useragent: null,
        source: "hosted",
        connected: T0 + 30,
        disconnected: T0 + 31,
        last_share: null,
        seen: T0 + 31,
        accepted: 0,
        rejected: 0,
      },
      [`${BOB_STORED}/${RIG_STORED}`]: {
        is_online: false,
        current_diff: 0,
        hashrate_1m: 0,
        hashrate_5m: 0,
        hashrate_1h: 0,
        hashrate_24h: 0,
        ip_address: "2001:db8::1",
        useragent: null,
        source: "proxy",
        connected: T0 + 9,
        disconnected: T0 + 11,
        last_share: T0 + 10,
        seen: T0 + 11,
        accepted: 1,
        rejected: 0,
      },
    });

    const blockRows = async () =>
      (await sql`
        SELECT b.block_height::int AS height, b.block_hash, u.btc_address AS user_address,
               b.btc_address, b.worker_name, b.reward_sats::int AS reward, b.difficulty,
               b.network_difficulty, b.confirmed, b.coinbase_sig, b.source,
               ${sql.unsafe(epoch("b.found_at"))} AS found
        FROM blocks b LEFT JOIN users u ON u.id = b.user_id`).map((r) => ({ ...r }));
    const expectedBlock = {
      height: 812_345,
      block_hash: HASH,
      user_address: ALICE,
      btc_address: ALICE,
      worker_name: "w1",
      reward: 312_500_000,
      difficulty: 2e6,
      network_difficulty: 1.5e6,
      confirmed: false,
      coinbase_sig: "/TBG/",
      source: "hosted",
      found: T0 + 6,
    };
    assert.deepEqual(await blockRows(), [expectedBlock]);

    const weeklyRows = async () =>
      (await sql`
        SELECT btc_address, to_char(week_start, 'YYYY-MM-DD') AS week, best_difficulty,
               ${sql.unsafe(epoch("best_share_at"))} AS best_at, total_shares::int AS n
        FROM weekly_best_diff ORDER BY btc_address, week_start`).map((r) => ({ ...r }));
    assert.deepEqual(await weeklyRows(), [
      { btc_address: BOB_STORED, week: "2024-02-19", best_difficulty: 50, best_at: T0 + 10, n: 1 },
      { btc_address: ALICE, week: "2024-02-19", best_difficulty: 5000, best_at: SUNDAY, n: 2 },
      { btc_address: ALICE, week: "2024-02-26", best_difficulty: 7, best_at: MONDAY, n: 1 },
    ]);

    // Second batch: merges with what is stored.
    pushEvents(sink, [
      ev("miner_disconnected", MONDAY + 100, { user: ALICE, worker: "w1" }),
      ev("share_submitted", MONDAY + 50, { user: ALICE, worker: "w1", sdiff: 9, accepted: true }),
      fromBob("miner_connected", T0 + 200, { useragent: "bitaxe" }),
      ev("block_found", MONDAY, { user: ALICE, height: 812_345, hash: HASH, coinbase_sig: "x" }),
    ]);
    await sink.flush(AbortSignal.timeout(10_000));
    // Third batch: older than what is stored, so state and hashrates stay.
    pushEvents(sink, [
      ev("share_submitted", MONDAY + 60, { user: ALICE, worker: "w1", sdiff: 1, accepted: true }),
      ev("hashrate_update", T0 + 1, { user: ALICE, worker: "w1", hashrate_1m: 5 }),
    ]);
    await sink.flush(AbortSignal.timeout(10_000));

    const workers = await workerRows();
    assert.equal(workers[`${ALICE}/w1`].is_online, false);
    assert.equal(workers[`${ALICE}/w1`].disconnected, MONDAY + 100);
    assert.equal(workers[`${ALICE}/w1`].last_share, MONDAY + 60);
    assert.equal(workers[`${ALICE}/w1`].accepted, 5);
    assert.equal(workers[`${ALICE}/w1`].hashrate_1m, 1e12);
    assert.equal(workers[`${ALICE}/w1`].seen, MONDAY + 100);
    assert.equal(workers[`${BOB_STORED}/${RIG_STORED}`].is_online, true);
    assert.equal(workers[`${BOB_STORED}/${RIG_STORED}`].connected, T0 + 200);
    assert.equal(workers[`${BOB_STORED}/${RIG_STORED}`].useragent, "bitaxe");
    assert.equal((await userRows())[ALICE], MONDAY + 100);
    assert.deepEqual(await blockRows(), [expectedBlock]);
    assert.deepEqual((await weeklyRows())[2], {
      btc_address: ALICE,
      week: "2024-02-26",
      best_difficulty: 9,
      best_at: MONDAY + 50,
      n: 3,
    });
    const [{ events }] = await sql`SELECT count(*)::int AS events FROM mining_events`;
    assert.equal(events, first.length + 6);
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink writes once batchMaxSize events wait, in one transaction", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url, { batchMaxSize: 100, flushIntervalMs: 600_000 });
  try {
    pushEvents(sink, shares(0, 99));
    pushEvents(sink, shares(99, 1)); // the 100th event starts the write
    await waitFor(async () => {
      const [{ n }] = await sql`SELECT count(*)::int AS n FROM mining_events`;
      return n === 100;
    }, { what: "100 events written" });
    // xmin names the writing transaction: all 100 rows came in one.
    const [{ transactions }] = await sql`
      SELECT count(DISTINCT xmin::text)::int AS transactions FROM mining_events`;
    assert.equal(transactions, 1);
    assert.equal(sink.stats().written, 100);

    pushEvents(sink, shares(100, 30)); // below the size, and the interval is ten minutes
    assert.equal(sink.stats().pending, 30);
    await sink.flush(AbortSignal.timeout(10_000)); // flush does not wait for the timer
    assert.deepEqual(counts(sink), { written: 130, retried: 0, pending: 0, dropped: 0 });
    const [{ n, seqs }] = await sql`
      SELECT count(*)::int AS n, count(DISTINCT seq)::int AS seqs FROM shares`;
    assert.deepEqual([n, seqs], [130, 130]);
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink encodes the next batch while the database works on the one before", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url, { batchMaxSize: 100, maxWriteEvents: 100 });
  // Holds every COPY into mining_events until released: the first batch waits in the server.
  const locker = postgres(service.url, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => locked = resolve);
  const holding = locker.begin(async (tx) => {
    await tx`LOCK TABLE mining_events IN ACCESS EXCLUSIVE MODE`;
    locked();
    await released;
  });
  try {
    await isLocked;
    // The second batch's events record when the encoder reads their data.
    let readsOfSecond = 0;
    const second = shares(100, 100).map((event) => ({
      ...event,
      get data() {
        readsOfSecond++;
        return event.data;
      },
    }));
    pushEvents(sink, shares(0, 100));
    pushEvents(sink, second);
    await waitFor(async () => {
      const [{ n }] = await sql`
        SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = 'mining_events'::regclass`;
      return n > 0;
    }, { what: "the first batch waiting for the lock" });
    await waitFor(() => readsOfSecond >= 100, { what: "the second batch encoded meanwhile" });
    assert.equal(sink.stats().written, 0, "the first batch is still in the database");
    release();
    await holding;
    await sink.flush(AbortSignal.timeout(20_000));
    assert.deepEqual(counts(sink), { written: 200, retried: 0, pending: 0, dropped: 0 });
    const [{ n, transactions }] = await sql`
      SELECT count(*)::int AS n, count(DISTINCT xmin::text)::int AS transactions FROM shares`;
    assert.deepEqual([n, transactions], [200, 2]);
  } finally {
    release();
    await holding.catch(() => {});
    await locker.end();
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink writes flushIntervalMs after the first waiting event", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url, { batchMaxSize: 10_000, flushIntervalMs: 150 });
  try {
    const pushedAt = Date.now();
    pushEvents(sink, shares(0, 5));
    pushEvents(sink, shares(5, 5));
    await waitFor(async () => {
      const [{ n }] = await sql`SELECT count(*)::int AS n FROM mining_events`;
      return n === 10;
    }, { what: "10 events written by the timer" });
    assert.ok(Date.now() - pushedAt >= 140, "written before the interval elapsed");
    const [{ transactions }] = await sql`
      SELECT count(DISTINCT xmin::text)::int AS transactions FROM mining_events`;
    assert.equal(transactions, 1);
    assert.deepEqual(counts(sink), { written: 10, retried: 0, pending: 0, dropped: 0 });
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink survives a server crash: every event written exactly once", async () => {
  const { service, sql } = await startDatabase();
  // Acknowledged commits must survive SIGKILL; the test server runs with
  // synchronous_commit=off, so this session turns it back on (the PostgreSQL default).
  const sink = sinkFor(`${service.url}?synchronous_commit=on`, {
    batchMaxSize: 100,
    flushIntervalMs: 20,
  });
  const total = 3000;
  let next = 0;
  const pushSome = async (count: number) => {
    const end = next + count;
    while (next < end) {
      pushEvents(sink, shares(next, 20));
      next += 20;
      await new Promise((resolve) => setTimeout(resolve, 2)); // a steady stream, not a burst
    }
  };
  try {
    await pushSome(1000);
    await waitFor(() => sink.stats().written >= 500, { what: "writes before the crash" });
    await crashPostgres(service);
    await pushSome(1000);
    await waitFor(() => sink.stats().retried > 0, { what: "a failed write" });
    assert.equal(sink.stats().up, false, "down while its writes fail");
    await service.start();
    await pushSome(1000);
    await sink.flush(AbortSignal.timeout(60_000));

    const stats = sink.stats();
    assert.equal(stats.pending, 0);
    assert.equal(stats.written, total);
    assert.equal(stats.dropped, 0);
    assert.ok(stats.retried > 0);
    assert.equal(stats.up, true, "up again after a write succeeded");
    assert.ok(stats.writeLatency.count > 0 && stats.writeLatency.sum > 0);
    const [events] = await sql`
      SELECT count(*)::int AS n, count(DISTINCT seq)::int AS distinct_seq,
             min(seq)::int AS lo, max(seq)::int AS hi FROM mining_events`;
    assert.deepEqual({ ...events }, { n: total, distinct_seq: total, lo: 0, hi: total - 1 });
    const [{ n: shareRows }] = await sql`SELECT count(*)::int AS n FROM shares`;
    assert.equal(shareRows, total);
    // Counters that are added up would show a batch applied twice.
    const [worker] = await sql`
      SELECT shares_accepted::int AS accepted, shares_rejected::int AS rejected FROM workers`;
    assert.deepEqual({ ...worker }, { accepted: total / 2, rejected: total / 2 });
    const [{ weekly }] = await sql`SELECT sum(total_shares)::int AS weekly FROM weekly_best_diff`;
    assert.equal(weekly, total / 2);
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

/** Makes COMMIT of a transaction holding a `slow_commit` event take a second. */
async function slowCommits(sql: postgres.Sql): Promise<void> {
  await sql`
    CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.payload ? 'slow_commit' THEN PERFORM pg_sleep(1); END IF;
      RETURN NULL;
    END $$`;
  await sql`
    CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON mining_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()`;
}

/**
 * Pushes ten shares and an event whose transaction commits slowly ({@link slowCommits}), and
 * starts a flush of them.
 */
function pushSlowCommit(sink: Sink): { batch: MiningEvent[]; flushed: Promise<void> } {
  const batch = [
    ...shares(0, 10),
    ev("future_thing", T0, { slow_commit: true }, { seq: 10, emitter: "e0" }),
  ];
  pushEvents(sink, batch);
  return { batch, flushed: sink.flush(AbortSignal.timeout(30_000)) };
}

/** The pid of the sink's backend while it sits in the slow COMMIT. */
function backendInCommit(sql: postgres.Sql): Promise<number> {
  return waitFor(async () => {
    const rows = await sql`
      SELECT pid FROM pg_stat_activity
      WHERE application_name = 'tbg-collector' AND wait_event = 'PgSleep'`;
    return rows.length === 1 ? rows[0].pid as number : undefined;
  }, { what: "the sink's COMMIT to be running" });
}

Deno.test("postgres sink: a commit whose reply was lost is not written again", async () => {
  const { service, sql } = await startDatabase();
  await slowCommits(sql);
  const proxy = new CuttableProxy(service.port);
  const sink = sinkFor(`postgres://postgres@127.0.0.1:${proxy.port}/tbg`);
  try {
    const { batch, flushed } = pushSlowCommit(sink);
    await backendInCommit(sql);
    proxy.cut(); // the server finishes the commit; its reply is lost
    await flushed;

    assert.equal(sink.stats().pending, 0);
    assert.equal(sink.stats().written, batch.length);
    assert.ok(sink.stats().retried >= 1);
    const [events] = await sql`
      SELECT count(*)::int AS n, count(DISTINCT seq)::int AS distinct_seq FROM mining_events`;
    assert.deepEqual({ ...events }, { n: batch.length, distinct_seq: batch.length });
    const [{ n: shareRows }] = await sql`SELECT count(*)::int AS n FROM shares`;
    assert.equal(shareRows, 10);
  } finally {
    await sink.close();
    await proxy.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: a commit the restarted server knows nothing of is written again", async () => {
  // After a crash a server can come back without the transaction that was committing (it never
  // reached the log), and then answers that its id is "in the future". Here the server that
  // comes back is a fresh one behind the same address, with fewer transactions behind it.
  const first = await startDatabase();
  await slowCommits(first.sql);
  for (let i = 0; i < 300; i++) await first.sql`SELECT pg_current_xact_id()`;
  const second = await startDatabase();
  const proxy = new CuttableProxy(first.service.port);
  const sink = sinkFor(`postgres://postgres@127.0.0.1:${proxy.port}/tbg`);
  try {
    const { batch, flushed } = pushSlowCommit(sink);
    await backendInCommit(first.sql);
    proxy.retarget(second.service.port);
    proxy.cut(); // the outcome is unknown; the server asked next has never seen the id
    await flushed;

    assert.deepEqual(
      { pending: sink.stats().pending, written: sink.stats().written },
      { pending: 0, written: batch.length },
      "written again to the server that came back",
    );
    const [events] = await second.sql`
      SELECT count(*)::int AS n, count(DISTINCT seq)::int AS distinct_seq FROM mining_events`;
    assert.deepEqual({ ...events }, { n: batch.length, distinct_seq: batch.length });
  } finally {
    await sink.close();
    await proxy.close();
    await Promise.all([first.sql.end(), second.sql.end()]);
    await Promise.all([stopPostgres(first.service), stopPostgres(second.service)]);
  }
});

Deno.test("postgres sink: a commit that died with its connection is written again", async () => {
  const { service, sql } = await startDatabase();
  await slowCommits(sql);
  const sink = sinkFor(service.url);
  try {
    const { batch, flushed } = pushSlowCommit(sink);
    const pid = await backendInCommit(sql);
    await sql`SELECT pg_terminate_backend(${pid})`; // the transaction is rolled back
    await flushed;

    assert.equal(sink.stats().written, batch.length);
    assert.ok(sink.stats().retried >= 1);
    const [events] = await sql`
      SELECT count(*)::int AS n, count(DISTINCT seq)::int AS distinct_seq FROM mining_events`;
    assert.deepEqual({ ...events }, { n: batch.length, distinct_seq: batch.length });
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink drops only the event the database refuses", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url);
  try {
    // Past validation, which refuses nesting this deep: the sink guards its own backend.
    const poison = unchecked(ev("future_thing", T0, {}, { seq: 20, emitter: "e0" }), {
      deep: tooDeep(),
    });
    const batch = [...shares(0, 20), poison, ...shares(21, 20)];
    pushEvents(sink, batch);
    await sink.flush(AbortSignal.timeout(30_000));

    assert.deepEqual(counts(sink), { written: 40, retried: 0, pending: 0, dropped: 1 });
    assert.equal(sink.stats().up, true, "a refused event is not an unreachable database");
    const [events] = await sql`
      SELECT count(*)::int AS n, count(*) FILTER (WHERE seq = 20)::int AS bad FROM mining_events`;
    assert.deepEqual({ ...events }, { n: 40, bad: 0 });

    // The sink carries on normally afterwards.
    pushEvents(sink, shares(41, 5));
    await sink.flush(AbortSignal.timeout(10_000));
    assert.equal(sink.stats().written, 45);
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink acknowledges each push's end once its events are committed or refused", async () => {
  const { service, sql } = await startDatabase();
  const acks: number[] = [];
  const sink = sinkFor(service.url, { batchMaxSize: 10_000 }, (position) => acks.push(position));
  try {
    const poison = unchecked(ev("future_thing", T0, {}, { seq: 10, emitter: "e0" }), {
      deep: tooDeep(),
    });
    sink.push(shares(0, 10), 10);
    sink.push([], 12); // two records that were not events
    sink.push([poison], 13);
    sink.push(shares(11, 5), 18);
    sink.push([{ ...ev("share_submitted", 1, { user: "u" }), ts: 1e12 }], 19); // ts refused
    assert.deepEqual(acks, [], "nothing is acknowledged before its commit");
    await sink.flush(AbortSignal.timeout(30_000));

    assert.equal(acks.at(-1), 19, "past the refused event and the unstorable ts");
    assert.ok(acks.every((position, i) => i === 0 || position > acks[i - 1]), `${acks}`);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM mining_events`;
    assert.equal(n, 15);
    assert.deepEqual(counts(sink), { written: 15, retried: 0, pending: 0, dropped: 2 });
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: COPY stores exactly what to_timestamp and jsonb would", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url, { batchMaxSize: 10_000 });
  try {
    const tricky = 'tab\tnl\ncr\rbs\\ \\N \\. quote" ü🚀 \u2028';
    const times = [1e-6, 0.5, MAX_TS, MAX_TS - 0.5, 946_684_800 + 2 ** -7, 946_684_800 - 2 ** -7];
    for (let i = 0; i < 300; i++) times.push(Math.random() * MAX_TS, T0 + Math.random());
    const events = times.map((ts, i) =>
      ev(i % 2 === 0 ? "share_submitted" : "future_thing", ts, {
        user: `${tricky}${i % 3}`,
        worker: tricky,
        reject_reason: i % 4 === 1 ? "" : tricky,
        ip: tricky,
        accepted: i % 4 === 0,
        sdiff: i / 3,
        t: ts,
        [tricky]: [tricky, { n: 1e300, m: -0.5, z: null }],
      }, { seq: i, emitter: "ab" })
    );
    pushEvents(sink, events);
    await sink.flush(AbortSignal.timeout(30_000));
    assert.deepEqual(counts(sink), { written: times.length, retried: 0, pending: 0, dropped: 0 });

    const stored = await sql<{ seq: number; exact: boolean; payload: boolean }[]>`
      SELECT e.seq::int AS seq, e.ts = to_timestamp((x.p->>'t')::float8) AS exact,
        e.payload = x.p AS payload
      FROM mining_events e
      JOIN jsonb_array_elements(${JSON.stringify(events.map((e) => e.data))}::text::jsonb)
        WITH ORDINALITY AS x(p, n) ON x.n - 1 = e.seq
      ORDER BY e.seq`;
    assert.equal(stored.length, times.length);
    for (const row of stored) {
      assert.deepEqual({ ...row }, { seq: row.seq, exact: true, payload: true });
    }

    const share = await sql`
      SELECT btc_address, worker_name, reject_reason, ip_address, source, emitter, is_valid,
        time = to_timestamp(${times[4]}) AS exact
      FROM shares WHERE seq = 4`;
    assert.deepEqual({ ...share[0] }, {
      btc_address: `${tricky}1`,
      worker_name: tricky,
      reject_reason: tricky,
      ip_address: tricky,
      source: "hosted",
      emitter: "ab",
      is_valid: true,
      exact: true,
    });
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM shares`;
    assert.equal(n, Math.ceil(times.length / 2));
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink drops a refused event at the end of a COPY and carries on", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url);
  try {
    const deep = tooDeep();
    // Alone, last and first: the server's error comes after the end of the copy data.
    for (const batch of [[0], [1, 2, 3], [4, 5]]) {
      const last = batch.at(-1)!;
      pushEvents(
        sink,
        batch.map((seq) =>
          seq === last || seq === 4
            ? unchecked(ev("future_thing", T0, {}, { seq, emitter: "e0" }), { deep })
            : shares(seq, 1)[0]
        ),
      );
      await sink.flush(AbortSignal.timeout(30_000));
    }
    assert.deepEqual(counts(sink), { written: 2, retried: 0, pending: 0, dropped: 4 });
    pushEvents(sink, shares(10, 3));
    await sink.flush(AbortSignal.timeout(10_000));
    assert.equal(sink.stats().written, 5);
    const [{ n, s }] = await sql`
      SELECT count(*)::int AS n, (SELECT count(*)::int FROM shares) AS s FROM mining_events`;
    assert.deepEqual([n, s], [5, 5]);
    const [{ stuck }] = await sql`
      SELECT count(*)::int AS stuck FROM pg_stat_activity
      WHERE application_name = 'tbg-collector' AND state LIKE 'idle in transaction%'`;
    assert.equal(stuck, 0);
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink keeps everything while the database is down, refusing only bad ts", async () => {
  // Nothing listens on this port: the database is down for the whole test.
  const acks: number[] = [];
  const sink = sinkFor(
    `postgres://postgres@127.0.0.1:${freePort()}/tbg`,
    { batchMaxSize: 5 },
    (position) => acks.push(position),
  );
  try {
    // Past the old per-sink bound (1,000,000 events): bounding memory is the delivery layer's
    // job now. The same events are pushed again and again; the sink only holds references.
    const chunk = shares(0, 100_000);
    for (let i = 0; i < 11; i++) pushEvents(sink, chunk);
    // An event whose ts PostgreSQL cannot store (the contract refuses it too, but a sink guards
    // its own backend) is refused, not queued.
    pushEvents(sink, [{ ...ev("share_submitted", 1, { user: "u" }), ts: 1e12 }]);
    assert.deepEqual({ ...counts(sink), retried: 0 }, {
      written: 0,
      retried: 0,
      pending: 1_100_000,
      dropped: 1,
    });
    await waitFor(() => sink.stats().retried >= 2, { what: "retries against a dead server" });
    assert.equal(sink.stats().pending, 1_100_000);
    assert.deepEqual(acks, [], "nothing acknowledged that no database took");
  } finally {
    await sink.close();
  }
});

Deno.test("postgres sink flush returns when its signal aborts while the database is down", async () => {
  const sink = sinkFor(`postgres://postgres@127.0.0.1:${freePort()}/tbg`);
  try {
    pushEvents(sink, shares(0, 3));
    const started = Date.now();
    await sink.flush(AbortSignal.timeout(300));
    assert.ok(Date.now() - started < 5_000);
    assert.equal(sink.stats().pending, 3);
    assert.equal(sink.stats().written, 0);
    // An already aborted signal returns at once.
    await sink.flush(AbortSignal.abort());
    assert.equal(sink.stats().pending, 3);
  } finally {
    await sink.close();
  }
});

// --- idempotence on the event id ---------------------------------------------------------------

/** Rows, distinct ids and the counters derived from shares, to show nothing was doubled. */
async function tally(sql: postgres.Sql) {
  const [row] = await sql`
    SELECT
      (SELECT count(*) FROM mining_events)::int AS events,
      (SELECT count(DISTINCT event_id) FROM mining_events)::int AS event_ids,
      (SELECT count(*) FROM shares)::int AS shares,
      (SELECT count(DISTINCT event_id) FROM shares)::int AS share_ids,
      (SELECT coalesce(sum(shares_accepted), 0) FROM workers)::int AS accepted,
      (SELECT coalesce(sum(shares_rejected), 0) FROM workers)::int AS rejected,
      (SELECT coalesce(sum(total_shares), 0) FROM weekly_best_diff)::int AS weekly,
      (SELECT count(*) FROM blocks)::int AS blocks`;
  return { ...row };
}

/** Events without seq: identified by the hash of their content. */
function unnumbered(): MiningEvent[] {
  return [
    ev("miner_connected", T0 + 0.5, { user: ALICE, worker: "w1", initial_diff: 8 }),
    ev("share_submitted", T0 + 0.6, { user: ALICE, worker: "w1", sdiff: 9, accepted: true }),
    ev("share_submitted", T0 + 0.7, { user: ALICE, worker: "w1", sdiff: 1, accepted: false }),
    ev("block_found", T0 + 0.8, { user: ALICE, worker: "w1", height: 7, hash: "07".repeat(32) }),
  ];
}

Deno.test("postgres sink: the same batch pushed twice is stored once, counters too", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url);
  try {
    const batch = [...shares(1, 100), ...unnumbered()];
    assert.match(batch[100].id, /^sha256:[0-9a-f]{32}$/);
    pushEvents(sink, batch);
    await sink.flush(AbortSignal.timeout(10_000));
    const once = await tally(sql);
    assert.deepEqual(once, {
      events: 104,
      event_ids: 104,
      shares: 102,
      share_ids: 102,
      accepted: 51, // even seqs 2..100, and one unnumbered
      rejected: 51,
      weekly: 51,
      blocks: 1,
    });
    const stored = await sql<{ event_id: string }[]>`SELECT event_id FROM mining_events`;
    assert.deepEqual(stored.map((r) => r.event_id).sort(), batch.map((e) => e.id).sort());

    pushEvents(sink, batch);
    await sink.flush(AbortSignal.timeout(10_000));
    assert.deepEqual(await tally(sql), once);
    // Repeats count as written: the database holds them, and nothing is pending or dropped.
    assert.deepEqual(counts(sink), { written: 208, retried: 0, pending: 0, dropped: 0 });
    const [{ idle }] = await sql`
      SELECT count(*)::int AS idle FROM pg_stat_activity
      WHERE application_name = 'tbg-collector' AND state LIKE 'idle in transaction%'`;
    assert.equal(idle, 0);

    // And the sink carries on with new events as before.
    pushEvents(sink, shares(101, 10));
    await sink.flush(AbortSignal.timeout(10_000));
    const after = await tally(sql);
    assert.equal(after.events, 114);
    assert.equal(after.accepted + after.rejected, 112);
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: an overlapping replay (1..100, then 50..150) stores 150 once", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url, { batchMaxSize: 30 }); // several batches each time
  try {
    pushEvents(sink, shares(1, 100));
    await sink.flush(AbortSignal.timeout(10_000));
    pushEvents(sink, shares(50, 101));
    await sink.flush(AbortSignal.timeout(10_000));
    assert.deepEqual(await tally(sql), {
      events: 150,
      event_ids: 150,
      shares: 150,
      share_ids: 150,
      accepted: 75,
      rejected: 75,
      weekly: 75,
      blocks: 0,
    });
    const [seqs] = await sql`
      SELECT min(seq)::int AS lo, max(seq)::int AS hi, count(DISTINCT seq)::int AS n FROM shares`;
    assert.deepEqual({ ...seqs }, { lo: 1, hi: 150, n: 150 });
    assert.deepEqual(counts(sink), { written: 201, retried: 0, pending: 0, dropped: 0 });
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: an id repeated inside one batch is written once", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url, { batchMaxSize: 10_000 });
  try {
    const extra = unnumbered();
    // One push, so one batch: 1..20, then 11..30 again (overlap 11..20), and the unnumbered
    // events twice, the second time as copies decoded anew.
    const batch = [
      ...shares(1, 20),
      ...extra,
      ...shares(11, 20),
      ...extra.map((e) => ({ ...e, data: { ...e.data } })),
    ];
    pushEvents(sink, batch);
    await sink.flush(AbortSignal.timeout(10_000));
    assert.deepEqual(await tally(sql), {
      events: 34,
      event_ids: 34,
      shares: 32,
      share_ids: 32,
      accepted: 16,
      rejected: 16,
      weekly: 16,
      blocks: 1,
    });
    const [{ transactions }] = await sql`
      SELECT count(DISTINCT xmin::text)::int AS transactions FROM mining_events`;
    assert.equal(transactions, 1);
    assert.deepEqual(counts(sink), { written: batch.length, retried: 0, pending: 0, dropped: 0 });
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: a share whose mining_events row is gone is still not counted again", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url);
  try {
    pushEvents(sink, shares(1, 10));
    await sink.flush(AbortSignal.timeout(10_000));
    // mining_events keeps rows for less time than shares (retention 30 d against 90 d).
    await sql`DELETE FROM mining_events`;
    pushEvents(sink, [...shares(1, 10), ...shares(11, 4)]);
    await sink.flush(AbortSignal.timeout(10_000));
    const after = await tally(sql);
    assert.deepEqual(
      { shares: after.shares, events: after.events, counted: after.accepted + after.rejected },
      { shares: 14, events: 4, counted: 14 },
    );
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: a replay with a refused event drops that event alone", async () => {
  const { service, sql } = await startDatabase();
  const sink = sinkFor(service.url);
  try {
    pushEvents(sink, shares(0, 20));
    await sink.flush(AbortSignal.timeout(10_000));
    // Built past the contract, which refuses it too, since the sink guards its own backend.
    const poison = unchecked(ev("future_thing", T0, {}, { seq: 20, emitter: "e0" }), {
      deep: tooDeep(),
    });
    pushEvents(sink, [...shares(0, 20), poison, ...shares(21, 10)]);
    await sink.flush(AbortSignal.timeout(30_000));
    assert.deepEqual(counts(sink), { written: 50, retried: 0, pending: 0, dropped: 1 });
    const after = await tally(sql);
    assert.deepEqual(
      { events: after.events, shares: after.shares, counted: after.accepted + after.rejected },
      { events: 30, shares: 30, counted: 30 },
    );
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("postgres sink: a batch's updates of users and workers stay on their pages (HOT)", async () => {
  const { service, sql } = await startDatabase();
  const users = 300;
  const workersPerUser = 10;
  const round = (at: number) =>
    Array.from({ length: users * workersPerUser }, (_, i) =>
      ev("share_submitted", at + i / 1000, {
        user: `tb1quser${Math.floor(i / workersPerUser)}`,
        worker: `rig${i % workersPerUser}`,
        diff: 1,
        sdiff: 2,
        accepted: true,
      }));
  const sink = sinkFor(service.url, { batchMaxSize: 100_000, flushIntervalMs: 600_000 });
  try {
    pushEvents(sink, round(T0));
    await sink.flush(AbortSignal.timeout(20_000));
    pushEvents(sink, round(T0 + 10)); // every user and worker once more
    await sink.flush(AbortSignal.timeout(20_000));
    await sink.close(); // its server process ends, and reports its counters as it does
    const stats = await tableUpdates(sql, ["users", "workers"]);
    console.log(`HOT updates: ${JSON.stringify(stats)}`);
    assert.deepEqual(stats.map((row) => [row.relname, row.updated]), [
      ["users", users],
      ["workers", users * workersPerUser],
    ]);
    for (const row of stats) {
      assert.ok(row.hot >= 0.9 * row.updated, `${row.relname}: ${row.hot} of ${row.updated} HOT`);
    }
  } finally {
    await sink.close();
    await sql.end();
    await stopPostgres(service);
  }
});
