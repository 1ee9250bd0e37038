/**
 * The schema's TimescaleDB half, run for real: hypertables, compression and retention
 * policies (their jobs run here, not just listed), both continuous aggregates refreshed, and
 * the PostgreSQL sink replaying an event into a compressed chunk. Skipped, with one line
 * saying how to get it, where TimescaleDB is not installed.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { TIMESCALEDB_HOWTO } from "../scripts/timescaledb.ts";
import { type MiningEvent, parseEvent } from "../src/events.ts";
import { createPostgresSink } from "../src/sinks/postgres/sink.ts";
import { hasTimescaledb, psqlPath, type Service, startPostgres } from "./support/services.ts";
import { pushEvents } from "./support/sink_push.ts";

const INIT_SQL = new URL("../sql/init.sql", import.meta.url).pathname;
const installed = hasTimescaledb();
if (!installed) {
  console.log(`skipped: the TimescaleDB tests need TimescaleDB installed: ${TIMESCALEDB_HOWTO}`);
}
const DAY = 86_400;

async function loadInitSql(url: string): Promise<string> {
  const out = await new Deno.Command(psqlPath(), {
    args: ["--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-f", INIT_SQL, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return stderr;
}

async function withTimescale(test: (sql: postgres.Sql, db: Service) => Promise<void>) {
  const db = await startPostgres();
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  try {
    await test(sql, db);
  } finally {
    await sql.end();
    await db.stop();
  }
}

/** Runs a policy's job now, as its schedule would. */
async function runJob(sql: postgres.Sql, proc: string, table: string): Promise<void> {
  const [job] = await sql<{ id: number }[]>`
    SELECT job_id AS id FROM timescaledb_information.jobs
    WHERE proc_name = ${proc} AND hypertable_name = ${table}`;
  assert.ok(job, `no ${proc} job on ${table}`);
  await sql.unsafe(`CALL run_job(${job.id})`);
}

async function chunks(sql: postgres.Sql, table: string) {
  return await sql<{ compressed: boolean; start: Date }[]>`
    SELECT is_compressed AS compressed, range_start AS start
    FROM timescaledb_information.chunks WHERE hypertable_name = ${table} ORDER BY range_start`;
}

/** Inserts `count` shares of `user` at `ts` (epoch seconds) plus i seconds. */
async function insertShares(sql: postgres.Sql, user: string, ts: number, count: number) {
  await sql`
    INSERT INTO shares (time, btc_address, worker_name, difficulty, share_diff, is_valid, source)
    SELECT to_timestamp(${ts} + i), ${user}, 'rig', 1, i, i % 4 <> 0, 'hosted'
    FROM generate_series(1, ${count}) AS i`;
}

Deno.test({
  name: "TimescaleDB: hypertables with 1-day chunks, compression and retention policies",
  ignore: !installed,
  fn: () =>
    withTimescale(async (sql, db) => {
      assert.doesNotMatch(await loadInitSql(db.url), /ERROR|WARNING/);
      assert.doesNotMatch(await loadInitSql(db.url), /ERROR|WARNING/, "loads twice");
      const dimensions = await sql`
        SELECT hypertable_name AS t, column_name AS c, time_interval::text AS i
        FROM timescaledb_information.dimensions
        WHERE hypertable_name IN ('shares', 'mining_events') ORDER BY 1`;
      assert.deepEqual(dimensions.map((d) => ({ ...d })), [
        { t: "mining_events", c: "ts", i: "1 day" },
        { t: "shares", c: "time", i: "1 day" },
      ]);
      const segmentBy = await sql`
        SELECT hypertable_name AS t, attname AS c FROM timescaledb_information.compression_settings
        WHERE segmentby_column_index IS NOT NULL ORDER BY 1`;
      assert.deepEqual(segmentBy.map((s) => ({ ...s })), [
        { t: "mining_events", c: "event_type" },
        { t: "shares", c: "btc_address" },
      ]);
      const jobs = await sql`
        SELECT proc_name AS p, hypertable_name AS t,
          coalesce(config->>'compress_after', config->>'drop_after') AS after
        FROM timescaledb_information.jobs WHERE proc_name IN ('policy_compression', 'policy_retention')
        ORDER BY 1, 2`;
      assert.deepEqual(jobs.map((j) => ({ ...j })), [
        { p: "policy_compression", t: "mining_events", after: "3 days" },
        { p: "policy_compression", t: "shares", after: "7 days" },
        { p: "policy_retention", t: "mining_events", after: "30 days" },
        { p: "policy_retention", t: "shares", after: "90 days" },
      ]);
      const aggregates = await sql`
        SELECT view_name AS v FROM timescaledb_information.continuous_aggregates ORDER BY 1`;
      assert.deepEqual(aggregates.map((a) => a.v), ["daily_shares", "hourly_shares"]);
    }),
});

