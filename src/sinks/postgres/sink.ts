/**
 * PostgreSQL sink: writes events in batches, each batch in one transaction, over one
 * connection (`connection.ts`, node-postgres). Every event goes to `mining_events`; shares, users, workers, blocks and the weekly
 * best difficulty are derived from the same batch (rules in `batch.ts`).
 *
 * - `push` only appends to an in-memory queue, which takes everything pushed (bounding
 *   memory is the delivery layer's job); a write starts when `batchMaxSize` events wait,
 *   `flushIntervalMs` after the oldest waiting event arrived, or on `flush`.
 * - One write in flight at a time, taking everything waiting up to `maxWriteEvents`, in one
 *   transaction. `mining_events` and `shares` rows are streamed with `COPY ... FROM STDIN`
 *   (text format), which costs the server far less than parsing them out of JSON; the
 *   aggregated state tables (users, workers, blocks, weekly_best_diff) travel as one JSON
 *   parameter each (`json_to_recordset`), their upserts after the copies.
 * - Every round trip has a deadline: making a connection `connectTimeoutMs`, one batch's
 *   transaction `writeTimeoutMs`. On any failure that is not the data's fault (a refused or
 *   broken connection, a server shutting down, a deadline) the connection is thrown away and
 *   the next attempt makes a fresh one: a connection that saw its server go away is never
 *   trusted again. The failed batch stays at the head of the
 *   queue and is retried after a back-off of 25 ms doubling to 0.5 s (a refused connection
 *   costs nothing), so the sink is writing again within about a second of the server's return.
 * - Writes are idempotent on the event id: `mining_events` and `shares` are unique on
 *   (time, event_id), an event repeated inside a batch is written once, and a batch that
 *   meets an event stored already (unique_violation) is sent again without the stored events
 *   (see `writeBatch`), so a replay never doubles a row or a counter.
 * - If the connection is lost after every statement succeeded, the commit may or may not
 *   have happened: the transaction id is checked with `pg_xact_status` before the batch is
 *   sent again, which spares a replay whose outcome is known. A server that no longer knows
 *   the id (it crashed before the transaction reached its log) did not commit it.
 * - A batch the server refuses for its data (SQLSTATE class 22 or 54, e.g. a value out of
 *   range or JSON nested too deep) is split in halves until the offending event is alone;
 *   that event is dropped, counted in `dropped` and logged, and the rest is written. A batch
 *   over 64 Mi characters of JSON and COPY text is split the same way before it is sent.
 * - Events whose `ts` PostgreSQL cannot store are refused by `push` and counted in `dropped`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Backoff, sleep } from "../backoff.ts";
import { withDeadline } from "../deadline.ts";
import { PgConnection } from "./connection.ts";
import { RateLimitedLog } from "../../ops/log.ts";
import type { MiningEvent } from "../../events.ts";
import { PendingQueue } from "../pending_queue.ts";
import { Histogram } from "../../ops/metrics.ts";
import type { Sink, SinkStats } from "../../sink.ts";
import {
  type BatchRows,
  buildBatch,
  EVENT_COPY_COLUMNS,
  eventsCopy,
  isStorableTs,
  SHARE_COPY_COLUMNS,
  sharesCopy,
  storedId,
  toJson,
  withoutRepeats,
} from "./batch.ts";

/** Options for {@link createPostgresSink}. */
export interface PostgresSinkOptions {
  /** `postgres://user:pass@host:port/db`; query parameters become session settings. */
  readonly url: string;
  /** A write starts as soon as this many events wait. */
  readonly batchMaxSize: number;
  /** A write starts at the latest this long after the oldest waiting event arrived. */
  readonly flushIntervalMs: number;
  /** Most events one transaction takes (default 20,000). */
  readonly maxWriteEvents?: number;
  /** Deadline for making a connection, in milliseconds (default 3 s). */
  readonly connectTimeoutMs?: number;
  /** Deadline for writing one batch, in milliseconds (default 15 s). */
  readonly writeTimeoutMs?: number;
}

const DEFAULT_MAX_WRITE_EVENTS = 20_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 3_000;
const DEFAULT_WRITE_TIMEOUT_MS = 15_000;

/** Thrown when a commit's outcome is unknown: the connection broke after the statements. */
class UncertainCommit extends Error {
  constructor(readonly xid: string, cause: unknown) {
    super(errorText(cause), { cause });
  }
}

function errorText(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}

/** A batch that could not be turned into statements (never expected; handled like bad data). */
class UnencodableBatch extends Error {}

