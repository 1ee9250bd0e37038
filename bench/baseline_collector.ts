/**
 * Baseline for the benchmark: the ORIGINAL design's receive loop (the Python asyncio
 * collector of the reference architecture), reimplemented so both designs run on the same
 * machine in the same benchmark run.
 *
 * One datagram at a time: receive it, decode and validate it, `await` its Redis `XADD` (one
 * round trip per event), add it to a database batch (awaiting the write when the batch
 * reaches `BATCH_MAX_SIZE`, 500 by default; a timer also flushes every
 * `BATCH_FLUSH_INTERVAL`, 1 s), and only then receive the next datagram. The batch is one
 * multi-row INSERT into `mining_events` and one into `shares`, as the original wrote them
 * (it never touched the state tables). No receive thread, no pipelining.
 *
 * It uses the repo's own socket shim and event contract and writes the same Redis entries
 * and rows, so only the loop differs. Configured like the collector: SOCKET_PATH,
 * REDIS_URL, DATABASE_URL, BATCH_MAX_SIZE, BATCH_FLUSH_INTERVAL, REDIS_STREAM_MAXLEN. On
 * SIGTERM it stops receiving, flushes the batch, and prints a `stopped:` line in the
 * collector's format.
 *
 * @module
 */
import postgres from "postgres";
import { createClient } from "redis";
import {
  BatchReceiver,
  bindDatagramSocket,
  closeSocket,
  unlinkSocket,
} from "../ffi/unix_datagram.ts";
import { decodeDatagram } from "../src/datagram.ts";
import type { MiningEvent } from "../src/events.ts";
import { SeqTracker } from "../src/seq_tracker.ts";
import { commandsFor } from "../src/sinks/redis/request.ts";

const env = Deno.env.toObject();
const socketPath = env.SOCKET_PATH ?? "/tmp/ckpool/events.sock";
const redisUrl = env.REDIS_URL ?? "redis://localhost:6379/0";
const databaseUrl = env.DATABASE_URL ??
  "postgresql://tbg:tbgdev2026@localhost:5432/thebitcoingame";
const batchMaxSize = Number(env.BATCH_MAX_SIZE || 500);
const flushIntervalMs = Number(env.BATCH_FLUSH_INTERVAL || 1) * 1000;
const streamMaxLen = Number(env.REDIS_STREAM_MAXLEN || 100_000);

const log = (message: string) => console.log(`${new Date().toISOString()} [baseline] ${message}`);

/** Epoch seconds (with microseconds) as an ISO timestamp PostgreSQL parses exactly. */
function isoMicros(ts: number): string {
  const seconds = Math.floor(ts);
  const micros = Math.round((ts - seconds) * 1e6);
  const base = new Date((seconds + Math.floor(micros / 1e6)) * 1000).toISOString().slice(0, 19);
  return `${base}.${String(micros % 1_000_000).padStart(6, "0")}Z`;
}

const redis = createClient({ url: redisUrl });
redis.on("error", (error: Error) => log(`redis error: ${error.message}`));
await redis.connect();
const sql = postgres(databaseUrl, { max: 4, onnotice: () => {}, fetch_types: false });

const counters = {
  received: 0,
  accepted: 0,
  invalid: 0,
  redisWritten: 0,
  redisDropped: 0,
  pgWritten: 0,
  pgRetried: 0,
  pgDropped: 0,
};
const seq = new SeqTracker();
let batch: MiningEvent[] = [];
const flushes = new Set<Promise<void>>();

const EVENT_CASTS = ["timestamptz", "", "", "", "bigint", "text::jsonb"];
const SHARE_CASTS = ["timestamptz", "", "", "float8", "float8", "bool", "", "", "", "bigint"];

/** `($n+1::cast, $n+2, ...)` for one row of a multi-row VALUES list. */
function row(offset: number, casts: readonly string[]): string {
  return `(${casts.map((cast, i) => `$${offset + i + 1}${cast ? `::${cast}` : ""}`).join(",")})`;
}

