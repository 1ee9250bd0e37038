/**
 * The PostgreSQL sink draining a backlog (`deno task bench:drain`): a spool that already holds
 * `--events` datagrams (the mix and cardinality of `bench/sender.c`: 1,000 users x 7 workers),
 * the PostgreSQL sink on its thread as the collector runs it, from position 0 to the head. It
 * prints, per round, the sink's rate, the server's own COPY of the same rows (the ceiling of
 * `bench/ceilings.ts`) and the collector's share of it, the CPU per event of this process and
 * of the machine, and the peak RSS while draining. Each round has a fresh server and spool.
 *
 *   deno task bench:drain [--events 600000] [--rounds 3] [--memory-mb 16]
 *     [--max-write-events 20000] [--json FILE]
 *
 * `--memory-mb` is `SINK_MEMORY_BYTES` in MiB and `--max-write-events` the most events one
 * transaction takes, both at the collector's defaults unless given.
 *
 * @module
 */
import postgres from "postgres";
import { loadSchema, startPostgres } from "../tests/support/services.ts";
import { tableUpdates } from "../tests/support/table_updates.ts";
import { writable } from "../tests/support/writable_spool.ts";
import { Spool } from "../src/buffer/spool.ts";
import { startSinkThread } from "../src/sinks/thread.ts";
import { enableCommitTimestamps, postgresCeiling } from "./ceilings.ts";
import { senderMix } from "./sender_mix.ts";

const FRAME_RECORDS = 256;
const SPOOL_BYTES = 2 ** 32;

interface Round {
  events: number;
  drainSeconds: number;
  rate: number;
  copyRate: number;
  shareOfCopy: number;
  processCpuUsPerEvent: number;
  serverCpuUsPerEvent: number;
  machineCpuUsPerEvent: number;
  peakRssMb: number;
  /** Share of the updates of `workers` that were HOT (no index touched). */
  workersHot: number;
  loadAvg: string;
}

function option(name: string, fallback: number): number {
  const at = Deno.args.indexOf(`--${name}`);
  return at < 0 ? fallback : Number(Deno.args[at + 1]);
}

/** CPU seconds of this process, or of the whole machine (busy time of all cores). */
function processCpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
function machineBusySeconds(): number {
  const [, ...ticks] = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = ticks.map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}
/**
 * CPU seconds of a PostgreSQL cluster: its postmaster (with the children that ended) and
 * the children still running.
 */
function serverCpuSeconds(dataDir: string): number {
  const postmaster = Deno.readTextFileSync(`${dataDir}/postmaster.pid`).split("\n")[0];
  const stat = (pid: string) => {
    try {
      return Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
    } catch {
      return undefined; // ended meanwhile
    }
  };
  const own = stat(postmaster)!;
  let ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(own[i]), 0);
  for (const entry of Deno.readDirSync("/proc")) {
    const fields = /^\d+$/.test(entry.name) ? stat(entry.name) : undefined;
    if (fields?.[1] === postmaster) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

function peakRssMb(): number {
  const line = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+)/);
  return Number(line?.[1] ?? 0) / 1024;
}

/**
 * Writes the spool in a child process, so that this process's peak RSS is the sink's and
 * not the generator's.
 */
async function fill(dir: string, events: number): Promise<void> {
  const args = ["run", "--allow-all", import.meta.filename!, "--fill", dir, String(events)];
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "null" }).output();
  if (!out.success) throw new Error(`filling the spool failed (exit ${out.code})`);
}

async function fillSpool(dir: string, events: number): Promise<void> {
  const spool = writable(
    Spool.open({ dir, maxBytes: SPOOL_BYTES, fsyncIntervalMs: 1000, readers: ["postgres"] }),
  );
  const encoder = new TextEncoder();
  let frame: Uint8Array[] = [];
  for (const text of senderMix(events)) {
    frame.push(encoder.encode(text));
    if (frame.length === FRAME_RECORDS) frame = (spool.append(frame), []);
  }
  if (frame.length > 0) spool.append(frame);
  await spool.close();
}