/** An error caused by the data sent: retrying the same data fails the same way. */
function isDataError(error: unknown): boolean {
  if (error instanceof UnencodableBatch) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^(22|54)[0-9A-Z]{3}$/.test(code);
}

/** A statement with its one parameter: a table's rows as JSON text. */
interface Upsert {
  readonly text: string;
  readonly rows: string;
}

/**
 * The upserts of the state tables, in dependency order (users before the tables that
 * look user ids up). Each takes its rows as one JSON text parameter (`$1::json`).
 */
function upserts(rows: BatchJson): Upsert[] {
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

/**
 * Each table's rows: `events` and `shares` as COPY text, the others as one JSON document;
 * undefined when the table gets no rows.
 */
type BatchJson = {
  [table in keyof BatchRows]: table extends "events" ? string : string | undefined;
};

/**
 * Largest JSON a batch may send, in characters. A batch of big payloads beyond it is split
 * like a refused one; PostgreSQL cannot take a single value over 1 GB anyway.
 */
const MAX_BATCH_CHARS = 64 * 1024 * 1024;

function encode(batch: readonly MiningEvent[]): BatchJson {
  let json: BatchJson;
  try {
    const rows = buildBatch(batch);
    const doc = (list: unknown[]) => list.length > 0 ? toJson(list) : undefined;
    json = {
      events: eventsCopy(rows.events),
      shares: rows.shares.length > 0 ? sharesCopy(rows.shares) : undefined,
      users: doc(rows.users),
      workers: doc(rows.workers),
      blocks: doc(rows.blocks),
      weekly: doc(rows.weekly),
    };
  } catch (error) {
    throw new UnencodableBatch(`cannot encode batch: ${errorText(error)}`, { cause: error });
  }
  const chars = Object.values(json).reduce((sum, doc) => sum + (doc?.length ?? 0), 0);
  if (chars > MAX_BATCH_CHARS && batch.length > 1) {
    throw new UnencodableBatch(`batch too large (${chars} characters of JSON and COPY text)`);
  }
  return json;
}

/** An event for a log line, shortened; never throws. */
function describe(event: MiningEvent): string {
  try {
    return JSON.stringify(event).slice(0, 2_000);
  } catch {
    return `${event.event} at ${event.ts}`;
  }
}

/** SQLSTATE unique_violation: a row with the same event id and time is stored already. */
function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "23505";
}

/**
 * The ids of the events in `batch` that are stored already, in `mining_events` or, for
 * shares, in `shares` (which keeps its rows longer). Matched on id and time, like the unique
 * indexes, with the time computed as COPY stores it (`to_timestamp`).
 */
async function storedIds(db: PgConnection, batch: readonly MiningEvent[]): Promise<Set<string>> {
  const keys = toJson(batch.map((event) => ({
    i: storedId(event),
    t: event.ts,
    s: event.event === "share_submitted",
  })));
  const rows = await db.query<{ id: string }>(
    `SELECT x.i AS id
    FROM json_to_recordset($1::json) AS x(i text, t float8, s boolean)
    WHERE EXISTS (
        SELECT 1 FROM mining_events e WHERE e.event_id = x.i AND e.ts = to_timestamp(x.t))
      OR (x.s AND EXISTS (
        SELECT 1 FROM shares h WHERE h.event_id = x.i AND h.time = to_timestamp(x.t)))`,
    [keys],
  );
  return new Set(rows.map((row) => row.id));
}

/**
 * Writes one batch in one transaction and returns how many of its events were left out as
 * repeats; throws {@link UncertainCommit} when unsure whether it committed.
 *
 * Repeats inside the batch are left out before anything is sent. The normal path is plain
 * COPY, which the unique indexes on (time, event_id) turn into a unique_violation when an
 * event is stored already (a replay after a crash, or after a commit whose reply was lost).
 * Only then is the batch sent again, in one transaction that first asks which of its events
 * are stored, leaves them out and writes the rest the same way: so the counters in the state
 * tables never count an event twice.
 */
async function writeBatch(db: PgConnection, batch: readonly MiningEvent[]): Promise<number> {
  const fresh = withoutRepeats(batch);
  try {
    await writeRows(db, fresh, false);
    return batch.length - fresh.length;
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
  }
  return batch.length - fresh.length + await writeRows(db, fresh, true);
}

/**
 * One transaction: with `skipStored`, first asks which events are stored and leaves them out;
 * returns how many it left out.
 */
