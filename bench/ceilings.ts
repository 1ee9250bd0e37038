/**
 * What the servers themselves can do with a run's own data, measured in the same run on the
 * same servers, so the collector's rates read as a share of a ceiling rather than as numbers
 * that depend on the machine:
 *
 * - PostgreSQL: the rows the run wrote to `mining_events` and `shares`, copied out to files,
 *   the tables emptied, and copied back in by server-side `COPY ... FROM` file, both tables
 *   one after the other on one backend. Events per second is `mining_events` rows over that
 *   time (each share event is a row in both tables, as the collector writes it).
 * - Redis: `redis-benchmark` pipelining `XADD` (256 in flight) into a scratch stream of the same
 *   server, with the fields and payload of an entry the run wrote.
 *
 * And the collector's own rates over the same data: PostgreSQL rows over the span of their
 * commit timestamps, Redis entries over the span of their entry ids (Redis's clock).
 *
 * @module
 */
import postgres from "postgres";
import { psqlPath, type Service } from "../tests/support/services.ts";

/** A rate the collector reached and the ceiling it is a share of. */
export interface Ceiling {
  /** Events per second the collector wrote, over the span of its writes. */
  readonly collector: number;
  /** Events per second the server takes on its own. */
  readonly server: number;
  readonly events: number;
}

/**
 * PostgreSQL's own rate for the run's rows (see the module doc). Empties `mining_events` and
 * `shares` and puts the same rows back; run it after everything else has read them.
 *
 * @param dir a directory the server may write to (its own data directory's parent)
 */
export async function postgresCeiling(
  sql: postgres.Sql,
  dir: string,
): Promise<Ceiling | undefined> {
  const [span] = await sql<{ n: string; seconds: number | null }[]>`
    SELECT count(*) AS n, extract(epoch FROM
      max(pg_xact_commit_timestamp(xmin)) - min(pg_xact_commit_timestamp(xmin)))::float8 AS seconds
    FROM mining_events`;
  const events = Number(span.n);
  if (events < 1_000 || !span.seconds) return undefined;
  const files = { events: `${dir}/ceiling-events.copy`, shares: `${dir}/ceiling-shares.copy` };
  // Through a query: a hypertable's rows are in its chunks, which `COPY table TO` leaves out.
  await sql.unsafe(`COPY (SELECT * FROM mining_events) TO '${files.events}'`);
  await sql.unsafe(`COPY (SELECT * FROM shares) TO '${files.shares}'`);
  await sql`TRUNCATE mining_events, shares`;
  await sql`CHECKPOINT`;
  const started = performance.now();
  await sql.unsafe(`COPY mining_events FROM '${files.events}'`);
  await sql.unsafe(`COPY shares FROM '${files.shares}'`);
  const seconds = (performance.now() - started) / 1000;
  await Promise.all(Object.values(files).map((file) => Deno.remove(file).catch(() => {})));
  return { collector: events / span.seconds, server: events / seconds, events };
}

/**
 * Requests per second from `redis-benchmark --csv`. The first column is the command with its
 * arguments, commas and quotes of the payload included, so `rps` is counted from the end: it
 * is followed by six latency columns.
 */
function requestsPerSecond(csv: string): number | undefined {
  const line = csv.trim().split("\n").find((l) => /^"XADD/i.test(l));
  const cells = line?.split(",");
  const value = cells?.[cells.length - 7]?.replace(/"/g, "");
  return value === undefined ? undefined : Number(value);
}

/** One stream's first and last entry id times (ms) and its length. */
interface StreamSpan {
  readonly first: number;
  readonly last: number;
  readonly length: number;
}

/**
 * Redis's own pipelined `XADD` rate with an entry of the run (see the module doc), and the
 * collector's rate over the span of its entry ids.
 *
 * @param run runs a command against the server: `[command, ...args]` to its reply
 */
export async function redisCeiling(
  run: (command: string[]) => Promise<unknown>,
  port: number,
  streams: readonly string[],
): Promise<Ceiling | undefined> {
  const spans: StreamSpan[] = [];
  let sample: string[] | undefined;
  for (const key of streams) {
    const first = await run(["XRANGE", key, "-", "+", "COUNT", "1"]) as [string, string[]][];
    const last = await run(["XREVRANGE", key, "+", "-", "COUNT", "1"]) as [string, string[]][];
    const length = Number(await run(["XLEN", key]));
    if (first.length === 0) continue;
    const time = (id: string) => Number(id.split("-")[0]);
    spans.push({ first: time(first[0][0]), last: time(last[0][0]), length });
    if (key === "mining:share_submitted") sample = first[0][1];
  }
  const events = spans.reduce((sum, s) => sum + s.length, 0);
  const seconds = (Math.max(...spans.map((s) => s.last)) - Math.min(...spans.map((s) => s.first))) /
    1000;
  if (events < 1_000 || seconds <= 0 || !sample) return undefined;
  const out = await new Deno.Command("redis-benchmark", {
    args: [
      "-h",
      "127.0.0.1",
      "-p",
      String(port),
      "-n",
      "300000",
      "-P",
      "256",
      "-c",
      "1",
      "--csv",
      "XADD",
      "bench:ceiling",
      "MAXLEN",
      "~",
      "100000000",
      "*",
      ...sample,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await run(["DEL", "bench:ceiling"]);
  const server = requestsPerSecond(new TextDecoder().decode(out.stdout));
  if (!out.success || server === undefined || !Number.isFinite(server)) return undefined;
  return { collector: events / seconds, server, events };
}

/** Restarts the fresh server with track_commit_timestamp on, for exact commit times. */
export async function enableCommitTimestamps(pg: Service): Promise<void> {
  const bin = psqlPath().replace(/\/psql$/, "");
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    await sql`ALTER SYSTEM SET track_commit_timestamp = on`;
  } finally {
    await sql.end();
  }
  const args = ["-D", `${pg.dir}/data`, "-m", "fast", "-w", "stop"];
  const [cmd, argv] = Deno.uid() === 0
    ? ["runuser", ["-u", "postgres", "--", `${bin}/pg_ctl`, ...args]]
    : [`${bin}/pg_ctl`, args];
  const out = await new Deno.Command(cmd, { args: argv, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`pg_ctl stop failed: ${new TextDecoder().decode(out.stderr)}`);
  await pg.start();
}
