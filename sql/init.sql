-- TheBitcoinGame event pipeline: database schema.
--
-- Loads on plain PostgreSQL (15+) and on TimescaleDB. The TimescaleDB parts (hypertables,
-- compression, retention, continuous aggregates) are applied only when the `timescaledb`
-- extension is available; on plain PostgreSQL `hourly_shares` and `daily_shares` are ordinary
-- views with the same columns.
--
-- Safe to load more than once: every statement is IF NOT EXISTS, CREATE OR REPLACE, ON
-- CONFLICT DO NOTHING, or a DO block that checks before it acts.
--
--   psql -v ON_ERROR_STOP=1 -f sql/init.sql "$DATABASE_URL"
--
-- or mount it into /docker-entrypoint-initdb.d/.
--
-- Written by the event collector (src/sinks/postgres.ts): mining_events, shares, users
-- (address, last_seen), workers, blocks, weekly_best_diff. Timestamps are timestamptz in UTC.

-- ---------------------------------------------------------------------------------------------
-- TimescaleDB, when this server has it. A server that lists the extension but cannot load it
-- (not in shared_preload_libraries) gets a warning and the plain-PostgreSQL schema.
-- ---------------------------------------------------------------------------------------------
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
     AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    BEGIN
      CREATE EXTENSION IF NOT EXISTS timescaledb;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'timescaledb is available but could not be created (%); continuing with plain PostgreSQL', SQLERRM;
    END;
  END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- users: one row per miner, identified by the payout address they mine to.
-- The collector creates a row the first time an address appears in any event and keeps
-- last_seen at the latest event time seen for it. The other columns belong to the game.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS users (
  id           bigserial PRIMARY KEY,
  btc_address  text        NOT NULL UNIQUE,
  display_name text,
  country_code text CHECK (country_code ~ '^[A-Z]{2}$'),
  is_verified  boolean     NOT NULL DEFAULT false,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_seen    timestamptz
);

-- ---------------------------------------------------------------------------------------------
-- workers: one row per (user, worker name), i.e. per mining device.
-- is_online follows the latest connection evidence by event time: miner_connected and
-- share_submitted mean online, miner_disconnected means offline. current_diff comes from
-- miner_connected.initial_diff and diff_updated.new_diff; hashrates from hashrate_update
-- (hashrate_24h = hashrate_1d). shares_accepted/shares_rejected count share_submitted events.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS workers (
  id              bigserial PRIMARY KEY,
  user_id         bigint           NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  worker_name     text             NOT NULL,
  is_online       boolean          NOT NULL DEFAULT false,
  current_diff    double precision,
  hashrate_1m     double precision NOT NULL DEFAULT 0,
  hashrate_5m     double precision NOT NULL DEFAULT 0,
  hashrate_1h     double precision NOT NULL DEFAULT 0,
  hashrate_24h    double precision NOT NULL DEFAULT 0,
  hashrate_at     timestamptz,
  ip_address      text,
  useragent       text,
  source          text,
  connected_at    timestamptz,
  disconnected_at timestamptz,
  last_share_at   timestamptz,
  last_seen       timestamptz,
  shares_accepted bigint           NOT NULL DEFAULT 0,
  shares_rejected bigint           NOT NULL DEFAULT 0,
  created_at      timestamptz      NOT NULL DEFAULT now(),
  UNIQUE (user_id, worker_name)
);

CREATE INDEX IF NOT EXISTS workers_online_idx ON workers (user_id) WHERE is_online;

-- Every batch updates most rows of users and workers. Half of each page is left free so that
-- an update fits beside the row it replaces (a HOT update, which touches no index); on full
-- pages each update writes every index again (measured: the backlog drains ~9% slower).
ALTER TABLE users SET (fillfactor = 50);
ALTER TABLE workers SET (fillfactor = 50);