async function insert(events: MiningEvent[]): Promise<void> {
  const eventParams: unknown[] = [];
  const eventRows: string[] = [];
  const shareParams: unknown[] = [];
  const shareRows: string[] = [];
  for (const event of events) {
    const ts = isoMicros(event.ts);
    eventRows.push(row(eventParams.length, EVENT_CASTS));
    eventParams.push(
      ts,
      event.event,
      event.source,
      event.emitter ?? null,
      event.seq ?? null,
      JSON.stringify(event.data),
    );
    if (event.event === "share_submitted") {
      const d = event.data as Record<string, unknown>;
      shareRows.push(row(shareParams.length, SHARE_CASTS));
      shareParams.push(
        ts,
        d.user,
        d.worker,
        d.diff,
        d.sdiff,
        d.accepted,
        d.ip,
        event.source,
        event.emitter ?? null,
        event.seq ?? null,
      );
    }
  }
  await sql.begin(async (tx) => {
    await tx.unsafe(
      `INSERT INTO mining_events (ts, event_type, source, emitter, seq, payload) VALUES ${
        eventRows.join(",")
      }`,
      eventParams as postgres.ParameterOrJSON<never>[],
    );
    if (shareRows.length > 0) {
      await tx.unsafe(
        `INSERT INTO shares (time, btc_address, worker_name, difficulty, share_diff, is_valid, ` +
          `ip_address, source, emitter, seq) VALUES ${shareRows.join(",")}`,
        shareParams as postgres.ParameterOrJSON<never>[],
      );
    }
  });
}

/** Takes the current batch and writes it; a failed batch goes back to the front (bounded). */
function flush(): Promise<void> {
  if (batch.length === 0) return Promise.resolve();
  const events = batch;
  batch = [];
  const done = insert(events).then(
    () => {
      counters.pgWritten += events.length;
    },
    (error: Error) => {
      log(`database write failed: ${error.message}`);
      counters.pgRetried++;
      if (batch.length + events.length < 2 * batchMaxSize) batch = events.concat(batch);
      else counters.pgDropped += events.length;
    },
  ).finally(() => flushes.delete(done));
  flushes.add(done);
  return done;
}

async function addToBatch(event: MiningEvent): Promise<void> {
  batch.push(event);
  if (batch.length >= batchMaxSize) await flush();
}

/** The original's publish: XADD to `mining:{event}` (+ PUBLISH for blocks), one at a time. */
async function publish(event: MiningEvent): Promise<void> {
  // The same commands as the collector's sink, each awaited before the next.
  for (const command of commandsFor(event, String(streamMaxLen))) {
    await redis.sendCommand(command);
  }
  counters.redisWritten++;
}

const flushTimer = setInterval(() => void flush(), flushIntervalMs);
let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => stopping = true);
}

const rmemDefault = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_default").trim());
const socket = bindDatagramSocket(socketPath, {
  mode: 0o666,
  receiveBufferBytes: rmemDefault,
});
// One datagram per call, waiting at most 5 ms so a stop is noticed.
const receiver = new BatchReceiver(socket.fd, 1, 64 * 1024, 5);
log(`listening on ${socketPath} (one datagram at a time, DB batches of ${batchMaxSize})`);

const yieldToLoop = () => new Promise((resolve) => setTimeout(resolve, 0));
while (!stopping) {
  // Blocks for at most 5 ms, then lets timers and I/O run, like an idle asyncio loop.
  if (receiver.receive(true) === 0) {
    await yieldToLoop();
    continue;
  }
  const { bytes, truncated } = receiver.datagram(0);
  counters.received++;
  const result = decodeDatagram(bytes, truncated);
  if (!result.ok) {
    counters.invalid++;
    continue;
  }
  const event = result.event;
  counters.accepted++;
  if (event.seq !== undefined) seq.observe(event.emitter ?? event.source, event.seq);
  try {
    await Promise.all([publish(event), addToBatch(event)]);
  } catch (error) {
    // The original logged the failure and moved on: the event is not in Redis.
    counters.redisDropped++;
    log(`redis write failed: ${(error as Error).message}`);
  }
}

clearInterval(flushTimer);
closeSocket(socket.fd);
unlinkSocket(socketPath);
await Promise.all(flushes);
await flush();
const pendingDb = batch.length;
log(
  `stopped: received=${counters.received} accepted=${counters.accepted} ` +
    `invalid=${counters.invalid} lost=${seq.lost} | redis: written=${counters.redisWritten} ` +
    `pending=0 retried=0 dropped=${counters.redisDropped} | postgres: ` +
    `written=${counters.pgWritten} pending=${pendingDb} retried=${counters.pgRetried} ` +
    `dropped=${counters.pgDropped}`,
);
await sql.end({ timeout: 5 });
await redis.close();
Deno.exit(pendingDb > 0 ? 1 : 0);