async function round(events: number): Promise<Round> {
  const pg = await startPostgres();
  const dir = await Deno.makeTempDir({ prefix: "tbg-drain-" });
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  try {
    await enableCommitTimestamps(pg);
    await loadSchema(pg);
    await fill(dir, events);
    const spool = Spool.open({
      dir,
      maxBytes: SPOOL_BYTES,
      fsyncIntervalMs: 1000,
      readers: ["postgres"],
    });
    const cpu = processCpuSeconds();
    const server = serverCpuSeconds(`${pg.dir}/data`);
    const busy = machineBusySeconds();
    const started = performance.now();
    const thread = startSinkThread({
      name: "postgres",
      worker: new URL("../src/sinks/postgres/worker.ts", import.meta.url),
      options: {
        url: pg.url,
        batchMaxSize: 500,
        flushIntervalMs: 1000,
        maxWriteEvents: options.maxWriteEvents,
      },
      spool: { dir, signals: spool.signals.buffer, readerIndex: 0, position: 0 },
      memoryLimitBytes: options.memoryMb * 2 ** 20,
      lingerMs: 20,
      onFatal: (message) => console.error(`sink thread failed: ${message}`),
    });
    await thread.drain(spool.head);
    const drainSeconds = (performance.now() - started) / 1000;
    const used = {
      process: processCpuSeconds() - cpu,
      server: serverCpuSeconds(`${pg.dir}/data`) - server,
      machine: machineBusySeconds() - busy,
    };
    const rss = peakRssMb();
    const stats = thread.stats();
    await thread.close();
    await spool.close();
    if (stats.written !== events) {
      throw new Error(`the sink wrote ${stats.written} of ${events}: ${JSON.stringify(stats)}`);
    }
    const workersHot = await tableUpdates(sql, ["workers"])
      .then(([workers]) => workers.hot / workers.updated, () => NaN);
    const ceiling = await postgresCeiling(sql, pg.dir);
    const copyRate = ceiling?.server ?? NaN;
    const rate = events / drainSeconds;
    return {
      events,
      drainSeconds,
      rate,
      copyRate,
      shareOfCopy: rate / copyRate,
      processCpuUsPerEvent: (used.process / events) * 1e6,
      serverCpuUsPerEvent: (used.server / events) * 1e6,
      machineCpuUsPerEvent: (used.machine / events) * 1e6,
      peakRssMb: rss,
      workersHot,
      loadAvg: Deno.loadavg().map((n) => n.toFixed(2)).join(" "),
    };
  } finally {
    await sql.end();
    await pg.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

if (Deno.args[0] === "--fill") {
  await fillSpool(Deno.args[1], Number(Deno.args[2]));
  Deno.exit(0);
}
const options = {
  events: option("events", 600_000),
  rounds: option("rounds", 3),
  memoryMb: option("memory-mb", 16),
  maxWriteEvents: option("max-write-events", 20_000),
};
const results: Round[] = [];
console.log(
  "round | events/s | server COPY/s | share | us/event: this process, server, machine | peak RSS MB | workers HOT | load",
);
for (let i = 1; i <= options.rounds; i++) {
  const r = await round(options.events);
  results.push(r);
  console.log(
    `${i} | ${r.rate.toFixed(0)} | ${r.copyRate.toFixed(0)} | ${
      (r.shareOfCopy * 100).toFixed(1)
    }% | ` +
      `${r.processCpuUsPerEvent.toFixed(1)}, ${r.serverCpuUsPerEvent.toFixed(1)}, ` +
      `${r.machineCpuUsPerEvent.toFixed(1)} | ` +
      `${r.peakRssMb.toFixed(0)} | ${(r.workersHot * 100).toFixed(0)}% | ${r.loadAvg}`,
  );
}
const at = Deno.args.indexOf("--json");
if (at >= 0) Deno.writeTextFileSync(Deno.args[at + 1], JSON.stringify(results, null, 2));