-- ---------------------------------------------------------------------------------------------
-- shares: one row per share_submitted event (a hypertable on TimescaleDB).
-- difficulty = the pool's target difficulty for the share (data.diff),
-- share_diff = the difficulty the share actually reached (data.sdiff),
-- is_valid = accepted by the pool, reject_reason = why not (NULL when accepted),
-- is_block = the event said so (data.is_block); blocks themselves are in `blocks`.
-- emitter/seq name the event (emitter id, per-emitter counter) when the emitter sent them.
-- event_id is the event's identity (see "Event identity" below); unique with the time, and
-- that unique index is also the table's time index.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS shares (
  time          timestamptz      NOT NULL,
  btc_address   text             NOT NULL,
  worker_name   text             NOT NULL,
  difficulty    double precision NOT NULL,
  share_diff    double precision NOT NULL,
  is_valid      boolean          NOT NULL,
  is_block      boolean          NOT NULL DEFAULT false,
  reject_reason text,
  ip_address    text,
  source        text             NOT NULL,
  emitter       text,
  seq           bigint,
  event_id      text
);

CREATE INDEX IF NOT EXISTS shares_btc_address_time_idx ON shares (btc_address, time DESC);

-- ---------------------------------------------------------------------------------------------
-- blocks: one row per block_found. A block whose hash is known is stored once: the same hash
-- again (a resend, or the second ckpool hook for the same block) only fills in columns that
-- are still empty. user_id is looked up by btc_address (NULL when the finder is unknown).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS blocks (
  id                 bigserial PRIMARY KEY,
  block_height       bigint           NOT NULL,
  block_hash         text UNIQUE,            -- NULL when the event carried no hash
  user_id            bigint REFERENCES users (id) ON DELETE SET NULL,
  btc_address        text,
  worker_name        text,
  reward_sats        bigint,
  difficulty         double precision,
  network_difficulty double precision,
  confirmed          boolean          NOT NULL DEFAULT false,
  coinbase_sig       text,
  source             text             NOT NULL,
  found_at           timestamptz      NOT NULL,
  created_at         timestamptz      NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS blocks_found_at_idx ON blocks (found_at DESC);
CREATE INDEX IF NOT EXISTS blocks_user_id_idx ON blocks (user_id);

-- ---------------------------------------------------------------------------------------------
-- weekly_best_diff: per address and ISO week (week_start = that week's Monday, UTC).
-- Only ACCEPTED shares count: total_shares is the number of accepted shares in the week and
-- best_difficulty the highest share_diff among them (best_share_at = when it was first
-- reached). Rejected shares never enter this table.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS weekly_best_diff (
  btc_address     text             NOT NULL,
  week_start      date             NOT NULL CHECK (extract(isodow FROM week_start) = 1),
  best_difficulty double precision NOT NULL DEFAULT 0,
  best_share_at   timestamptz,
  total_shares    bigint           NOT NULL DEFAULT 0,
  PRIMARY KEY (btc_address, week_start)
);

CREATE INDEX IF NOT EXISTS weekly_best_diff_leaderboard_idx
  ON weekly_best_diff (week_start, best_difficulty DESC);

-- ---------------------------------------------------------------------------------------------
-- mining_events: every event, as received (a hypertable on TimescaleDB). payload is the
-- event's `data`; NUL characters, which PostgreSQL text cannot hold, are removed from it.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS mining_events (
  ts         timestamptz NOT NULL,
  event_type text        NOT NULL,
  source     text        NOT NULL,
  emitter    text,
  seq        bigint,
  payload    jsonb       NOT NULL,
  event_id   text
);

CREATE INDEX IF NOT EXISTS mining_events_type_ts_idx ON mining_events (event_type, ts DESC);

-- ---------------------------------------------------------------------------------------------
-- Event identity. Every event the collector writes carries an id that stays the same however
-- often the event is delivered: `{emitter}:{seq}`, or `sha256:` and 32 hex digits of the
-- datagram when it has no emitter and seq (src/event_identity.ts). mining_events and shares are
-- unique on (time, event_id): a replay after a crash meets a unique_violation, and the collector
-- then leaves out the events already stored, so neither these rows nor the counters in workers
-- and weekly_best_diff are doubled. The time column is in the index because TimescaleDB allows
-- unique indexes on a hypertable only with it; an event delivered again keeps its time. Rows
-- written before ids existed have NULL, which never conflicts.
--
-- Time comes first, so the index also serves every time range and newest-first query (a btree
-- is read backwards as fast as forwards) and replaces the plain time index: rows arrive in
-- time order, so inserting into it stays cheap, and a write costs what it did before ids.
--
-- Databases made before event ids get the column here, and lose the plain time index once the
-- unique one exists. TimescaleDB refuses a unique index on a hypertable once compression is
-- enabled: such a database is left loadable, with its time index and a warning saying how to
-- add the unique one (until then repeats are not detected).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE mining_events ADD COLUMN IF NOT EXISTS event_id text;
ALTER TABLE shares ADD COLUMN IF NOT EXISTS event_id text;

DO $$
DECLARE
  spec record;
BEGIN
  FOR spec IN
    SELECT * FROM (VALUES
      ('mining_events', 'mining_events_ts_event_id_key', 'ts, event_id',   'mining_events_ts_idx'),
      ('shares',        'shares_time_event_id_key',      'time, event_id', 'shares_time_idx')
    ) AS t (tbl, idx, cols, old_idx)
  LOOP
    IF to_regclass(quote_ident(spec.idx)) IS NULL THEN
      BEGIN
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (%s)', spec.idx, spec.tbl, spec.cols);
      EXCEPTION WHEN feature_not_supported THEN
        RAISE WARNING 'could not create the unique index % on % (%); repeated events will be '
          'stored twice until it exists: decompress the chunks, turn compression off '
          '(ALTER TABLE % SET (timescaledb.compress = false)) and load this file again',
          spec.idx, spec.tbl, SQLERRM, spec.tbl;
        CONTINUE;
      END;
    END IF;
    EXECUTE format('DROP INDEX IF EXISTS %I', spec.old_idx);
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- TimescaleDB: hypertables (1-day chunks), compression and retention. Each step checks the
-- catalog first and turns a failure into a warning, so a second run, or a TimescaleDB build
-- without the community-licensed features, still loads.
-- ---------------------------------------------------------------------------------------------
DO $$
DECLARE
  spec record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    RETURN;
  END IF;

  FOR spec IN
    SELECT * FROM (VALUES
      -- event_id is in the order so that every column of the unique index is segment or
      -- order, as TimescaleDB wants for checking uniqueness against compressed chunks.
      ('shares',        'time', 'btc_address', 'time DESC, event_id', INTERVAL '7 days',
        INTERVAL '90 days'),
      ('mining_events', 'ts',   'event_type',  'ts DESC, event_id',   INTERVAL '3 days',
        INTERVAL '30 days')
    ) AS t (tbl, time_col, segment_by, order_by, compress_after, drop_after)
  LOOP
    BEGIN
      IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables
        WHERE hypertable_schema = current_schema() AND hypertable_name = spec.tbl
      ) THEN
        PERFORM create_hypertable(
          spec.tbl::regclass, spec.time_col::name,
          chunk_time_interval => INTERVAL '1 day',
          create_default_indexes => false,   -- the unique (time, event_id) index is one
          if_not_exists => true,
          migrate_data => true
        );
      END IF;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'could not make % a hypertable: %', spec.tbl, SQLERRM;
      CONTINUE;
    END;

    BEGIN
      IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.hypertables
        WHERE hypertable_schema = current_schema() AND hypertable_name = spec.tbl
          AND compression_enabled
      ) THEN
        EXECUTE format(
          'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
          'timescaledb.compress_orderby = %L)',
          spec.tbl, spec.segment_by, spec.order_by
        );
      END IF;
      PERFORM add_compression_policy(spec.tbl::regclass, spec.compress_after, if_not_exists => true);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'could not set up compression on %: %', spec.tbl, SQLERRM;
    END;

    BEGIN
      PERFORM add_retention_policy(spec.tbl::regclass, spec.drop_after, if_not_exists => true);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'could not set up retention on %: %', spec.tbl, SQLERRM;
    END;
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- hourly_shares / daily_shares.
-- TimescaleDB: continuous aggregates (real-time: materialized buckets plus the newest raw rows)
-- refreshed hourly over [now - 3 h, now - 1 h] and daily over [now - 2 d, now]; a refresh
-- window must span at least two buckets. Inside a DO block (a transaction) a continuous
-- aggregate can only be created WITH NO DATA; the policies fill it.
-- Plain PostgreSQL: ordinary views with the same columns, bucketed in UTC like time_bucket.
-- ---------------------------------------------------------------------------------------------
DO $$
DECLARE
  use_caggs    boolean := false;
  hourly_cagg  boolean := false;
  daily_cagg   boolean := false;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    -- Only reached with the extension present: PL/pgSQL plans a statement when it first runs.
    use_caggs := EXISTS (
      SELECT 1 FROM timescaledb_information.hypertables
      WHERE hypertable_schema = current_schema() AND hypertable_name = 'shares'
    );
  END IF;

  IF use_caggs THEN
    BEGIN
      IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = current_schema() AND view_name = 'hourly_shares'
      ) THEN
        DROP VIEW IF EXISTS hourly_shares;  -- a plain view from a load before TimescaleDB
        CREATE MATERIALIZED VIEW hourly_shares
          WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
          SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
                 btc_address,
                 count(*)                             AS total_shares,
                 count(*) FILTER (WHERE is_valid)     AS accepted_shares,
                 count(*) FILTER (WHERE NOT is_valid) AS rejected_shares,
                 max(share_diff)                      AS best_diff,
                 avg(share_diff)                      AS avg_diff
          FROM shares
          GROUP BY bucket, btc_address
          WITH NO DATA;
      END IF;
      PERFORM add_continuous_aggregate_policy('hourly_shares',
        start_offset => INTERVAL '3 hours',
        end_offset => INTERVAL '1 hour',
        schedule_interval => INTERVAL '1 hour',
        if_not_exists => true);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'could not set up continuous aggregate hourly_shares: %', SQLERRM;
    END;

    BEGIN
      IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = current_schema() AND view_name = 'daily_shares'
      ) THEN
        DROP VIEW IF EXISTS daily_shares;
        CREATE MATERIALIZED VIEW daily_shares
          WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
          SELECT time_bucket(INTERVAL '1 day', time) AS bucket,
                 btc_address,
                 count(*)                         AS total_shares,
                 count(*) FILTER (WHERE is_valid) AS accepted_shares,
                 max(share_diff)                  AS best_diff
          FROM shares
          GROUP BY bucket, btc_address
          WITH NO DATA;
      END IF;
      -- end_offset 0: a 2-day window is exactly the two buckets a policy needs; the current,
      -- incomplete day is left to the real-time part of the aggregate.
      PERFORM add_continuous_aggregate_policy('daily_shares',
        start_offset => INTERVAL '2 days',
        end_offset => INTERVAL '0 seconds',
        schedule_interval => INTERVAL '1 day',
        if_not_exists => true);
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'could not set up continuous aggregate daily_shares: %', SQLERRM;
    END;

    hourly_cagg := EXISTS (
      SELECT 1 FROM timescaledb_information.continuous_aggregates
      WHERE view_schema = current_schema() AND view_name = 'hourly_shares'
    );
    daily_cagg := EXISTS (
      SELECT 1 FROM timescaledb_information.continuous_aggregates
      WHERE view_schema = current_schema() AND view_name = 'daily_shares'
    );
  END IF;

  -- Plain views wherever no continuous aggregate holds the name.
  IF NOT hourly_cagg THEN
    CREATE OR REPLACE VIEW hourly_shares AS
      SELECT date_trunc('hour', time, 'UTC')      AS bucket,
             btc_address,
             count(*)                             AS total_shares,
             count(*) FILTER (WHERE is_valid)     AS accepted_shares,
             count(*) FILTER (WHERE NOT is_valid) AS rejected_shares,
             max(share_diff)                      AS best_diff,
             avg(share_diff)                      AS avg_diff
      FROM shares
      GROUP BY 1, 2;
  END IF;

  IF NOT daily_cagg THEN
    CREATE OR REPLACE VIEW daily_shares AS
      SELECT date_trunc('day', time, 'UTC')   AS bucket,
             btc_address,
             count(*)                         AS total_shares,
             count(*) FILTER (WHERE is_valid) AS accepted_shares,
             max(share_diff)                  AS best_diff
      FROM shares
      GROUP BY 1, 2;
  END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Seed: the signet test miner used by the ckpool configuration.
-- ---------------------------------------------------------------------------------------------
INSERT INTO users (btc_address, display_name, country_code)
VALUES ('tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx', 'Test Miner', 'US')
ON CONFLICT (btc_address) DO NOTHING;