Deno.test({
  name: "TimescaleDB: the policies compress old chunks and drop expired ones; rows stay readable",
  ignore: !installed,
  fn: () =>
    withTimescale(async (sql, db) => {
      await loadInitSql(db.url);
      const now = Math.floor(Date.now() / 1000);
      await insertShares(sql, "tb1qnow", now - 3_600, 10);
      await insertShares(sql, "tb1qweekold", now - 10 * DAY, 10);
      await insertShares(sql, "tb1qexpired", now - 100 * DAY, 10);
      assert.deepEqual((await chunks(sql, "shares")).map((c) => c.compressed), [
        false,
        false,
        false,
      ]);

      await runJob(sql, "policy_compression", "shares");
      assert.deepEqual((await chunks(sql, "shares")).map((c) => c.compressed), [
        true, // 100 days old
        true, // 10 days old
        false, // today
      ]);
      const [readable] = await sql`
        SELECT count(*)::int AS n, sum(share_diff)::int AS diff FROM shares
        WHERE btc_address = 'tb1qweekold'`;
      assert.deepEqual({ ...readable }, { n: 10, diff: 55 }, "a compressed chunk still reads");

      await runJob(sql, "policy_retention", "shares");
      assert.equal((await chunks(sql, "shares")).length, 2, "the 100-day-old chunk is dropped");
      const users = await sql`SELECT DISTINCT btc_address AS u FROM shares ORDER BY 1`;
      assert.deepEqual(users.map((u) => u.u), ["tb1qnow", "tb1qweekold"]);
    }),
});

Deno.test({
  name: "TimescaleDB: both continuous aggregates, refreshed, hold the sums of the raw rows",
  ignore: !installed,
  fn: () =>
    withTimescale(async (sql, db) => {
      await loadInitSql(db.url);
      const hourStart = Math.floor(Date.now() / 1000 / 3_600) * 3_600;
      // Two users over several hours, two days back: inside both refresh windows.
      for (let h = 1; h <= 5; h++) {
        await insertShares(sql, "tb1qalice", hourStart - 30 * 3_600 + h * 3_600, 4 * h);
        await insertShares(sql, "tb1qbob", hourStart - 30 * 3_600 + h * 3_600 + 600, 3);
      }
      // Only what is materialized, so a missing refresh shows.
      for (const view of ["hourly_shares", "daily_shares"]) {
        await sql.unsafe(`ALTER MATERIALIZED VIEW ${view} SET (timescaledb.materialized_only)`);
        assert.equal((await sql.unsafe(`SELECT * FROM ${view}`)).length, 0, `${view} is empty`);
      }
      await sql.unsafe(`CALL refresh_continuous_aggregate('hourly_shares', NULL, NULL)`);
      await sql.unsafe(`CALL refresh_continuous_aggregate('daily_shares', NULL, NULL)`);

      // Each view's columns, computed from the raw rows and read from the view.
      const views = [{
        view: "hourly_shares",
        bucket: "1 hour",
        raw: "count(*)::int, count(*) FILTER (WHERE is_valid)::int, " +
          "count(*) FILTER (WHERE NOT is_valid)::int, max(share_diff)::float8, " +
          "avg(share_diff)::float8",
        read: "total_shares::int, accepted_shares::int, rejected_shares::int, " +
          "best_diff::float8, avg_diff::float8",
      }, {
        view: "daily_shares",
        bucket: "1 day",
        raw: "count(*)::int, count(*) FILTER (WHERE is_valid)::int, max(share_diff)::float8",
        read: "total_shares::int, accepted_shares::int, best_diff::float8",
      }];
      for (const { view, bucket, raw, read } of views) {
        const expected = await sql.unsafe(`
          SELECT time_bucket(INTERVAL '${bucket}', time), btc_address, ${raw}
          FROM shares GROUP BY 1, 2 ORDER BY 1, 2`).values();
        const actual = await sql.unsafe(
          `SELECT bucket, btc_address, ${read} FROM ${view} ORDER BY 1, 2`,
        ).values();
        assert.ok(expected.length >= 2, `${view}: ${expected.length} buckets`);
        assert.deepEqual(actual, expected, view);
      }
      const [{ n }] = await sql`SELECT sum(total_shares)::int AS n FROM hourly_shares`;
      assert.equal(n, 4 * (1 + 2 + 3 + 4 + 5) + 5 * 3);
    }),
});

