/**
 * Pure part of the PostgreSQL sink: turns a batch of events into the rows each table
 * receives, aggregated per key so that one `INSERT ... ON CONFLICT DO UPDATE` never touches
 * the same row twice.
 *
 * Rules (see also `sql/init.sql`):
 * - every event goes to `mining_events`; `share_submitted` also to `shares`; both rows carry
 *   the event's id (`event_id`), on which the tables are unique with the time column;
 * - an event whose id appeared earlier in the batch is left out ({@link withoutRepeats}),
 *   so that neither its rows nor the counters derived from it are written twice;
 * - every event whose `data.user` is a non-empty string upserts `users` (last_seen = latest ts);
 * - `miner_connected`, `miner_disconnected`, `share_submitted`, `diff_updated` and
 *   `hashrate_update` with a non-empty user and worker upsert `workers`; the online state is
 *   decided by the latest of connect / share (online) and disconnect (offline) by ts, a later
 *   event in the batch winning a tie;
 * - `block_found` gives one `blocks` row; rows with the same non-empty hash are merged;
 * - accepted shares feed `weekly_best_diff` per user and ISO week (Monday, UTC).
 *
 * Text headed for PostgreSQL is cleaned: NUL characters are removed (text and jsonb cannot
 * hold them) and lone UTF-16 surrogates become U+FFFD (they are not valid UTF-8). Fields
 * used as columns and keys are cleaned here; the payloads when the rows are serialized
 * ({@link toJson}).
 *
 * @module
 */
import { MAX_TS, type MiningEvent } from "../../events.ts";

/** Whether `ts` is epoch seconds that `to_timestamp` and the week arithmetic accept. */
export function isStorableTs(ts: number): boolean {
  return Number.isFinite(ts) && ts >= 0 && ts <= MAX_TS;
}

// Lone surrogates (a high not followed by a low, or a low not preceded by a high).
const UNSAFE_TEXT = /\0|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Removes NUL characters and replaces lone surrogates with U+FFFD. */
export function cleanText(text: string): string {
  if (!UNSAFE_TEXT.test(text)) return text;
  return text.replaceAll("\0", "").toWellFormed();
}

// One JSON escape at a time, so an escaped backslash is never mistaken for an escape.
const JSON_ESCAPE = /\\(?:u[0-9a-fA-F]{4}|[^u])/g;
const LONE_SURROGATE_ESCAPE = /^\\ud[89a-f][0-9a-f]{2}$/i;

/**
 * `JSON.stringify(value)` with NUL characters removed and lone surrogates replaced by
 * U+FFFD, in every string and key, at any depth. Works on the text (JSON.stringify escapes
 * exactly these characters as `\u0000` and `\udXXX`), so deeply nested payloads cost no
 * recursion.
 */
export function toJson(value: unknown): string {
  return cleanJson(JSON.stringify(value));
}

/** {@link toJson} of text JSON.stringify already produced. */
function cleanJson(text: string): string {
  if (!text.includes("\\u")) return text;
  return text.replace(
    JSON_ESCAPE,
    (escape) => escape === "\\u0000" ? "" : LONE_SURROGATE_ESCAPE.test(escape) ? "\\ufffd" : escape,
  );
}

// Characters COPY's text format gives a meaning to: the escape, the column and row separators.
const COPY_SPECIAL = /[\\\t\n\r]/;
const COPY_SPECIAL_ALL = /[\\\t\n\r]/g;
const COPY_ESCAPES: Record<string, string> = {
  "\\": "\\\\",
  "\t": "\\t",
  "\n": "\\n",
  "\r": "\\r",
};

/** A text value as a field of COPY's text format (`\N` for NULL). Text must be cleaned. */
export function copyText(text: string | null): string {
  if (text === null) return "\\N";
  return COPY_SPECIAL.test(text) ? text.replace(COPY_SPECIAL_ALL, (c) => COPY_ESCAPES[c]) : text;
}

/** A payload as a COPY field: {@link toJson}, whose only special character is `\`. */
export function copyJson(value: unknown): string {
  const json = toJson(value);
  return json.includes("\\") ? json.replaceAll("\\", "\\\\") : json;
}

