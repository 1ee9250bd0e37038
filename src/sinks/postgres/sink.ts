/**
 * PostgreSQL sink: writes events in batches, each batch in one transaction
 * (`transaction.ts`), over one connection (`connection.ts`, node-postgres). Every event goes
 * to `mining_events`; shares, users, workers, blocks and the weekly best difficulty are
 * derived from the same batch (rules in `batch.ts`, SQL in `upserts.ts`).
 *
 * - `push` only appends to an in-memory queue, which takes everything pushed (bounding
 *   memory is the feed's job); a write starts when `batchMaxSize` events wait,
 *   `flushIntervalMs` after the oldest waiting event arrived, or on `flush`.
 * - One write in flight at a time, taking everything waiting up to `maxWriteEvents`. While
 *   it is in the database, the following batch is encoded (`encode.ts`, in slices that let
 *   the database's replies through), so that a backlog keeps the server and this thread busy
 *   at the same time instead of in turn.
 * - Every round trip has a deadline: making a connection `connectTimeoutMs`, one batch's
 *   transaction `writeTimeoutMs`. What a failure means for the next attempt is
 *   `failure.ts`: the connection is thrown away on any failure that is not the data's fault
 *   (a connection that saw its server go away is never trusted again), and the failed batch
 *   stays at the head of the queue and is retried after a back-off of 25 ms doubling to
 *   0.5 s, so the sink is writing again within about a second of the server's return.
 * - If the connection is lost after every statement succeeded, the commit may or may not
 *   have happened: the transaction id is checked with `pg_xact_status` before the batch is
 *   sent again. A server that no longer knows the id (it crashed before the transaction
 *   reached its log) did not commit it.
 * - A batch the server refuses for its data is split in halves until the offending event is
 *   alone; that event is dropped, counted in `dropped` and logged, and the rest is written.
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
import type { Acknowledge, Sink, SinkStats } from "../../sink.ts";
import { isStorableTs } from "./batch.ts";
import { encodeBatch, type EncodedBatch } from "./encode.ts";
import { errorText, failureKind, isDataError, UncertainCommit } from "./failure.ts";
import { writeBatch } from "./transaction.ts";

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

/**
 * Creates the PostgreSQL sink. It connects on first write and reconnects by itself, and
 * acknowledges each push's end once its events are committed or refused.
 */
export function createPostgresSink(
  options: PostgresSinkOptions,
  acknowledge: Acknowledge = () => {},
): Sink {
  return new PostgresSink(options, acknowledge);
}

/** A batch encoded ahead: the `count` events from absolute queue position `start`. */
interface Prepared {
  readonly start: number;
  readonly count: number;
  readonly encoded: Promise<EncodedBatch>;
}

/** Lets the event loop run between two slices of an encoding. */
const pause = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** A commit whose outcome is not known yet, and how many events it held. */
interface Uncertain {
  readonly xid: string;
  readonly count: number;
}

class PostgresSink implements Sink {
  readonly name = "postgres";
  readonly #options: PostgresSinkOptions;
  readonly #log = getLogger(["tbg", "postgres"]);
  readonly #refusals = new RateLimitedLog(this.#log, 5);
  // Retries come every half second during an outage: a few lines per 10 s say it all.
  readonly #failureLog = new RateLimitedLog(this.#log, 3);
  readonly #maxWrite: number;
  readonly #batchMaxSize: number;
  readonly #queue: PendingQueue<MiningEvent>;
  readonly #backoff = new Backoff(25, 500);
  readonly #closing = new AbortController();
  readonly #counts = { written: 0, retried: 0, dropped: 0 };
  readonly #writeLatency = new Histogram();

  #db: PgConnection | undefined;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerFired = false;
  /** Arrival of the oldest event no write has taken. */
  #oldestWaitingAt: number | undefined;
  #loop: Promise<void> | undefined;
  #retrying = false;
  /** Consecutive failed attempts. */
  #failures = 0;
  /** Most events the next write takes; shrinks while a refused batch is being split. */
  #limit: number;
  /** Events at the head that were in a refused batch. */
  #suspects = 0;
  #uncertain: Uncertain | undefined;
  #prepared: Prepared | undefined;

  constructor(options: PostgresSinkOptions, acknowledge: Acknowledge) {
    this.#options = options;
    this.#queue = new PendingQueue(acknowledge);
    this.#maxWrite = Math.max(1, options.maxWriteEvents ?? 20_000);
    this.#batchMaxSize = Math.max(1, options.batchMaxSize);
    this.#limit = this.#maxWrite;
  }

