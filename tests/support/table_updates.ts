/**
 * How a table's rows were updated, from PostgreSQL's own statistics.
 *
 * @module
 */

import type postgres from "postgres";
import { waitFor } from "./wait.ts";

/** Updates of one table, and how many of them were HOT (no index written). */
export interface TableUpdates {
  relname: string;
  updated: number;
  hot: number;
}

/**
 * The update counters of `tables`, in the order given, once every one of them shows an update.
 * A server process reports its counters when it ends or goes idle, not as it writes, so this
 * waits for them (up to `timeoutMs`).
 */
export async function tableUpdates(
  sql: postgres.Sql,
  tables: string[],
  timeoutMs = 10_000,
): Promise<TableUpdates[]> {
  return await waitFor(async () => {
    const rows = await sql<TableUpdates[]>`
      SELECT relname, n_tup_upd::int AS updated, n_tup_hot_upd::int AS hot
      FROM pg_stat_user_tables WHERE relname IN ${sql(tables)}`;
    const ordered = tables.map((name) => rows.find((row) => row.relname === name));
    return ordered.every((row) => row !== undefined && row.updated > 0) &&
      (ordered as TableUpdates[]);
  }, { timeoutMs, intervalMs: 100, what: `updates of ${tables.join(", ")} in the statistics` });
}
