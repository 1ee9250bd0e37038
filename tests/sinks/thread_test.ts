import assert from "node:assert/strict";
import postgres from "postgres";
import { type MiningEvent, parseEvent } from "../../src/events.ts";
import type { PostgresSinkOptions } from "../../src/sinks/postgres/sink.ts";
import { threadNice } from "../../ffi/libc.ts";
import { backgroundNice } from "../../src/source/receiver.ts";
import { startSpooledReceiver } from "../support/receiver.ts";
import { type SinkThread, startSinkThread } from "../../src/sinks/thread.ts";
import { Spool } from "../../src/buffer/spool.ts";
import { writable, type WritableSpool } from "../support/writable_spool.ts";
import { freePort, loadSchema, startPostgres } from "../support/services.ts";
import { waitFor } from "../support/wait.ts";

const POSTGRES_WORKER = new URL("../../src/sinks/postgres/worker.ts", import.meta.url);

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

const encoder = new TextEncoder();

/** Spools `events` in frames of seven, as datagrams. */
function spoolEvents(spool: WritableSpool, events: readonly MiningEvent[]): void {
  for (let i = 0; i < events.length; i += 7) {
    spool.append(
      events.slice(i, i + 7).map((e) => {
        const { id: _, ...sent } = e;
        return encoder.encode(JSON.stringify(sent));
      }),
    );
  }
}

/** A temporary spool with one reader, `postgres`, and a sink thread reading it. */
async function withSinkThread(
  options: { worker?: URL; sinkOptions: unknown; fatal?: (message: string) => void },
  test: (spool: WritableSpool, sink: SinkThread) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-sink-thread-" });
  const spool = writable(
    Spool.open({ dir, maxBytes: 64 << 20, fsyncIntervalMs: 1000, readers: ["postgres"] }),
  );
  const sink = startSinkThread({
    name: "postgres",
    worker: options.worker ?? POSTGRES_WORKER,
    options: options.sinkOptions,
    spool: {
      dir,
      signals: spool.signals.buffer,
      readerIndex: 0,
      position: spool.position("postgres"),
    },
    memoryLimitBytes: 1024 * 1024,
    lingerMs: 0,
    onFatal: options.fatal ?? (() => {}),
  });
  try {
    await test(spool, sink);
  } finally {
    await sink.close();
    await spool.close();
    await Deno.remove(dir, { recursive: true });
  }
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

Deno.test("the PostgreSQL sink on its own thread writes every spooled event once, in order", async () => {
  const db = await startPostgres();
  await loadSchema(db);
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  const fatal: string[] = [];
  try {
    await withSinkThread(
      { sinkOptions: postgresOptions(db.url), fatal: (message) => fatal.push(message) },
      async (spool, sink) => {
        const nested = { deep: { list: [1, 2.5, "ü\u{1F600}", null, true] }, "__proto__": "kept" };
        const events = [
          ...Array.from({ length: 120 }, (_, i) => share(i + 1)),
          event(121, JSON.parse(JSON.stringify(nested)), "game_custom_event"),
        ];
        spoolEvents(spool, events);
        await sink.drain(spool.head);

        const stats = sink.stats();
        assert.deepEqual(
          {
            written: stats.written,
            pending: stats.pending,
            dropped: stats.dropped,
            up: stats.up,
            position: stats.position,
          },
          { written: 121, pending: 0, dropped: 0, up: true, position: 121 },
        );
        assert.equal(spool.signals.acked(0), 121, "acknowledged through shared memory");
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
      },
    );
    assert.deepEqual(fatal, []);
  } finally {
    await sql.end();
    await db.stop();
  }
});

Deno.test("a sink thread's drain gives up when its signal aborts, and close still ends it", async () => {
  const fatal: string[] = [];
  await withSinkThread({
    sinkOptions: postgresOptions(`postgres://postgres@127.0.0.1:${freePort()}/none`),
    fatal: (message) => fatal.push(message),
  }, async (spool, sink) => {
    spoolEvents(spool, [share(1), share(2)]);
    await sink.drain(spool.head, AbortSignal.timeout(300));
    await waitFor(() => !sink.stats().up, { what: "the sink to report its backend down" });
    const stats = sink.stats();
    assert.equal(stats.pending, 2);
    assert.equal(stats.written, 0);
    assert.equal(stats.position, 0, "nothing acknowledged");
    assert.ok(stats.retried >= 1);
  });
  assert.deepEqual(fatal, []);
});

Deno.test("a sink thread that fails is reported through onFatal and stops taking calls", async () => {
  let fatal: string | undefined;
  await withSinkThread({
    worker: new URL("../support/failing_sink_worker.ts", import.meta.url),
    sinkOptions: {},
    fatal: (message) => fatal = message,
  }, async (spool, sink) => {
    const message = await waitFor(() => fatal, { what: "onFatal" });
    assert.match(message, /postgres sink thread failed: .*this sink cannot start/);
    spoolEvents(spool, [share(1)]);
    await sink.drain(spool.head); // resolves at once: the thread is gone
    assert.equal(sink.stats().position, 0, "what the thread never took stays in the spool");
  });
});

/** A file of each thread of this process (`/proc/self/task/{tid}/{file}`). */
function threadFiles(file: string): string[] {
  const texts: string[] = [];
  for (const task of Deno.readDirSync("/proc/self/task")) {
    try {
      texts.push(Deno.readTextFileSync(`/proc/self/task/${task.name}/${file}`));
    } catch (error) {
      // A thread that ended between the listing and the read (a worker of an earlier test).
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return texts;
}

/** Nice values of every thread of this process. */
function threadNices(): number[] {
  return threadFiles("stat").map((stat) =>
    Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16])
  );
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
  await withSinkThread({
    sinkOptions: postgresOptions(`postgres://postgres@127.0.0.1:${freePort()}/none`),
  }, async () => {
    await waitFor(() => atBackground() > before, {
      what: `a thread at nice ${backgroundNice()}, below the receive thread's`,
    });
    const names = threadFiles("comm").map((name) => name.trim());
    assert.ok(names.includes("tbg-postgres"), `thread names: ${names.join(", ")}`);
  });
});