function copyNumber(value: number | null): string {
  return value === null ? "\\N" : String(value);
}

/** Seconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch. */
const PG_EPOCH_OFFSET = 946_684_800;
let lastSecond = NaN;
let lastSecondText = "";

/**
 * Epoch seconds as a timestamptz literal holding exactly what `to_timestamp(ts)` stores:
 * PostgreSQL computes `rint((ts - 946684800) * 1e6)` microseconds since 2000-01-01 in
 * float8, rounding half to even; so does this. `ts` must be storable ({@link isStorableTs}).
 */
export function copyTimestamp(ts: number): string {
  const x = (ts - PG_EPOCH_OFFSET) * 1e6;
  let us = Math.round(x);
  if (us - x === 0.5 && us % 2 !== 0) us -= 1; // rint: ties to even
  let seconds: number;
  let micros: number;
  if (Math.abs(us) <= Number.MAX_SAFE_INTEGER) {
    micros = ((us % 1e6) + 1e6) % 1e6;
    seconds = (us - micros) / 1e6;
  } else {
    const big = BigInt(us);
    const m = ((big % 1_000_000n) + 1_000_000n) % 1_000_000n;
    micros = Number(m);
    seconds = Number((big - m) / 1_000_000n);
  }
  if (seconds !== lastSecond) {
    lastSecond = seconds;
    lastSecondText = new Date((seconds + PG_EPOCH_OFFSET) * 1000).toISOString().slice(0, 19);
  }
  return micros === 0
    ? `${lastSecondText}Z`
    : `${lastSecondText}.${String(micros).padStart(6, "0")}Z`;
}

/** Columns of `mining_events` in the order {@link eventsCopy} writes them. */
export const EVENT_COPY_COLUMNS = "ts, event_type, source, emitter, seq, payload, event_id";

/**
 * `mining_events` rows `from` to `to` (all by default) in COPY text format, each line ended;
 * payloads are cleaned like {@link toJson}.
 */
export function eventsCopy(rows: readonly EventRow[], from = 0, to = rows.length): string {
  // One template per row, joined once: several times faster than concatenating every row
  // into one string, and no array of fields per row.
  const lines = new Array<string>(Math.max(0, to - from) + 1);
  for (let i = from; i < to; i++) {
    const r = rows[i];
    lines[i - from] = `${copyTimestamp(r.t)}\t${copyText(r.e)}\t${copyText(r.s)}\t${
      copyText(r.m)
    }\t${copyNumber(r.q)}\t${copyJson(r.p)}\t${copyText(r.i)}`;
  }
  lines[lines.length - 1] = "";
  return lines.join("\n");
}

/** Columns of `shares` in the order {@link sharesCopy} writes them. */
export const SHARE_COPY_COLUMNS =
  "time, btc_address, worker_name, difficulty, share_diff, is_valid, is_block, " +
  "reject_reason, ip_address, source, emitter, seq, event_id";

/** `shares` rows `from` to `to` (all by default) in COPY text format, each line ended. */
export function sharesCopy(rows: readonly ShareRow[], from = 0, to = rows.length): string {
  const lines = new Array<string>(Math.max(0, to - from) + 1);
  for (let i = from; i < to; i++) {
    const r = rows[i];
    lines[i - from] = [
      copyTimestamp(r.t),
      copyText(r.u),
      copyText(r.w),
      String(r.d),
      String(r.sd),
      r.a ? "t" : "f",
      r.b ? "t" : "f",
      copyText(r.r),
      copyText(r.ip),
      copyText(r.s),
      copyText(r.m),
      copyNumber(r.q),
      copyText(r.i),
    ].join("\t");
  }
  lines[lines.length - 1] = "";
  return lines.join("\n");
}

/**
 * The event's id as stored in `event_id`. Ids made by the collector are plain ASCII; an id
 * built elsewhere is cleaned like any text, and compared in this form, so that two ids the
 * database would store alike are also alike here.
 */
export function storedId(event: MiningEvent): string {
  return cleanText(event.id);
}

/**
 * The batch without the events that would write a row a second time: events whose id
 * appeared earlier in the batch (the first is kept) and events whose id is in `stored`.
 * Returns `batch` itself when nothing is left out, which is the common case.
 */