  push(events: readonly MiningEvent[], end: number): void {
    if (this.#closed) throw new Error("postgres sink is closed");
    let storable = events;
    // Never true for an event that passed validation (its ts range is the same).
    if (!events.every((event) => isStorableTs(event.ts))) {
      storable = events.filter((event) => isStorableTs(event.ts));
      const bad = events.length - storable.length;
      this.#counts.dropped += bad;
      this.#refusals.error("refused {bad} events whose ts cannot be stored (e.g. {ts})", {
        bad,
        ts: events.find((event) => !isStorableTs(event.ts))?.ts,
      });
    }
    this.#queue.push(storable, end);
    if (storable.length > 0) this.#oldestWaitingAt ??= Date.now();
    this.#schedule();
  }

  flush(signal?: AbortSignal): Promise<void> {
    if (this.#closed) return Promise.resolve();
    const drained = this.#queue.drained(signal);
    this.#schedule();
    return drained;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#closing.abort();
    this.#queue.release();
    await this.#db?.end(5_000);
    await this.#loop;
  }

  stats(): SinkStats {
    return {
      ...this.#counts,
      pending: this.#queue.length,
      up: this.#failures === 0,
      writeLatency: this.#writeLatency,
    };
  }

  #due(): boolean {
    if (this.#closed || this.#queue.length === 0) return false;
    return this.#retrying || this.#uncertain !== undefined || this.#timerFired ||
      this.#queue.length >= this.#batchMaxSize || this.#queue.awaited;
  }

  /** Starts the write loop when a write is due, or the timer for the oldest waiting event. */
  #schedule(): void {
    if (this.#closed || this.#loop) return;
    if (this.#due()) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#loop = this.#run()
        .catch(async (error) => {
          // Not expected: every write error is handled in the loop. Log, pause, carry on.
          this.#log.error("postgres write loop failed: {error}", { error: errorText(error) });
          this.#retrying = true;
          await sleep(this.#backoff.next(), this.#closing.signal);
        })
        .finally(() => {
          this.#loop = undefined;
          this.#schedule();
        });
    } else if (this.#queue.length > 0 && this.#timer === undefined) {
      const start = this.#oldestWaitingAt ?? Date.now();
      const delay = Math.max(0, start + this.#options.flushIntervalMs - Date.now());
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#timerFired = true;
        this.#schedule();
      }, delay);
    }
  }

  async #run(): Promise<void> {
    while (this.#due()) {
      if (this.#uncertain) await this.#settleUncertain(this.#uncertain);
      else await this.#writeHead();
    }
    this.#prepared = undefined;
  }

  /** Writes the batch at the head of the queue, encoding the following one meanwhile. */
  async #writeHead(): Promise<void> {
    const start = this.#queue.removed;
    const ahead = this.#prepared?.start === start ? this.#prepared : undefined;
    this.#prepared = undefined;
    const count = ahead?.count ?? Math.min(this.#queue.length, this.#limit);
    const batch = this.#queue.peek(count);
    if (count === this.#queue.length) {
      this.#timerFired = false;
      this.#oldestWaitingAt = undefined;
    }
    const started = performance.now();
    try {
      const encoded = await (ahead?.encoded ?? encodeBatch(batch, pause));
      const write = this.#roundTrip(
        `writing ${count} events`,
        (db) => writeBatch(db, batch, encoded),
      );
      this.#prepare(start + count, count);
      const repeats = await write;
      this.#writeLatency.observe((performance.now() - started) / 1000);
      if (repeats > 0) {
        this.#log.info("{repeats} of {count} events were stored already or repeated; kept once", {
          repeats,
          count,
        });
      }
      this.#succeeded(count);
    } catch (error) {
      this.#prepared = undefined;
      if (this.#closed) return;
      const kind = failureKind(error);
      if (kind === "data") this.#refused(batch, error);
      else {
        this.#discard();
        if (kind === "uncertain") {
          this.#uncertain = { xid: (error as UncertainCommit).xid, count };
        }
        await this.#failed(error);
      }
    }
  }

  /**
   * Starts encoding the batch after the one being written, if one is due at once: during a
   * backlog, or a burst.
   */
  #prepare(start: number, written: number): void {
    const waiting = this.#queue.length - written;
    if (this.#limit !== this.#maxWrite || waiting < Math.min(this.#batchMaxSize, this.#maxWrite)) {
      return;
    }
    const count = Math.min(waiting, this.#maxWrite);
    const encoded = encodeBatch(this.#queue.peek(count, written), pause);
    encoded.catch(() => {}); // a failure is met when the batch is written, or never
    this.#prepared = { start, count, encoded };
  }

  /** Runs `work` on the connection (a fresh one if there is none) within the write deadline. */
  async #roundTrip<T>(what: string, work: (db: PgConnection) => Promise<T>): Promise<T> {
    if (this.#db?.broken) this.#discard(); // an idle connection that died: not worth a try
    this.#db ??= await PgConnection.open(
      this.#options.url,
      this.#options.connectTimeoutMs ?? 3_000,
    );
    return withDeadline(
      work(this.#db),
      this.#options.writeTimeoutMs ?? 15_000,
      what,
      () => this.#discard(),
    );
  }

  /** Throws the connection away; the next write makes a fresh one. */
  #discard(): void {
    this.#db?.destroy();
    this.#db = undefined;
  }

  #succeeded(count: number): void {
    this.#counts.written += count;
    this.#queue.remove(count);
    if (this.#failures > 0) {
      this.#log.info("write succeeded after {failures} failed attempts", {
        failures: this.#failures,
      });
    }
    this.#failures = 0;
    this.#retrying = false;
    this.#backoff.reset();
    if (this.#suspects > 0) {
      this.#suspects = Math.max(0, this.#suspects - count);
      if (this.#suspects === 0) this.#limit = this.#maxWrite;
    }
  }

  async #failed(error: unknown): Promise<void> {
    this.#counts.retried++;
    this.#failures++;
    this.#retrying = true;
    this.#failureLog.warn("write failed, {pending} events kept for retry: {error}", {
      pending: this.#queue.length,
      error: errorText(error),
      attempt: this.#failures,
    });
    await sleep(this.#backoff.next(), this.#closing.signal);
  }

  /** The server refused `batch` for its data: split it, or drop the one event it holds. */
  #refused(batch: readonly MiningEvent[], error: unknown): void {
    this.#retrying = true;
    this.#suspects = Math.max(this.#suspects, batch.length);
    if (batch.length > 1) {
      this.#limit = Math.ceil(batch.length / 2);
      this.#log.warn("database refused a batch of {count} events ({error}); splitting it", {
        count: batch.length,
        error: errorText(error),
      });
      return;
    }
    this.#counts.dropped++;
    this.#queue.remove(1);
    this.#suspects--;
    if (this.#suspects === 0) this.#limit = this.#maxWrite;
    this.#refusals.error("database refused an event, dropped it: {error}; event: {event}", {
      error: errorText(error),
      event: describe(batch[0]),
    });
  }

  /** Asks the server whether the commit of `state` happened, and acts on the answer. */
  async #settleUncertain(state: Uncertain): Promise<void> {
    let status: string | null;
    try {
      [{ status }] = await this.#roundTrip(
        "checking a commit",
        (db) =>
          db.query<{ status: string | null }>("SELECT pg_xact_status($1::xid8) AS status", [
            state.xid,
          ]),
      );
    } catch (error) {
      if (!isDataError(error)) {
        this.#discard();
        await this.#failed(error);
        return;
      }
      // The server does not know the transaction ("in the future": it crashed before the
      // transaction reached its log), so it did not commit: write the batch again.
      this.#log.info("the server does not know transaction {xid} ({error}); writing again", {
        xid: state.xid,
        error: errorText(error),
      });
      this.#uncertain = undefined;
      return;
    }
    if (status === "in progress") {
      await this.#failed("commit still in progress");
      return;
    }
    this.#uncertain = undefined;
    if (status === "committed") {
      this.#log.info("a write whose commit was not confirmed did commit ({count} events)", {
        count: state.count,
      });
      this.#succeeded(state.count);
    } else if (status !== "aborted") {
      this.#log.warn("cannot tell whether transaction {xid} committed; writing its events again", {
        xid: state.xid,
      });
    }
  }
}

/** An event for a log line, shortened; never throws. */
function describe(event: MiningEvent): string {
  try {
    return JSON.stringify(event).slice(0, 2_000);
  } catch {
    return `${event.event} at ${event.ts}`;
  }
}