/** A share event through the collector's own validation, at `ts`. */
function share(seq: number, ts: number): MiningEvent {
  const parsed = parseEvent({
    event: "share_submitted",
    ts,
    source: "hosted",
    seq,
    emitter: "7157ca1e7157ca1e",
    data: { user: "tb1qreplay", worker: "rig", diff: 1, sdiff: seq, accepted: true },
  });
  assert.ok(parsed.ok);
  return parsed.event;
}

Deno.test({
  name: "TimescaleDB: an event replayed into a compressed chunk is stored once, not twice",
  ignore: !installed,
  fn: () =>
    withTimescale(async (sql, db) => {
      await loadInitSql(db.url);
      const tenDaysAgo = Date.now() / 1000 - 10 * DAY;
      const events = Array.from({ length: 50 }, (_, i) => share(i + 1, tenDaysAgo + i));
      const sink = createPostgresSink({ url: db.url, batchMaxSize: 500, flushIntervalMs: 20 });
      try {
        pushEvents(sink, events);
        await sink.flush(AbortSignal.timeout(30_000));
        await runJob(sql, "policy_compression", "mining_events");
        await runJob(sql, "policy_compression", "shares");
        for (const table of ["mining_events", "shares"]) {
          assert.deepEqual((await chunks(sql, table)).map((c) => c.compressed), [true], table);
        }

        pushEvents(sink, events.slice(20, 30)); // a replay after a crash, say
        pushEvents(sink, [share(51, tenDaysAgo + 51)]); // and one new event into the same chunk
        await sink.flush(AbortSignal.timeout(30_000));
        const stats = sink.stats();
        assert.deepEqual(
          { written: stats.written, pending: stats.pending, dropped: stats.dropped },
          {
            written: 61,
            pending: 0,
            dropped: 0,
          },
        );
      } finally {
        await sink.close();
      }
      const [counts] = await sql`
        SELECT (SELECT count(*) FROM mining_events)::int AS events,
          (SELECT count(DISTINCT event_id) FROM mining_events)::int AS ids,
          (SELECT count(*) FROM shares)::int AS shares,
          (SELECT shares_accepted FROM workers)::int AS accepted,
          (SELECT total_shares FROM weekly_best_diff)::int AS weekly`;
      assert.deepEqual({ ...counts }, {
        events: 51,
        ids: 51,
        shares: 51,
        accepted: 51,
        weekly: 51,
      });
    }),
});

Deno.test({
  name: "TimescaleDB: a database compressed before event ids still loads, with a warning",
  ignore: !installed,
  fn: () =>
    withTimescale(async (sql, db) => {
      await loadInitSql(db.url);
      await sql.unsafe(`DROP INDEX mining_events_ts_event_id_key`);
      const stderr = await loadInitSql(db.url);
      assert.match(stderr, /could not create the unique index mining_events_ts_event_id_key/);
      assert.match(stderr, /timescaledb\.compress = false/, "the warning says what to do");
    }),
});