export function withoutRepeats(
  batch: readonly MiningEvent[],
  stored?: ReadonlySet<string>,
): readonly MiningEvent[] {
  const seen = new Set<string>();
  let kept: MiningEvent[] | undefined;
  for (let i = 0; i < batch.length; i++) {
    const id = storedId(batch[i]);
    if (seen.has(id) || stored?.has(id)) {
      kept ??= batch.slice(0, i);
      continue;
    }
    seen.add(id);
    kept?.push(batch[i]);
  }
  return kept ?? batch;
}

/** Monday (UTC) of the ISO week that contains `ts`, as `YYYY-MM-DD`. */
export function isoWeekStart(ts: number): string {
  const day = Math.floor(ts / 86_400); // days since 1970-01-01, a Thursday
  if (day === lastWeekDay) return lastWeekStart; // a batch spans one day or two
  const monday = day - ((day + 3) % 7); // (day + 3) % 7 is 0 on Mondays
  lastWeekDay = day;
  lastWeekStart = new Date(monday * 86_400_000).toISOString().slice(0, 10);
  return lastWeekStart;
}
let lastWeekDay = NaN;
let lastWeekStart = "";

/** A `mining_events` row. Keys are short: the rows travel as one JSON document. */
export interface EventRow {
  /** ts, epoch seconds */
  t: number;
  /** event type */
  e: string;
  /** source */
  s: string;
  /** emitter */
  m: string | null;
  /** seq */
  q: number | null;
  /** payload: the event's data as received; {@link toJson} cleans it */
  p: unknown;
  /** event id, cleaned ({@link storedId}) */
  i: string;
}

/** A `shares` row. */
export interface ShareRow {
  t: number;
  u: string;
  w: string;
  d: number;
  sd: number;
  a: boolean;
  b: boolean;
  r: string | null;
  ip: string | null;
  s: string;
  m: string | null;
  q: number | null;
  /** event id, cleaned ({@link storedId}) */
  i: string;
}

/** A `users` upsert: address and the latest event time seen for it. */
export interface UserRow {
  u: string;
  t: number;
}

/** A `workers` upsert; `null` means "this batch says nothing about it". */
export interface WorkerRow {
  u: string;
  w: string;
  /** source of the latest event */
  s: string;
  /** online state from the latest connection evidence, or null */
  st: boolean | null;
  /** latest miner_connected ts */
  ca: number | null;
  /** latest miner_disconnected ts */
  da: number | null;
  /** latest share_submitted ts */
  sa: number | null;
  /** latest event ts */
  ls: number;
  /** difficulty from the latest miner_connected / diff_updated */
  d: number | null;
  /** hashrates from the latest hashrate_update, and its ts */
  h1m: number | null;
  h5m: number | null;
  h1h: number | null;
  h1d: number | null;
  ht: number | null;
  /** latest non-empty ip and useragent */
  ip: string | null;
  ua: string | null;
  /** accepted and rejected shares in this batch */
  na: number;
  nr: number;
}

/** A `blocks` row. */
export interface BlockRow {
  h: number;
  hash: string | null;
  u: string | null;
  w: string | null;
  r: number;
  d: number;
  nd: number;
  cb: string | null;
  s: string;
  t: number;
}

/** A `weekly_best_diff` upsert. */
export interface WeeklyRow {
  u: string;
  /** week start, YYYY-MM-DD */
  wk: string;
  /** best share difficulty and when it was reached */
  b: number;
  bt: number;
  /** accepted shares */
  n: number;
}

/** Everything one batch writes, table by table. */
export interface BatchRows {
  events: EventRow[];
  shares: ShareRow[];
  users: UserRow[];
  workers: WorkerRow[];
  blocks: BlockRow[];
  weekly: WeeklyRow[];
}

const WORKER_EVENTS = new Set([
  "miner_connected",
  "miner_disconnected",
  "share_submitted",
  "diff_updated",
  "hashrate_update",
]);

/** A string field, cleaned; "" when absent or not a string. */
function str(value: unknown): string {
  return typeof value === "string" ? cleanText(value) : "";
}