async function writeRows(
  db: PgConnection,
  batch: readonly MiningEvent[],
  skipStored: boolean,
): Promise<number> {
  let rows = skipStored ? undefined : encode(batch);
  let skipped = 0;
  let xid: string | undefined;
  await db.query("BEGIN");
  try {
    if (rows === undefined) {
      const rest = withoutRepeats(batch, await storedIds(db, batch));
      skipped = batch.length - rest.length;
      if (rest.length === 0) {
        await db.query("COMMIT");
        return skipped;
      }
      rows = encode(rest);
    }
    // The bulk rows by COPY, one table after the other (a copy holds the connection).
    if (rows.shares !== undefined) {
      await db.copyIn(`COPY shares (${SHARE_COPY_COLUMNS}) FROM STDIN`, rows.shares);
    }
    await db.copyIn(`COPY mining_events (${EVENT_COPY_COLUMNS}) FROM STDIN`, rows.events);
    for (const upsert of upserts(rows)) await db.query(upsert.text, [upsert.rows]);
    [{ xid }] = await db.query<{ xid: string }>("SELECT pg_current_xact_id()::text AS xid");
    await db.query("COMMIT");
  } catch (error) {
    if (xid !== undefined && !isDataError(error) && !isUniqueViolation(error)) {
      throw new UncertainCommit(xid, error);
    }
    // The connection lives on after an error the server reported; the transaction must end.
    if (!db.broken) await db.query("ROLLBACK").catch(() => {});
    throw error;
  }
  return skipped;
}

