import assert from "node:assert/strict";
import postgres from "postgres";
import { type MiningEvent, parseEvent } from "../../src/events.ts";
import type { PostgresSinkOptions } from "../../src/sinks/postgres.ts";
import { threadNice } from "../../ffi/libc.ts";
import { backgroundNice } from "../../src/receiver.ts";
import { startSpooledReceiver } from "../support/receiver.ts";
import { startThreadedSink } from "../../src/sinks/threaded.ts";
import { freePort, loadSchema, startPostgres } from "../support/services.ts";
import { waitFor } from "../support/wait.ts";

const POSTGRES_WORKER = new URL("../../src/sinks/postgres_worker.ts", import.meta.url);

function event(seq: number, data: Record<string, unknown>, type = "share_submitted"): MiningEvent {
  const parsed = parseEvent({
    event: type,
    ts: 1_764_000_000 + seq / 1000,
    source: "hosted",
    seq,
    emitter: "c0ffee",
    data,
  });
  assert.ok(parsed.ok, parsed.ok ? "" : parsed.detail);
  return parsed.event;
}

function share(seq: number): MiningEvent {
  return event(seq, {
    user: "tb1qexampleaddress",
    worker: `bitaxe "ü" \\${seq % 3}`,
    diff: 512,
    sdiff: 1000 + seq,
    accepted: seq % 5 !== 0,
    reject_reason: seq % 5 === 0 ? "Stale" : "",
  });
}

function postgresOptions(url: string): PostgresSinkOptions {
  return { url, batchMaxSize: 50, flushIntervalMs: 20 };
}

Deno.test("the PostgreSQL sink on its own thread writes every event once, in order", async () => {
  const db = await startPostgres();
  await loadSchema(db);
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  const fatal: string[] = [];
  const sink = startThreadedSink({
    name: "postgres",
    worker: POSTGRES_WORKER,
    options: postgresOptions(db.url),
    onFatal: (message) => fatal.push(message),
  });
  try {
    const nested = { deep: { list: [1, 2.5, "ü\u{1F600}", null, true] }, "__proto__": "kept" };
    const events = [
      ...Array.from({ length: 120 }, (_, i) => share(i + 1)),
      event(121, JSON.parse(JSON.stringify(nested)), "game_custom_event"),
    ];
    for (let i = 0; i < events.length; i += 7) sink.push(events.slice(i, i + 7));
    assert.ok(sink.stats().pending > 0, "events on their way to the thread count as pending");

    await sink.flush();

    const stats = sink.stats();
    assert.deepEqual(
      { written: stats.written, pending: stats.pending, dropped: stats.dropped, up: stats.up },
      { written: 121, pending: 0, dropped: 0, up: true },
    );
    assert.ok(stats.writeLatency.count >= 1 && stats.writeLatency.sum > 0);
    const rows = await sql`SELECT seq, event_id, payload FROM mining_events ORDER BY seq`;
    assert.deepEqual(rows.map((row) => Number(row.seq)), events.map((e) => e.seq));
    assert.deepEqual(rows.map((row) => row.event_id), events.map((e) => e.id));
    assert.deepEqual(rows.at(-1)!.payload, nested);
    const [shares] = await sql`
      SELECT count(*)::int AS n, count(*) FILTER (WHERE NOT is_valid)::int AS rejected,
        count(DISTINCT worker_name)::int AS workers
      FROM shares`;
    assert.deepEqual(shares, { n: 120, rejected: 24, workers: 3 });
    assert.deepEqual(fatal, []);
  } finally {
    await sink.close();
    await sql.end();
    await db.stop();
  }
  await sink.flush(); // resolves at once once closed
});

Deno.test("a sink thread's flush gives up when its signal aborts, and close still ends it", async () => {
  const fatal: string[] = [];
  const sink = startThreadedSink({
    name: "postgres",
    worker: POSTGRES_WORKER,
    options: postgresOptions(`postgres://postgres@127.0.0.1:${freePort()}/none`),
    onFatal: (message) => fatal.push(message),
  });
  try {
    sink.push([share(1), share(2)]);
    await sink.flush(AbortSignal.timeout(300));
    await waitFor(() => !sink.stats().up, { what: "the sink to report its backend down" });
    const stats = sink.stats();
    assert.equal(stats.pending, 2);
    assert.equal(stats.written, 0);
    assert.ok(stats.retried >= 1);
  } finally {
    await sink.close();
  }
  assert.deepEqual(fatal, []);
});

Deno.test("a sink thread that fails is reported through onFatal and stops taking calls", async () => {
  let fatal: string | undefined;
  const sink = startThreadedSink({
    name: "broken",
    worker: new URL("../support/failing_sink_worker.ts", import.meta.url),
    options: {},
    onFatal: (message) => fatal = message,
  });
  const message = await waitFor(() => fatal, { what: "onFatal" });
  assert.match(message, /broken sink thread failed: .*this sink cannot start/);
  sink.push([share(1)]);
  await sink.flush();
  await sink.close();
  assert.equal(sink.stats().pending, 1, "what the thread never took stays pending");
});

/** Nice value of one thread of this process, from `/proc/self/task/{tid}/stat`. */
function niceOf(tid: string): number {
  const stat = Deno.readTextFileSync(`/proc/self/task/${tid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
}

/** Nice values of every thread of this process. */
function threadNices(): number[] {
  return [...Deno.readDirSync("/proc/self/task")].map((task) => niceOf(task.name));
}

Deno.test("a sink thread runs below the receive thread, however many collectors ran before", async () => {
  // Other tests in this process start and stop receivers, each of which steps the main thread
  // down while it runs. Stepping down by a relative amount once left the main thread at 19
  // after a few of them, with no level left below it for a sink's thread.
  // This thread (under `deno test` not the process's first one) is the collector's main thread.
  const mainBefore = threadNice();
  const dir = await Deno.makeTempDir({ prefix: "tbg-nice-" });
  try {
    for (let i = 0; i < 5; i++) {
      const receiver = startSpooledReceiver({
        path: `${dir}/r${i}.sock`,
        mode: 0o600,
        receiveBufferBytes: 65_536,
        onBatch: () => {},
        onError: () => {},
      });
      await waitFor(() => threadNice() === backgroundNice(), {
        what: "the main thread stepping below the receive thread",
      });
      await receiver.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const mainNow = threadNice();
  assert.ok(mainNow <= backgroundNice(), `main thread at ${mainNow}, pushed down further`);
  if (Deno.uid() === 0) assert.equal(mainNow, mainBefore, "a stopped receiver gives it back");

  const atBackground = () => threadNices().filter((nice) => nice === backgroundNice()).length;
  const before = atBackground();
  const sink = startThreadedSink({
    name: "postgres",
    worker: POSTGRES_WORKER,
    options: postgresOptions(`postgres://postgres@127.0.0.1:${freePort()}/none`),
    onFatal: () => {},
  });
  try {
    await waitFor(() => atBackground() > before, {
      what: `a thread at nice ${backgroundNice()}, below the receive thread's`,
    });
  } finally {
    await sink.close();
  }
});