function num(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

function orNull(text: string): string | null {
  return text === "" ? null : text;
}

interface WorkerAcc extends WorkerRow {
  /** ts of the evidence behind `st` */
  stateTs: number;
  diffTs: number;
  ipTs: number;
  uaTs: number;
  sourceTs: number;
}

function newWorker(user: string, worker: string, source: string, ts: number): WorkerAcc {
  return {
    u: user,
    w: worker,
    s: source,
    st: null,
    ca: null,
    da: null,
    sa: null,
    ls: ts,
    d: null,
    h1m: null,
    h5m: null,
    h1h: null,
    h1d: null,
    ht: null,
    ip: null,
    ua: null,
    na: 0,
    nr: 0,
    stateTs: -Infinity,
    diffTs: -Infinity,
    ipTs: -Infinity,
    uaTs: -Infinity,
    sourceTs: -Infinity,
  };
}

const max = (a: number | null, b: number): number => a === null || b > a ? b : a;

/** The row of an accumulated worker, without the times that decided its fields. */
function workerRow(acc: WorkerAcc): WorkerRow {
  return {
    u: acc.u,
    w: acc.w,
    s: acc.s,
    st: acc.st,
    ca: acc.ca,
    da: acc.da,
    sa: acc.sa,
    ls: acc.ls,
    d: acc.d,
    h1m: acc.h1m,
    h5m: acc.h5m,
    h1h: acc.h1h,
    h1d: acc.h1d,
    ht: acc.ht,
    ip: acc.ip,
    ua: acc.ua,
    na: acc.na,
    nr: acc.nr,
  };
}

function setState(acc: WorkerAcc, ts: number, online: boolean): void {
  if (ts >= acc.stateTs) {
    acc.st = online;
    acc.stateTs = ts;
  }
}

function setDiff(acc: WorkerAcc, ts: number, diff: number): void {
  if (ts >= acc.diffTs) {
    acc.d = diff;
    acc.diffTs = ts;
  }
}

function applyWorkerEvent(acc: WorkerAcc, type: string, ts: number, data: Record<string, unknown>) {
  acc.ls = Math.max(acc.ls, ts);
  const ip = str(data.ip);
  if (ip !== "" && ts >= acc.ipTs) {
    acc.ip = ip;
    acc.ipTs = ts;
  }
  switch (type) {
    case "miner_connected": {
      acc.ca = max(acc.ca, ts);
      setState(acc, ts, true);
      setDiff(acc, ts, num(data.initial_diff));
      const useragent = str(data.useragent);
      if (useragent !== "" && ts >= acc.uaTs) {
        acc.ua = useragent;
        acc.uaTs = ts;
      }
      break;
    }
    case "miner_disconnected":
      acc.da = max(acc.da, ts);
      setState(acc, ts, false);
      break;
    case "share_submitted":
      acc.sa = max(acc.sa, ts);
      setState(acc, ts, true);
      if (data.accepted === true) acc.na++;
      else acc.nr++;
      break;
    case "diff_updated":
      setDiff(acc, ts, num(data.new_diff));
      break;
    case "hashrate_update":
      if (acc.ht === null || ts >= acc.ht) {
        acc.ht = ts;
        acc.h1m = num(data.hashrate_1m);
        acc.h5m = num(data.hashrate_5m);
        acc.h1h = num(data.hashrate_1h);
        acc.h1d = num(data.hashrate_1d);
      }
      break;
  }
}

/**
 * Splits a batch into table rows, one event at a time ({@link BatchBuilder.add}), so that a
 * big batch can be built in slices between which other work runs. Events must have a
 * storable ts ({@link isStorableTs}). Strings are cleaned before they are used as keys, so
 * keys that differ only by a NUL become one row rather than two rows that collide in the
 * database.
 */
export class BatchBuilder {
  /** Rows so far, in event order; the aggregated tables come from {@link rows}. */
  readonly events: EventRow[] = [];
  readonly shares: ShareRow[] = [];
  readonly #users = new Map<string, UserRow>();
  readonly #workers = new Map<string, WorkerAcc>();
  readonly #blocks: BlockRow[] = [];
  readonly #blocksByHash = new Map<string, BlockRow>();
  readonly #weekly = new Map<string, WeeklyRow>();

  /** Adds one event's rows. */
  add(event: MiningEvent): void {
    const data = event.data ?? {};
    const type = cleanText(event.event);
    const ts = event.ts;
    const source = cleanText(event.source);
    const emitter = event.emitter === undefined ? null : cleanText(event.emitter);
    const seq = event.seq ?? null;
    const id = storedId(event);
    this.events.push({ t: ts, e: type, s: source, m: emitter, q: seq, p: data, i: id });

    const user = str(data.user);
    if (user !== "") {
      const known = this.#users.get(user);
      if (!known) this.#users.set(user, { u: user, t: ts });
      else if (ts > known.t) known.t = ts;
    }
    const worker = str(data.worker);

    if (user !== "" && worker !== "" && WORKER_EVENTS.has(type)) {
      const key = `${user}\0${worker}`; // cleaned strings hold no NUL
      let acc = this.#workers.get(key);
      if (!acc) this.#workers.set(key, acc = newWorker(user, worker, source, ts));
      if (ts >= acc.sourceTs) {
        acc.s = source;
        acc.sourceTs = ts;
      }
      applyWorkerEvent(acc, type, ts, data);
    }

    if (type === "share_submitted") {
      const accepted = data.accepted === true;
      const sdiff = num(data.sdiff);
      this.shares.push({
        t: ts,
        u: user,
        w: worker,
        d: num(data.diff),
        sd: sdiff,
        a: accepted,
        b: data.is_block === true,
        r: orNull(str(data.reject_reason)),
        ip: orNull(str(data.ip)),
        s: source,
        m: emitter,
        q: seq,
        i: id,
      });
      if (accepted && user !== "") this.#addWeekly(user, ts, sdiff);
    } else if (type === "block_found") {
      this.#addBlock({
        h: num(data.height),
        hash: orNull(str(data.hash)),
        u: orNull(user),
        w: orNull(worker),
        r: num(data.reward_sats),
        d: num(data.diff),
        nd: num(data.network_diff),
        cb: orNull(str(data.coinbase_sig)),
        s: source,
        t: ts,
      });
    }
  }

  /** Every table's rows; the aggregated ones sorted by key. */
  rows(): BatchRows {
    // A stable key order keeps concurrent writers from deadlocking on these rows. Each map's
    // keys are its rows' key columns joined by NUL, which cleaned text never holds, so their
    // plain string order is the order of those columns.
    const sorted = <T>(rows: Map<string, T>) =>
      [...rows.keys()].sort().map((key) => rows.get(key)!);
    return {
      events: this.events,
      shares: this.shares,
      users: sorted(this.#users),
      workers: sorted(this.#workers).map(workerRow),
      blocks: this.#blocks,
      weekly: sorted(this.#weekly),
    };
  }

  #addWeekly(user: string, ts: number, sdiff: number): void {
    const wk = isoWeekStart(ts);
    const key = `${user}\0${wk}`;
    const row = this.#weekly.get(key);
    if (!row) this.#weekly.set(key, { u: user, wk, b: sdiff, bt: ts, n: 1 });
    else {
      row.n++;
      if (sdiff > row.b || (sdiff === row.b && ts < row.bt)) {
        row.b = sdiff;
        row.bt = ts;
      }
    }
  }

  #addBlock(row: BlockRow): void {
    const same = row.hash === null ? undefined : this.#blocksByHash.get(row.hash);
    if (!same) {
      this.#blocks.push(row);
      if (row.hash !== null) this.#blocksByHash.set(row.hash, row);
      return;
    }
    // The first report wins; a later one only fills in what the first lacked.
    same.u ??= row.u;
    same.w ??= row.w;
    same.cb ??= row.cb;
    if (same.h === 0) same.h = row.h;
    if (same.r === 0) same.r = row.r;
    if (same.d === 0) same.d = row.d;
    if (same.nd === 0) same.nd = row.nd;
    same.t = Math.min(same.t, row.t);
  }
}

/** Every table's rows for `batch` at once (see {@link BatchBuilder}). */
export function buildBatch(batch: readonly MiningEvent[]): BatchRows {
  const builder = new BatchBuilder();
  for (const event of batch) builder.add(event);
  return builder.rows();
}
