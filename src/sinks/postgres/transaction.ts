/**
 * One batch, one transaction: the COPYs of `shares` and `mining_events`, the state tables'
 * upserts, commit. Writes are idempotent on the event id: `mining_events` and `shares` are
 * unique on (time, event_id), and a batch that meets an event stored already is sent again
 * without the stored events, so a replay never doubles a row or a counter.
 *
 * @module
 */
import type { MiningEvent } from "../../events.ts";
import {
  EVENT_COPY_COLUMNS,
  SHARE_COPY_COLUMNS,
  storedId,
  toJson,
  withoutRepeats,
} from "./batch.ts";
import type { PgConnection } from "./connection.ts";
import { encodeBatch, type EncodedBatch } from "./encode.ts";
import { isDataError, isUniqueViolation, UncertainCommit } from "./failure.ts";
import { upserts } from "./upserts.ts";

/**
 * Writes one encoded batch and returns how many of `batch`'s events were left out as
 * repeats; throws {@link UncertainCommit} when unsure whether it committed.
 *
 * The normal path is plain COPY, which the unique indexes turn into a unique_violation when
 * an event is stored already (a replay after a crash, or after a commit whose reply was
 * lost). Only then is the batch sent again, in one transaction that first asks which of its
 * events are stored, leaves them out and writes the rest the same way.
 */
export async function writeBatch(
  db: PgConnection,
  batch: readonly MiningEvent[],
  encoded: EncodedBatch,
): Promise<number> {
  const repeats = batch.length - encoded.fresh.length;
  try {
    await inTransaction(db, () => writeRows(db, encoded));
    return repeats;
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
  }
  return repeats + await inTransaction(db, async () => {
    const rest = withoutRepeats(encoded.fresh, await storedIds(db, encoded.fresh));
    if (rest.length > 0) await writeRows(db, await encodeBatch(rest));
    return encoded.fresh.length - rest.length;
  });
}

/**
 * Runs `body` between BEGIN and COMMIT. The transaction id is taken once every statement
 * succeeded and just before COMMIT, so a failure after it is an {@link UncertainCommit};
 * a failure before it leaves nothing committed.
 */
async function inTransaction<T>(
  db: PgConnection,
  body: () => Promise<T>,
): Promise<T> {
  let xid: string | undefined;
  await db.query("BEGIN");
  try {
    const result = await body();
    [{ xid }] = await db.query<{ xid: string }>("SELECT pg_current_xact_id()::text AS xid");
    await db.query("COMMIT");
    return result;
  } catch (error) {
    if (xid !== undefined && !isDataError(error) && !isUniqueViolation(error)) {
      throw new UncertainCommit(xid, error);
    }
    // The connection lives on after an error the server reported; the transaction must end.
    if (!db.broken) await db.query("ROLLBACK").catch(() => {});
    throw error;
  }
}

/** The bulk rows by COPY, one table after the other (a copy holds the connection), then upserts. */
async function writeRows(db: PgConnection, encoded: EncodedBatch): Promise<void> {
  if (encoded.shares.length > 0) {
    await db.copyIn(`COPY shares (${SHARE_COPY_COLUMNS}) FROM STDIN`, encoded.shares);
  }
  await db.copyIn(`COPY mining_events (${EVENT_COPY_COLUMNS}) FROM STDIN`, encoded.events);
  for (const upsert of upserts(encoded)) await db.query(upsert.text, [upsert.rows]);
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
