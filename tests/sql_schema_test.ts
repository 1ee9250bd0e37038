import assert from "node:assert/strict";
import postgres from "postgres";
import { hasTimescaledb, psqlPath, type Service, startPostgres } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const INIT_SQL = new URL("../sql/init.sql", import.meta.url).pathname;
const SEED = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";

/** Loads init.sql the way docker-entrypoint-initdb.d does (psql, ON_ERROR_STOP, no psqlrc). */
async function loadInitSql(url: string): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(psqlPath(), {
    args: ["--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-f", INIT_SQL, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/**
 * Stops the server for good. As root the harness starts postgres under `runuser`, which
 * forks: signalling the child handle alone would leave the postmaster running, so the
 * postmaster named in postmaster.pid is shut down first (runuser reaps it).
 */
async function stopPostgres(service: Service): Promise<void> {
  let pid: number | undefined;
  try {
    pid = Number((await Deno.readTextFile(`${service.dir}/data/postmaster.pid`)).split("\n")[0]);
    Deno.kill(pid, "SIGINT"); // fast shutdown
  } catch {
    pid = undefined; // not running
  }
  if (pid) {
    await waitFor(() => !isRunning(pid!), { what: `postmaster ${pid} to exit`, timeoutMs: 30_000 });
  }
  await service.stop();
}

function isRunning(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

Deno.test("init.sql loads twice on PostgreSQL 15 and its views aggregate shares", async () => {
  const service = await startPostgres();
  const sql = postgres(service.url, { max: 1, onnotice: () => {} });
  try {
    const first = await loadInitSql(service.url);
    assert.equal(first.code, 0, first.stderr);
    assert.doesNotMatch(first.stderr, /ERROR|WARNING/);
    const second = await loadInitSql(service.url);
    assert.equal(second.code, 0, second.stderr);
    assert.doesNotMatch(second.stderr, /ERROR|WARNING/);

    const relations = await sql<{ table_name: string; table_type: string }[]>`
      SELECT table_name, table_type FROM information_schema.tables
      WHERE table_schema = 'public' ORDER BY table_name`;
    assert.deepEqual(relations.map((r) => [r.table_name, r.table_type]), [
      ["blocks", "BASE TABLE"],
      ["daily_shares", "VIEW"],
      ["hourly_shares", "VIEW"],
      ["mining_events", "BASE TABLE"],
      ["shares", "BASE TABLE"],
      ["users", "BASE TABLE"],
      ["weekly_best_diff", "BASE TABLE"],
      ["workers", "BASE TABLE"],
    ]);

    const seed = await sql`
      SELECT display_name, country_code FROM users WHERE btc_address = ${SEED}`;
    assert.deepEqual([...seed], [{ display_name: "Test Miner", country_code: "US" }]);
    const [{ users }] = await sql`SELECT count(*)::int AS users FROM users`;
    assert.equal(users, 1);

    // Buckets are UTC whatever the session time zone: 02:00 UTC on the 23rd is still the
    // 22nd in New York, and must land in the 23rd's daily bucket.
    await sql`SET TimeZone = 'America/New_York'`;
    await sql`
      INSERT INTO shares (time, btc_address, worker_name, difficulty, share_diff, is_valid,
                          reject_reason, source)
      VALUES
        ('2024-02-22 16:05:00+00', 'addr-a', 'w1', 8, 10, true,  NULL,    'hosted'),
        ('2024-02-22 16:30:00+00', 'addr-a', 'w1', 8, 20, true,  NULL,    'hosted'),
        ('2024-02-22 16:59:59+00', 'addr-a', 'w2', 8, 30, false, 'Stale', 'hosted'),
        ('2024-02-22 17:00:00+00', 'addr-a', 'w1', 8, 5,  true,  NULL,    'hosted'),
        ('2024-02-22 16:10:00+00', 'addr-b', 'w1', 8, 7,  true,  NULL,    'proxy'),
        ('2024-02-23 02:00:00+00', 'addr-a', 'w1', 8, 40, true,  NULL,    'hosted')`;

    const hourly = await sql`
      SELECT to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS bucket, btc_address,
             total_shares::int, accepted_shares::int, rejected_shares::int, best_diff, avg_diff
      FROM hourly_shares ORDER BY bucket, btc_address`;
    assert.deepEqual([...hourly], [
      {
        bucket: "2024-02-22 16:00",
        btc_address: "addr-a",
        total_shares: 3,
        accepted_shares: 2,
        rejected_shares: 1,
        best_diff: 30,
        avg_diff: 20,
      },
      {
        bucket: "2024-02-22 16:00",
        btc_address: "addr-b",
        total_shares: 1,
        accepted_shares: 1,
        rejected_shares: 0,
        best_diff: 7,
        avg_diff: 7,
      },
      {
        bucket: "2024-02-22 17:00",
        btc_address: "addr-a",
        total_shares: 1,
        accepted_shares: 1,
        rejected_shares: 0,
        best_diff: 5,
        avg_diff: 5,
      },
      {
        bucket: "2024-02-23 02:00",
        btc_address: "addr-a",
        total_shares: 1,
        accepted_shares: 1,
        rejected_shares: 0,
        best_diff: 40,
        avg_diff: 40,
      },
    ]);

    const daily = await sql`
      SELECT to_char(bucket AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS bucket, btc_address,
             total_shares::int, accepted_shares::int, best_diff
      FROM daily_shares ORDER BY bucket, btc_address`;
    assert.deepEqual([...daily], [
      {
        bucket: "2024-02-22 00:00",
        btc_address: "addr-a",
        total_shares: 4,
        accepted_shares: 3,
        best_diff: 30,
      },
      {
        bucket: "2024-02-22 00:00",
        btc_address: "addr-b",
        total_shares: 1,
        accepted_shares: 1,
        best_diff: 7,
      },
      {
        bucket: "2024-02-23 00:00",
        btc_address: "addr-a",
        total_shares: 1,
        accepted_shares: 1,
        best_diff: 40,
      },
    ]);

    // A third load with data present changes nothing.
    const third = await loadInitSql(service.url);
    assert.equal(third.code, 0, third.stderr);
    const [{ shares }] = await sql`SELECT count(*)::int AS shares FROM shares`;
    assert.equal(shares, 6);
  } finally {
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("init.sql constraints: one row per block hash, weekly rows start on Mondays", async () => {
  const service = await startPostgres();
  const sql = postgres(service.url, { max: 1, onnotice: () => {} });
  try {
    const loaded = await loadInitSql(service.url);
    assert.equal(loaded.code, 0, loaded.stderr);

    const insertBlock = (hash: string | null) =>
      sql`INSERT INTO blocks (block_height, block_hash, source, found_at)
          VALUES (1, ${hash}, 'hosted', now()) ON CONFLICT (block_hash) DO NOTHING`;
    await insertBlock("00ab");
    await insertBlock("00ab");
    await insertBlock(null);
    await insertBlock(null);
    const blocks = await sql`
      SELECT block_hash, count(*)::int AS n FROM blocks GROUP BY 1 ORDER BY 1 NULLS LAST`;
    assert.deepEqual([...blocks], [{ block_hash: "00ab", n: 1 }, { block_hash: null, n: 2 }]);

    await sql`INSERT INTO weekly_best_diff (btc_address, week_start) VALUES ('a', '2024-02-26')`;
    await assert.rejects(
      sql`INSERT INTO weekly_best_diff (btc_address, week_start) VALUES ('a', '2024-02-25')`,
      (error: Error & { code?: string }) => error.code === "23514", // check_violation
    );

    // A worker needs its user.
    await assert.rejects(
      sql`INSERT INTO workers (user_id, worker_name) VALUES (999999, 'w')`,
      (error: Error & { code?: string }) => error.code === "23503", // foreign_key_violation
    );
  } finally {
    await sql.end();
    await stopPostgres(service);
  }
});

/** Index name → definition, for one table. */
async function indexesOf(sql: postgres.Sql, table: string): Promise<Record<string, string>> {
  const rows = await sql<{ indexname: string; indexdef: string }[]>`
    SELECT indexname, indexdef FROM pg_indexes
    WHERE schemaname = 'public' AND tablename = ${table}`;
  return Object.fromEntries(rows.map((r) => [r.indexname, r.indexdef]));
}

Deno.test("init.sql: mining_events and shares are unique on (time, event_id)", async () => {
  const service = await startPostgres();
  const sql = postgres(service.url, { max: 1, onnotice: () => {} });
  try {
    for (let load = 0; load < 2; load++) {
      const loaded = await loadInitSql(service.url);
      assert.equal(loaded.code, 0, loaded.stderr);
      assert.doesNotMatch(loaded.stderr, /ERROR|WARNING/);
    }
    const events = await indexesOf(sql, "mining_events");
    assert.match(
      events.mining_events_ts_event_id_key,
      /^CREATE UNIQUE INDEX \S+ ON public\.mining_events USING btree \(ts, event_id\)$/,
    );
    assert.equal(events.mining_events_ts_idx, undefined, "the unique index is the time index");
    const shares = await indexesOf(sql, "shares");
    assert.match(
      shares.shares_time_event_id_key,
      /^CREATE UNIQUE INDEX \S+ ON public\.shares USING btree \("time", event_id\)$/,
    );
    assert.equal(shares.shares_time_idx, undefined);

    const insertEvent = (id: string | null, ts: string) =>
      sql`INSERT INTO mining_events (ts, event_type, source, payload, event_id)
          VALUES (${ts}, 'x', 'hosted', '{}', ${id})`;
    await insertEvent("e1:1", "2024-02-22 16:00:00+00");
    await assert.rejects(
      insertEvent("e1:1", "2024-02-22 16:00:00+00"),
      (error: Error & { code?: string }) => error.code === "23505", // unique_violation
    );
    await insertEvent("e1:1", "2024-02-22 16:00:01+00"); // another time: another row
    await insertEvent(null, "2024-02-22 16:00:00+00"); // rows from before ids never conflict
    await insertEvent(null, "2024-02-22 16:00:00+00");
    const insertShare = (id: string) =>
      sql`INSERT INTO shares (time, btc_address, worker_name, difficulty, share_diff, is_valid,
                              source, event_id)
          VALUES ('2024-02-22 16:00:00+00', 'a', 'w', 1, 1, true, 'hosted', ${id})`;
    await insertShare("e1:1");
    await assert.rejects(
      insertShare("e1:1"),
      (error: Error & { code?: string }) => error.code === "23505",
    );
  } finally {
    await sql.end();
    await stopPostgres(service);
  }
});

Deno.test("init.sql migrates a database made before event ids, keeping its rows", async () => {
  const service = await startPostgres();
  const sql = postgres(service.url, { max: 1, onnotice: () => {} });
  try {
    const loaded = await loadInitSql(service.url);
    assert.equal(loaded.code, 0, loaded.stderr);
    if (hasTimescaledb()) {
      // A TimescaleDB database from before event ids had not turned compression on yet
      // (one that had gets the warning tested in sql_timescaledb_test.ts).
      await sql.unsafe(`
        SELECT remove_compression_policy('mining_events'), remove_compression_policy('shares');
        ALTER TABLE mining_events SET (timescaledb.compress = false);
        ALTER TABLE shares SET (timescaledb.compress = false);`);
    }
    // Back to the schema as it was before event ids: no column, a plain time index.
    await sql.unsafe(`
      ALTER TABLE mining_events DROP COLUMN event_id;
      ALTER TABLE shares DROP COLUMN event_id;
      CREATE INDEX mining_events_ts_idx ON mining_events (ts DESC);
      CREATE INDEX shares_time_idx ON shares (time DESC);
      INSERT INTO mining_events (ts, event_type, source, payload)
        VALUES ('2024-02-22 16:00:00+00', 'x', 'hosted', '{"n":1}'),
               ('2024-02-22 16:00:00+00', 'x', 'hosted', '{"n":1}');
      INSERT INTO shares (time, btc_address, worker_name, difficulty, share_diff, is_valid, source)
        VALUES ('2024-02-22 16:00:00+00', 'a', 'w', 1, 1, true, 'hosted');`);
    assert.equal((await indexesOf(sql, "mining_events")).mining_events_ts_event_id_key, undefined);

    const migrated = await loadInitSql(service.url);
    assert.equal(migrated.code, 0, migrated.stderr);
    assert.doesNotMatch(migrated.stderr, /ERROR|WARNING/);
    const events = await indexesOf(sql, "mining_events");
    assert.ok(events.mining_events_ts_event_id_key);
    assert.equal(events.mining_events_ts_idx, undefined);
    const shares = await indexesOf(sql, "shares");
    assert.ok(shares.shares_time_event_id_key);
    assert.equal(shares.shares_time_idx, undefined);
    const [counts] = await sql`
      SELECT (SELECT count(*) FROM mining_events WHERE event_id IS NULL)::int AS events,
             (SELECT count(*) FROM shares WHERE event_id IS NULL)::int AS shares`;
    assert.deepEqual({ ...counts }, { events: 2, shares: 1 });
  } finally {
    await sql.end();
    await stopPostgres(service);
  }
});