/** Creates the PostgreSQL sink. It connects on first write and reconnects by itself. */
export function createPostgresSink(options: PostgresSinkOptions): Sink {
  const log = getLogger(["tbg", "postgres"]);
  const maxWrite = Math.max(1, options.maxWriteEvents ?? DEFAULT_MAX_WRITE_EVENTS);
  const batchMaxSize = Math.max(1, options.batchMaxSize);
  const queue = new PendingQueue<MiningEvent>();
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const writeTimeoutMs = options.writeTimeoutMs ?? DEFAULT_WRITE_TIMEOUT_MS;
  const backoff = new Backoff(25, 500);
  const closing = new AbortController();
  const refusals = new RateLimitedLog(log, 5);
  const failureLog = new RateLimitedLog(log, 3);
  const stats = { written: 0, retried: 0, dropped: 0 };
  const writeLatency = new Histogram(); // encoding the batch included: it is part of each write

  let db: PgConnection | undefined;
  /** Throws the connection away; the next write makes a fresh one. */
  const discard = () => {
    db?.destroy();
    db = undefined;
  };
  /** Runs `work` on the connection (a fresh one if there is none) within the write deadline. */
  async function roundTrip<T>(what: string, work: (db: PgConnection) => Promise<T>): Promise<T> {
    if (db?.broken) discard(); // an idle connection that died is not worth a failed attempt
    db ??= await PgConnection.open(options.url, connectTimeoutMs);
    return withDeadline(work(db), writeTimeoutMs, what, discard);
  }

  let closed = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timerFired = false;
  let oldestWaitingAt: number | undefined; // arrival of the oldest event no write has taken
  let loop: Promise<void> | undefined;
  let retrying = false;
  let failures = 0; // consecutive failed attempts
  let limit = maxWrite; // shrinks while a refused batch is being split
  let suspects = 0; // events at the head that were in a refused batch
  let uncertain: { xid: string; count: number } | undefined;

  const due = () => {
    if (closed || queue.length === 0) return false;
    return retrying || uncertain !== undefined || timerFired || queue.length >= batchMaxSize ||
      queue.awaited;
  };

  function schedule(): void {
    if (closed || loop) return;
    if (due()) {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      loop = run()
        .catch(async (error) => {
          // Not expected: every write error is handled in run(). Log, pause, carry on.
          log.error("postgres write loop failed: {error}", { error: errorText(error) });
          retrying = true;
          await sleep(backoff.next(), closing.signal);
        })
        .finally(() => {
          loop = undefined;
          schedule();
        });
    } else if (queue.length > 0 && timer === undefined) {
      const start = oldestWaitingAt ?? Date.now();
      const delay = Math.max(0, start + options.flushIntervalMs - Date.now());
      timer = setTimeout(() => {
        timer = undefined;
        timerFired = true;
        schedule();
      }, delay);
    }
  }

  const succeeded = (count: number) => {
    queue.remove(count);
    stats.written += count;
    if (failures > 0) {
      log.info("write succeeded after {failures} failed attempts", { failures });
    }
    failures = 0;
    retrying = false;
    backoff.reset();
    if (suspects > 0) {
      suspects = Math.max(0, suspects - count);
      if (suspects === 0) limit = maxWrite;
    }
  };

  const failed = async (error: unknown, pending: number) => {
    stats.retried++;
    failures++;
    retrying = true;
    // Retries come every half second during an outage: a few lines per 10 s say it all.
    failureLog.warn("write failed, {pending} events kept for retry: {error}", {
      pending,
      error: errorText(error),
      attempt: failures,
    });
    await sleep(backoff.next(), closing.signal);
  };

  /** Settles a commit whose outcome was unknown; true once it is known. */
  async function resolveUncertain(state: { xid: string; count: number }): Promise<boolean> {
    const [row] = await roundTrip(
      "checking a commit",
      (db) =>
        db.query<{ status: string | null }>("SELECT pg_xact_status($1::xid8) AS status", [
          state.xid,
        ]),
    );
    if (row.status === "in progress") return false;
    uncertain = undefined;
    if (row.status === "committed") {
      log.info("a write whose commit was not confirmed did commit ({count} events)", {
        count: state.count,
      });
      succeeded(state.count);
    } else if (row.status !== "aborted") {
      log.warn("cannot tell whether transaction {xid} committed; writing its events again", {
        xid: state.xid,
      });
    }
    return true;
  }

  async function run(): Promise<void> {
    while (due()) {
      if (uncertain) {
        try {
          if (!(await resolveUncertain(uncertain))) {
            await failed("commit still in progress", queue.length);
          }
        } catch (error) {
          if (isDataError(error)) {
            // The server does not know the transaction ("in the future": it crashed before
            // the transaction reached its log), so it did not commit: write the batch again.
            log.info("the server does not know transaction {xid} ({error}); writing again", {
              xid: uncertain.xid,
              error: errorText(error),
            });
            uncertain = undefined;
          } else {
            discard();
            await failed(error, queue.length);
          }
        }
        continue;
      }
      const count = Math.min(queue.length, limit);
      const batch = queue.peek(count);
      if (count === queue.length) {
        timerFired = false;
        oldestWaitingAt = undefined;
      }
      try {
        const started = performance.now();
        const repeats = await roundTrip(
          `writing ${count} events`,
          (db) => writeBatch(db, batch),
        );
        writeLatency.observe((performance.now() - started) / 1000);
        if (repeats > 0) {
          log.info("{repeats} of {count} events were stored already or repeated; kept once", {
            repeats,
            count,
          });
        }
        succeeded(count);
      } catch (error) {
        if (closed) return;
        if (error instanceof UncertainCommit) {
          discard();
          uncertain = { xid: error.xid, count };
          await failed(error, queue.length);
        } else if (isDataError(error)) {
          retrying = true;
          suspects = Math.max(suspects, count);
          if (count > 1) {
            limit = Math.ceil(count / 2);
            log.warn("database refused a batch of {count} events ({error}); splitting it", {
              count,
              error: errorText(error),
            });
          } else {
            queue.remove(1);
            stats.dropped++;
            suspects--;
            if (suspects === 0) limit = maxWrite;
            refusals.error("database refused an event, dropped it: {error}; event: {event}", {
              error: errorText(error),
              event: describe(batch[0]),
            });
          }
        } else {
          discard();
          await failed(error, queue.length);
        }
      }
    }
  }

  return {
    name: "postgres",
    push(events) {
      if (closed) throw new Error("postgres sink is closed");
      if (events.length === 0) return;
      let storable: readonly MiningEvent[] = events;
      // Never true for an event that passed validation (its ts range is the same); only that
      // makes counting these as dropped ahead of earlier events harmless to the push-order
      // count the delivery layer relies on (see SinkStats).
      if (!events.every((event) => isStorableTs(event.ts))) {
        storable = events.filter((event) => isStorableTs(event.ts));
        const bad = events.length - storable.length;
        stats.dropped += bad;
        refusals.error("refused {bad} events whose ts cannot be stored (e.g. {ts})", {
          bad,
          ts: events.find((event) => !isStorableTs(event.ts))?.ts,
        });
      }
      queue.push(storable);
      if (storable.length > 0) oldestWaitingAt ??= Date.now();
      schedule();
    },
    flush(signal) {
      if (closed) return Promise.resolve();
      const drained = queue.drained(signal);
      schedule();
      return drained;
    },
    async close() {
      if (closed) return;
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      closing.abort();
      queue.release();
      await db?.end(5_000);
      await loop;
    },
    stats(): SinkStats {
      return { ...stats, pending: queue.length, up: failures === 0, writeLatency };
    },
  };
}
