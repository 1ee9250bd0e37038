/**
 * The upserts of the state tables (users, workers, blocks, weekly best difficulty), each
 * taking one table's aggregated rows of a batch as one JSON text parameter
 * (`json_to_recordset`). The merge rules live here, in SQL: a replay or a batch that arrives
 * late never moves a worker's state or a block's first report backwards.
 *
 * @module
 */
import type { EncodedBatch } from "./encode.ts";

/** A statement with its one parameter: a table's rows as JSON text. */
export interface Upsert {
  readonly text: string;
  readonly rows: string;
}

/**
 * The upserts of the state tables, in dependency order (users before the tables that
 * look user ids up). Each takes its rows as one JSON text parameter (`$1::json`).
 */
export function upserts(rows: EncodedBatch): Upsert[] {
  const list: Upsert[] = [];
  if (rows.users !== undefined) {
    list.push({
      rows: rows.users,
      text: `
      INSERT INTO users AS o (btc_address, last_seen)
      SELECT x.u, to_timestamp(x.t)
      FROM json_to_recordset($1::json) AS x(u text, t float8)
      ON CONFLICT (btc_address) DO UPDATE SET last_seen = EXCLUDED.last_seen
      WHERE o.last_seen IS NULL OR o.last_seen < EXCLUDED.last_seen`,
    });
  }
  if (rows.workers !== undefined) {
    list.push({
      rows: rows.workers,
      text: `
      INSERT INTO workers AS o (
        user_id, worker_name, is_online, current_diff,
        hashrate_1m, hashrate_5m, hashrate_1h, hashrate_24h, hashrate_at,
        ip_address, useragent, source, connected_at, disconnected_at, last_share_at, last_seen,
        shares_accepted, shares_rejected)
      SELECT u.id, x.w, coalesce(x.st, false), x.d,
        coalesce(x.h1m, 0), coalesce(x.h5m, 0), coalesce(x.h1h, 0), coalesce(x.h1d, 0),
        to_timestamp(x.ht), x.ip, x.ua, x.s, to_timestamp(x.ca), to_timestamp(x.da),
        to_timestamp(x.sa), to_timestamp(x.ls), x.na, x.nr
      FROM json_to_recordset($1::json) AS x(
        u text, w text, s text, st boolean, ca float8, da float8, sa float8, ls float8,
        d float8, h1m float8, h5m float8, h1h float8, h1d float8, ht float8,
        ip text, ua text, na bigint, nr bigint)
      JOIN users u ON u.btc_address = x.u
      ON CONFLICT (user_id, worker_name) DO UPDATE SET
        is_online = CASE
          WHEN greatest(EXCLUDED.connected_at, EXCLUDED.disconnected_at, EXCLUDED.last_share_at)
            >= coalesce(greatest(o.connected_at, o.disconnected_at, o.last_share_at), '-infinity')
          THEN EXCLUDED.is_online ELSE o.is_online END,
        current_diff = coalesce(EXCLUDED.current_diff, o.current_diff),
        hashrate_1m = CASE WHEN EXCLUDED.hashrate_at >= coalesce(o.hashrate_at, '-infinity')
          THEN EXCLUDED.hashrate_1m ELSE o.hashrate_1m END,
        hashrate_5m = CASE WHEN EXCLUDED.hashrate_at >= coalesce(o.hashrate_at, '-infinity')
          THEN EXCLUDED.hashrate_5m ELSE o.hashrate_5m END,
        hashrate_1h = CASE WHEN EXCLUDED.hashrate_at >= coalesce(o.hashrate_at, '-infinity')
          THEN EXCLUDED.hashrate_1h ELSE o.hashrate_1h END,
        hashrate_24h = CASE WHEN EXCLUDED.hashrate_at >= coalesce(o.hashrate_at, '-infinity')
          THEN EXCLUDED.hashrate_24h ELSE o.hashrate_24h END,
        hashrate_at = greatest(o.hashrate_at, EXCLUDED.hashrate_at),
        ip_address = coalesce(EXCLUDED.ip_address, o.ip_address),
        useragent = coalesce(EXCLUDED.useragent, o.useragent),
        source = EXCLUDED.source,
        connected_at = greatest(o.connected_at, EXCLUDED.connected_at),
        disconnected_at = greatest(o.disconnected_at, EXCLUDED.disconnected_at),
        last_share_at = greatest(o.last_share_at, EXCLUDED.last_share_at),
        last_seen = greatest(o.last_seen, EXCLUDED.last_seen),
        shares_accepted = o.shares_accepted + EXCLUDED.shares_accepted,
        shares_rejected = o.shares_rejected + EXCLUDED.shares_rejected`,
    });
  }
  if (rows.blocks !== undefined) {
    list.push({
      rows: rows.blocks,
      text: `
      INSERT INTO blocks AS o (
        block_height, block_hash, user_id, btc_address, worker_name, reward_sats, difficulty,
        network_difficulty, coinbase_sig, source, found_at)
      SELECT x.h, x.hash, u.id, x.u, x.w, x.r, x.d, x.nd, x.cb, x.s, to_timestamp(x.t)
      FROM json_to_recordset($1::json) AS x(
        h bigint, hash text, u text, w text, r bigint, d float8, nd float8, cb text, s text,
        t float8)
      LEFT JOIN users u ON u.btc_address = x.u
      ON CONFLICT (block_hash) DO UPDATE SET
        block_height = coalesce(nullif(o.block_height, 0), EXCLUDED.block_height),
        user_id = coalesce(o.user_id, EXCLUDED.user_id),
        btc_address = coalesce(o.btc_address, EXCLUDED.btc_address),
        worker_name = coalesce(o.worker_name, EXCLUDED.worker_name),
        reward_sats = coalesce(nullif(o.reward_sats, 0), EXCLUDED.reward_sats),
        difficulty = coalesce(nullif(o.difficulty, 0), EXCLUDED.difficulty),
        network_difficulty = coalesce(nullif(o.network_difficulty, 0), EXCLUDED.network_difficulty),
        coinbase_sig = coalesce(o.coinbase_sig, EXCLUDED.coinbase_sig),
        found_at = least(o.found_at, EXCLUDED.found_at)`,
    });
  }
  if (rows.weekly !== undefined) {
    list.push({
      rows: rows.weekly,
      text: `
      INSERT INTO weekly_best_diff AS o (
        btc_address, week_start, best_difficulty, best_share_at, total_shares)
      SELECT x.u, x.wk, x.b, to_timestamp(x.bt), x.n
      FROM json_to_recordset($1::json) AS x(
        u text, wk date, b float8, bt float8, n bigint)
      ON CONFLICT (btc_address, week_start) DO UPDATE SET
        best_share_at = CASE
          WHEN o.best_share_at IS NULL OR EXCLUDED.best_difficulty > o.best_difficulty
          THEN EXCLUDED.best_share_at ELSE o.best_share_at END,
        best_difficulty = greatest(o.best_difficulty, EXCLUDED.best_difficulty),
        total_shares = o.total_shares + EXCLUDED.total_shares`,
    });
  }
  return list;
}
