/**
 * The collector benchmark (`deno task bench`).
 *
 * For every scenario (a sustained rate, or a burst sent as fast as possible) it starts a
 * fresh `redis-server` and `postgres` on loopback, the collector as a child process (the
 * `start` task's command, configured by environment variables) or the baseline (the
 * original design's loop, `bench/baseline_collector.ts`), runs the native sender
 * (`bench/sender.c`, compiled here with gcc), waits until both sinks stop growing, stops
 * the collector with SIGTERM, and prints one table: what was sent, what failed at the
 * sender, what the collector counted, what is in Redis and PostgreSQL, what was lost,
 * latency from send to visible in Redis and to committed in PostgreSQL, collector CPU and
 * peak RSS.
 *
 * Latency is exact per event, computed after the run, so nothing reads the sinks while
 * the load runs:
 * - Redis: an entry's ID is the Redis clock (ms) when the XADD ran, i.e. when the entry
 *   became visible; latency = ID time + 0.5 ms - `ts` (resolution 1 ms, +/-0.5 ms).
 *   Streams are left untrimmed (REDIS_STREAM_MAXLEN 100,000,000) so every entry is there.
 * - PostgreSQL: the server runs with `track_commit_timestamp = on`; latency =
 *   commit time of the row's transaction - `ts` (microseconds).
 *
 *   deno run --allow-all bench/main.ts [--rates 10000,50000,100000] [--duration 60]
 *     [--burst 50000] [--baseline] [--baseline-rates 10000,burst] [--no-collector]
 *     [--smoke] [--qlen 4096] [--json FILE] [--markdown FILE] [--strict]
 *
 * @module
 */
import postgres from "postgres";
import { createClient } from "redis";
import {
  hasTimescaledb,
  psqlPath,
  type Service,
  startPostgres,
  startRedis,
} from "../tests/support/services.ts";
import { loadSchema } from "../tests/support/services.ts";
import { type Ceiling, enableCommitTimestamps, postgresCeiling, redisCeiling } from "./ceilings.ts";

const root = new URL("../", import.meta.url).pathname;
const QLEN_PATH = "/proc/sys/net/unix/max_dgram_qlen";
const STREAM_MAXLEN = 100_000_000;
const isRoot = Deno.uid() === 0;

// ------------------------------------------------------------------------------------------
// Options
// ------------------------------------------------------------------------------------------

interface Options {
  rates: number[];
  durationS: number;
  burst: number;
  baseline: boolean;
  baselineRates: Set<string> | undefined;
  collector: boolean;
  smoke: boolean;
  qlen: number;
  json?: string;
  markdown?: string;
  strict: boolean;
}

const USAGE = `usage: deno task bench [options]
  --rates LIST          sustained rates in events/s (default 10000,50000,100000)
  --duration S          seconds per sustained rate (default 60)
  --burst N             events in the as-fast-as-possible burst, 0 for none (default 50000)
  --baseline            also run the original design's loop (bench/baseline_collector.ts)
  --baseline-rates LIST which scenarios the baseline runs, e.g. 10000,burst (default: all)
  --no-collector        run only the baseline
  --smoke               short CI run: 5000 events at 5000/s and a 5000 burst; exits 1 on
                        any loss or failure
  --qlen N              net.unix.max_dgram_qlen for the run (root only; default 4096)
  --json FILE           also write every result as JSON
  --markdown FILE       also write the tables as Markdown
  --strict              exit 1 if any event was lost (implied by --smoke)
Environment variables such as BATCH_MAX_SIZE or BATCH_FLUSH_INTERVAL pass through to the
collector.`;

function parseOptions(args: string[]): Options {
  const options: Options = {
    rates: [10_000, 50_000, 100_000],
    durationS: 60,
    burst: 50_000,
    baseline: false,
    baselineRates: undefined,
    collector: true,
    smoke: false,
    qlen: 4096,
    strict: false,
  };
  const value = (i: number) => {
    const v = args[i + 1];
    if (v === undefined) throw new Error(`${args[i]} needs a value\n${USAGE}`);
    return v;
  };
  const positive = (raw: string, name: string) => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: not a number: ${raw}`);
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].split("=", 2);
    if (inline !== undefined) args.splice(i + 1, 0, inline);
    switch (flag) {
      case "--rates":
        options.rates = value(i).split(",").filter(Boolean).map((r) => positive(r, flag));
        i++;
        break;
      case "--duration":
        options.durationS = positive(value(i++), flag);
        break;
      case "--burst":
        options.burst = Math.floor(positive(value(i++), flag));
        break;
      case "--baseline":
        options.baseline = true;
        break;
      case "--baseline-rates":
        options.baseline = true;
        options.baselineRates = new Set(value(i++).split(",").filter(Boolean));
        break;
      case "--no-collector":
        options.collector = false;
        options.baseline = true;
        break;
      case "--smoke":
        options.smoke = true;
        options.strict = true;
        break;
      case "--qlen":
        options.qlen = Math.floor(positive(value(i++), flag));
        break;
      case "--json":
        options.json = value(i++);
        break;
      case "--markdown":
        options.markdown = value(i++);
        break;
      case "--strict":
        options.strict = true;
        break;
      case "--help":
      case "-h":
        console.log(USAGE);
        Deno.exit(0);
        break;
      default:
        throw new Error(`unknown option ${args[i]}\n${USAGE}`);
    }
  }
  if (options.smoke) {
    options.rates = [5000];
    options.durationS = 1;
    options.burst = 5000;
  }
  return options;
}

// ------------------------------------------------------------------------------------------
// Scenarios and results
// ------------------------------------------------------------------------------------------

type Design = "collector" | "baseline";

interface Scenario {
  readonly name: string;
  readonly design: Design;
  /** Events per second; 0 = as fast as the sender can. */
  readonly rate: number;
  readonly count: number;
}

interface SenderTotals {
  attempted: number;
  sent: number;
  failed: number;
  failed_eagain: number;
  failed_other: number;
  last_errno: number;
  elapsed: number;
  rate: number;
  sndbuf: number;
  /** The sender's own CPU time (user + system), seconds. */
  cpu: number;
  /** `ts` of the last event the kernel took (0 if none). */
  last_ts: number;
  by_type: Record<string, { sent: number; failed: number }>;
}

interface Latency {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

interface StopLine {
  received: number;
  accepted: number;
  invalid: number;
  lost: number;
  /** Per sink (`redis`, `postgres`): written, pending, retried, dropped as printed. */
  sinks: Record<string, Record<string, number>>;
  text: string;
}

interface RunResult {
  scenario: Scenario;
  error?: string;
  sender?: SenderTotals;
  stop?: StopLine;
  exitCode?: number;
  redis?: {
    entries: number;
    byStream: Record<string, number>;
    tsRegressions: number;
    latencyMs?: Latency;
  };
  pg?: {
    events: number;
    eventsDistinctSeq: number;
    shares: number;
    sharesDistinctSeq: number;
    latencyMs?: Latency;
  };
  cpuSeconds?: number;
  cpuPercent?: number;
  /** The collector's CPU seconds by thread, over the same window (see {@link threadCpu}). */
  threadCpu?: Record<string, number>;
  /** CPU seconds over the same window: redis-server, every postgres process, the sender. */
  serverCpu?: { redis: number; postgres: number; sender: number };
  /** Whole machine over the same window: busy CPU seconds, and what was not ours. */
  machineCpu?: { busySeconds: number; capacitySeconds: number; othersSeconds: number };
  /** 1-minute load average when the run ended. */
  loadAvg?: number;
  peakRssMb?: number;
  /** From sender start until both sinks held everything they were going to get. */
  wallSeconds?: number;
  /** From sender end until both sinks held everything. */
  drainSeconds?: number;
  /** The collector's write rates against the servers' own, measured after the run. */
  ceilings?: { postgres?: Ceiling; redis?: Ceiling };
}

// ------------------------------------------------------------------------------------------
// Machine facts
// ------------------------------------------------------------------------------------------

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

async function commandText(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return (new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)).trim();
  } catch {
    return "unknown";
  }
}

interface Machine {
  nproc: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  qlenBefore: number | undefined;
  qlenUsed: number | undefined;
  deno: string;
  redis: string;
  postgres: string;
  loadAvg: string;
  date: string;
  revision: string;
}

async function gitRevision(): Promise<string> {
  const head = await commandText("git", ["-C", root, "rev-parse", "--short", "HEAD"]);
  if (!/^[0-9a-f]+$/.test(head)) return "unknown";
  const dirty = await commandText("git", [
    "-C",
    root,
    "status",
    "--porcelain",
    "--untracked-files=no",
  ]);
  return dirty ? `${head} + uncommitted changes to tracked files` : head;
}

async function describeMachine(): Promise<Omit<Machine, "qlenUsed">> {
  const cpuinfo = readText("/proc/cpuinfo") ?? "";
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(readText("/proc/meminfo") ?? "")?.[1] ?? 0);
  const qlen = readText(QLEN_PATH);
  return {
    nproc: Number(await commandText("nproc", [])) || navigator.hardwareConcurrency,
    cpuModel: model,
    memoryGiB: Math.round(memKb / 1024 / 1024 * 10) / 10,
    kernel: (readText("/proc/sys/kernel/osrelease") ?? "unknown").trim(),
    qlenBefore: qlen === undefined ? undefined : Number(qlen.trim()),
    deno: Deno.version.deno,
    redis: (await commandText("redis-server", ["--version"])).split(" ")[2]?.replace("v=", "") ??
      "unknown",
    postgres: await commandText(`${psqlPath().replace(/psql$/, "")}postgres`, ["--version"]),
    loadAvg: (readText("/proc/loadavg") ?? "").split(" ").slice(0, 3).join(" "),
    revision: await gitRevision(),
    date: new Date().toISOString(),
  };
}

// ------------------------------------------------------------------------------------------
// Process helpers
// ------------------------------------------------------------------------------------------

const CLK_TCK = 100;

/** utime + stime of a process (all threads), in seconds. */
function cpuSeconds(pid: number, path = `/proc/${pid}/stat`): number | undefined {
  const stat = readText(path);
  if (!stat) return undefined;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** Names of the threads the collector does not name itself. */
const THREAD_LABELS: Record<string, string> = {
  "V8 DefaultWorke": "V8 helpers (GC, compiler)",
  "tokio-runtime-w": "I/O pool",
};

/**
 * CPU seconds of a process's threads, summed by name: the collector names its own threads
 * (`tbg-receive`, `tbg-postgres`); the first thread is `main`.
 */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(`/proc/${pid}/task`)];
  } catch {
    return out;
  }
  for (const entry of entries) {
    const comm = readText(`/proc/${pid}/task/${entry.name}/comm`)?.trim();
    const cpu = cpuSeconds(Number(entry.name), `/proc/${pid}/task/${entry.name}/stat`);
    if (comm === undefined || cpu === undefined) continue;
    const name = entry.name === String(pid) ? "main" : THREAD_LABELS[comm] ?? comm;
    out.set(name, (out.get(name) ?? 0) + cpu);
  }
  return out;
}

/** VmHWM (peak resident set) of a process, in MiB. */
function peakRssMb(pid: number): number | undefined {
  const status = readText(`/proc/${pid}/status`);
  const kb = status && /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
  return kb ? Number(kb) / 1024 : undefined;
}

/** Busy and total jiffies of the whole machine, from /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const line = (readText("/proc/stat") ?? "").split("\n")[0];
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const total = values.reduce((a, b) => a + b, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  return { busy: total - idle, total };
}

/** Processes whose command line (arguments joined by spaces) satisfies `match`. */
function findPids(match: (cmdline: string) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const cmdline = readText(`/proc/${entry.name}/cmdline`);
    if (cmdline && match(cmdline.replaceAll("\0", " "))) pids.push(Number(entry.name));
  }
  return pids;
}

/** The postgres server listening on `port` and all its child processes. */
function postgresPids(port: number): number[] {
  const masters = findPids((c) => /\/postgres /.test(c) && c.includes(` -p ${port} `));
  const children: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = readText(`/proc/${entry.name}/stat`);
    const ppid = stat ? Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) : NaN;
    if (masters.includes(ppid)) children.push(Number(entry.name));
  }
  return [...masters, ...children];
}

/** CPU seconds per pid, for the pids that still exist. */
function cpuOf(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    const cpu = cpuSeconds(pid);
    if (cpu !== undefined) out.set(pid, cpu);
  }
  return out;
}

/** CPU used between two snapshots by the processes present in the second. */
function cpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let sum = 0;
  for (const [pid, cpu] of after) sum += cpu - (before.get(pid) ?? 0);
  return sum;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process with its output captured. */
class Child {
  readonly process: Deno.ChildProcess;
  #output = "";
  #exit: number | undefined;
  readonly #drained: Promise<unknown>;

  constructor(program: string, args: string[], env: Record<string, string>) {
    this.process = new Deno.Command(program, {
      args,
      cwd: root,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // BENCH_COLLECTOR_LOG=FILE keeps all its output (with STATS_INTERVAL=1, a line a second).
    const log = Deno.env.get("BENCH_COLLECTOR_LOG");
    const drain = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        if (log) Deno.writeTextFileSync(log, chunk, { append: true });
        this.#output += chunk;
        // Keep memory bounded if something logs without end.
        if (this.#output.length > 4_000_000) this.#output = this.#output.slice(-2_000_000);
      }
    };
    this.#drained = Promise.all([drain(this.process.stdout), drain(this.process.stderr)]);
    this.process.status.then((status) => this.#exit = status.code);
  }

  get pid(): number {
    return this.process.pid;
  }
  get output(): string {
    return this.#output;
  }
  get exited(): number | undefined {
    return this.#exit;
  }

  async waitFor(pattern: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.#output)) {
      if (this.#exit !== undefined) {
        throw new Error(`exited with code ${this.#exit} before ${pattern}:\n${this.tail()}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${pattern}:\n${this.tail()}`);
      }
      await sleep(20);
    }
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; returns the exit code. */
  async stop(timeoutMs: number): Promise<number> {
    const signal = (s: Deno.Signal) => {
      try {
        this.process.kill(s);
      } catch {
        // already gone
      }
    };
    signal("SIGTERM");
    const timer = setTimeout(() => signal("SIGKILL"), timeoutMs);
    const status = await this.process.status;
    clearTimeout(timer);
    await this.#drained;
    return status.code;
  }

  tail(lines = 30): string {
    return this.#output.trimEnd().split("\n").slice(-lines).join("\n");
  }
}

/** The `deno run ...` arguments of the `start` task in deno.json. */
/**
 * The `start` task's `deno run ...` arguments; `BENCH_DENO_FLAGS` (e.g. `--inspect=127.0.0.1:9229`
 * to profile it, see bench/profile.ts) go right after `run`.
 */
function startTaskArgs(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${root}deno.json`));
  const [program, command, ...args] = (config.tasks.start as string).split(/\s+/);
  if (program !== "deno") throw new Error(`unexpected start task: ${config.tasks.start}`);
  const extra = (Deno.env.get("BENCH_DENO_FLAGS") ?? "").split(/\s+/).filter(Boolean);
  return [command, ...extra, ...args];
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

// ------------------------------------------------------------------------------------------
// Sender
// ------------------------------------------------------------------------------------------

async function buildSender(dir: string): Promise<string> {
  const binary = `${dir}/sender`;
  await run("gcc", [
    "-O2",
    "-Wall",
    "-Wextra",
    "-o",
    binary,
    `${root}bench/sender.c`,
  ]);
  return binary;
}

/** Sender processes still running, killed on an interrupt. */
const runningSenders = new Set<Deno.ChildProcess>();

async function runSender(
  binary: string,
  socketPath: string,
  scenario: Scenario,
  emitter: string,
): Promise<SenderTotals> {
  const child = new Deno.Command(binary, {
    args: [socketPath, String(scenario.rate), String(scenario.count), emitter, "1"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  runningSenders.add(child);
  const out = await child.output().finally(() => runningSenders.delete(child));
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`sender failed: ${text}\n${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(text.split("\n").at(-1)!);
}

// ------------------------------------------------------------------------------------------
// Sinks: counting and latency
// ------------------------------------------------------------------------------------------

type RedisClient = ReturnType<typeof createClient>;

async function streamKeys(redis: RedisClient): Promise<string[]> {
  const keys = (await redis.sendCommand(["KEYS", "mining:*"])) as string[];
  return keys.sort();
}

async function redisEntries(redis: RedisClient): Promise<Record<string, number>> {
  const byStream: Record<string, number> = {};
  for (const key of await streamKeys(redis)) {
    byStream[key] = Number(await redis.sendCommand(["XLEN", key]));
  }
  return byStream;
}

/**
 * Walks a stream server-side and returns a histogram of (entry ID ms + 0.5) - ts*1000.
 * Buckets are keyed in 0.1 ms units: 0.1 ms wide below 100 ms, 1 ms below 10 s, 100 ms above.
 */
const LATENCY_SCRIPT = `
local key = KEYS[1]
local start = ARGV[1]
local limit = tonumber(ARGV[2])
local maxts = tonumber(ARGV[3])
local maxlat = tonumber(ARGV[4])
local hist = {}
local n, regress, last = 0, 0, nil
while n < limit do
  local entries = redis.call('XRANGE', key, start, '+', 'COUNT', 1000)
  if #entries == 0 then break end
  for i = 1, #entries do
    local id, fields = entries[i][1], entries[i][2]
    local ts
    for j = 1, #fields, 2 do
      if fields[j] == 'ts' then ts = tonumber(fields[j + 1]) break end
    end
    if ts then
      local ms = tonumber(string.match(id, '^(%d+)'))
      local lat = ms + 0.5 - ts * 1000
      if lat > maxlat then maxlat = lat end
      local b
      if lat < 100 then b = math.floor(lat * 10)
      elseif lat < 10000 then b = math.floor(lat) * 10
      else b = math.floor(lat / 100) * 1000 end
      hist[b] = (hist[b] or 0) + 1
      if ts < maxts then regress = regress + 1 else maxts = ts end
    end
    last = id
  end
  n = n + #entries
  start = '(' .. last
end
local out = {last or '', n, regress, string.format('%.6f', maxts), string.format('%.3f', maxlat)}
for b, c in pairs(hist) do
  out[#out + 1] = b
  out[#out + 1] = c
end
return out
`;

function percentile(hist: Map<number, number>, total: number, q: number): number {
  const target = Math.max(1, Math.ceil(total * q));
  let seen = 0;
  for (const bucket of [...hist.keys()].sort((a, b) => a - b)) {
    seen += hist.get(bucket)!;
    if (seen >= target) {
      // Report the bucket's upper edge, in ms.
      const width = bucket < 1000 ? 1 : bucket < 100_000 ? 10 : 1000;
      return (bucket + width) / 10;
    }
  }
  return NaN;
}

async function redisLatency(
  redis: RedisClient,
  keys: string[],
): Promise<{ latency?: Latency; regressions: number }> {
  const hist = new Map<number, number>();
  let total = 0;
  let regressions = 0;
  let max = -Infinity;
  for (const key of keys) {
    let start = "-";
    let maxTs = 0;
    while (true) {
      const reply = (await redis.sendCommand([
        "EVAL",
        LATENCY_SCRIPT,
        "1",
        key,
        start,
        "200000",
        String(maxTs),
        String(max === -Infinity ? -1e12 : max),
      ])) as (string | number)[];
      const [last, n, regress, maxTsText, maxLatText] = reply;
      total += Number(n);
      regressions += Number(regress);
      maxTs = Number(maxTsText);
      max = Math.max(max, Number(maxLatText));
      for (let i = 5; i < reply.length; i += 2) {
        const bucket = Number(reply[i]);
        hist.set(bucket, (hist.get(bucket) ?? 0) + Number(reply[i + 1]));
      }
      if (Number(n) < 200_000 || last === "") break;
      start = `(${last}`;
    }
  }
  if (total === 0) return { regressions };
  return {
    latency: {
      count: total,
      p50: Math.min(max, percentile(hist, total, 0.5)),
      p99: Math.min(max, percentile(hist, total, 0.99)),
      max,
    },
    regressions,
  };
}

async function pgCounts(sql: postgres.Sql) {
  const [events] = await sql<{ n: string; d: string }[]>`
    SELECT count(*) AS n, count(DISTINCT (emitter, seq)) AS d FROM mining_events`;
  const [shares] = await sql<{ n: string; d: string }[]>`
    SELECT count(*) AS n, count(DISTINCT (emitter, seq)) AS d FROM shares`;
  return {
    events: Number(events.n),
    eventsDistinctSeq: Number(events.d),
    shares: Number(shares.n),
    sharesDistinctSeq: Number(shares.d),
  };
}

async function pgLatency(sql: postgres.Sql): Promise<Latency | undefined> {
  const [row] = await sql<
    { n: string; p50: number | null; p99: number | null; max: number | null }[]
  >`
    SELECT count(lat) AS n,
      percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) AS p50,
      percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) AS p99,
      max(lat) AS max
    FROM (
      SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts)::float8 * 1000 AS lat
      FROM mining_events
    ) s`;
  if (!row || Number(row.n) === 0 || row.p50 === null) return undefined;
  return { count: Number(row.n), p50: row.p50, p99: row.p99!, max: row.max! };
}

// ------------------------------------------------------------------------------------------
// One scenario
// ------------------------------------------------------------------------------------------

function parseStopLine(output: string): StopLine | undefined {
  const match = /stopped: "?(received=(\d+) accepted=(\d+) invalid=(\d+) lost=(\d+)[^\n"]*)/
    .exec(output);
  if (!match) return undefined;
  const text = match[1];
  const sinks: Record<string, Record<string, number>> = {};
  for (const part of text.split("|").slice(1)) {
    const name = /^\s*(\w+):/.exec(part)?.[1];
    if (!name) continue;
    sinks[name] = Object.fromEntries(
      [...part.matchAll(/(\w+)=(\d+)/g)].map(([, key, value]) => [key, Number(value)]),
    );
  }
  return {
    received: Number(match[2]),
    accepted: Number(match[3]),
    invalid: Number(match[4]),
    lost: Number(match[5]),
    sinks,
    text,
  };
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

const cleanups = new Set<() => Promise<void>>();

async function runScenario(scenario: Scenario, sender: string, tmp: string): Promise<RunResult> {
  const result: RunResult = { scenario };
  const redisService = await startRedis();
  let pgService: Service | undefined;
  let child: Child | undefined;
  let redis: RedisClient | undefined;
  let sql: postgres.Sql | undefined;
  const cleanup = async () => {
    if (child && child.exited === undefined) await child.stop(5_000).catch(() => {});
    await redis?.close().catch(() => {});
    await sql?.end({ timeout: 2 }).catch(() => {});
    await redisService.stop().catch(() => {});
    await pgService?.stop().catch(() => {});
  };
  cleanups.add(cleanup);
  try {
    pgService = await startPostgres();
    await loadSchema(pgService);
    await enableCommitTimestamps(pgService);
    const socketPath = `${tmp}/${scenario.design}-${randomHex(4)}.sock`;
    const env: Record<string, string> = {
      SOCKET_PATH: socketPath,
      // A spool of its own per scenario: a spool left by an earlier run would be replayed.
      SPOOL_DIR: `${tmp}/${scenario.design}-${randomHex(4)}-spool`,
      // Room for a minute of 100k events/s that PostgreSQL cannot take as fast (about 370
      // bytes each); the default 1 GiB would evict part of that backlog.
      SPOOL_MAX_BYTES: Deno.env.get("SPOOL_MAX_BYTES") ?? String(8 * 1024 ** 3),
      METRICS_PORT: "0",
      REDIS_URL: redisService.url,
      DATABASE_URL: pgService.url,
      REDIS_STREAM_MAXLEN: String(STREAM_MAXLEN),
      STATS_INTERVAL: Deno.env.get("STATS_INTERVAL") ?? "10",
      LOG_LEVEL: Deno.env.get("LOG_LEVEL") ?? "INFO",
      NO_COLOR: "1",
    };
    const args = scenario.design === "collector"
      ? startTaskArgs()
      : ["run", "--allow-all", `${root}bench/baseline_collector.ts`];
    child = new Child(Deno.execPath(), args, env);
    await child.waitFor(/listening on/, 60_000);

    redis = createClient({ url: redisService.url });
    redis.on("error", () => {});
    await redis.connect();
    sql = postgres(pgService.url, { max: 1, onnotice: () => {} });

    const emitter = randomHex(8);
    // The servers this scenario just made (initdb, the schema) left dirty pages; written back
    // during the send, they can hold the receive thread's spool write(2) while the kernel queue
    // fills. The run measures the collector, not that writeback: flush it first.
    await run("sync", []);
    const redisPids = findPids((c) =>
      c.includes("redis-server") && c.includes(`:${redisService.port}`)
    );
    const collectorPid = child.pid;
    /** CPU counters of everything involved, and the whole machine, at one moment. */
    const snapshot = () => ({
      at: performance.now(),
      collector: cpuSeconds(collectorPid),
      threads: threadCpu(collectorPid),
      redis: cpuOf(redisPids),
      postgres: cpuOf(postgresPids(pgService!.port)),
      machine: machineJiffies(),
    });
    const start = snapshot();
    result.sender = await runSender(sender, socketPath, scenario, emitter);
    const tSent = performance.now();

    // Wait until both sinks hold everything sent (Redis: stream lengths; PostgreSQL: the
    // newest committed ts reached the last sent one, then a real count), or until neither
    // has grown for 5 s (events lost), or a deadline. Both probes are cheap (XLEN, and
    // max(ts) on the ts index); the full count runs once at the end.
    const expected = result.sender.sent;
    const lastTs = result.sender.last_ts;
    const deadline = tSent + 180_000;
    let lastState = "";
    let lastChange = snapshot();
    let end = lastChange;
    while (true) {
      if (child.exited !== undefined) throw new Error(`collector exited (${child.exited})`);
      const entries = Object.values(await redisEntries(redis)).reduce((a, b) => a + b, 0);
      const [{ t }] = await sql<{ t: number | null }[]>`
        SELECT extract(epoch FROM max(ts))::float8 AS t FROM mining_events`;
      const now = snapshot();
      if (entries >= expected && (t ?? 0) >= lastTs - 2e-6) {
        if ((await pgCounts(sql)).events >= expected) {
          end = now;
          break;
        }
      }
      const state = `${entries}/${t}`;
      if (state !== lastState) {
        lastState = state;
        lastChange = now;
      } else if (now.at - lastChange.at > 5_000) {
        end = lastChange;
        break;
      }
      if (now.at > deadline) {
        end = now;
        break;
      }
      await sleep(200);
    }
    result.wallSeconds = (end.at - start.at) / 1000;
    result.drainSeconds = Math.max(0, (end.at - tSent) / 1000);
    result.serverCpu = {
      redis: cpuDelta(start.redis, end.redis),
      postgres: cpuDelta(start.postgres, end.postgres),
      sender: result.sender.cpu,
    };
    result.peakRssMb = peakRssMb(collectorPid);
    result.loadAvg = Number((readText("/proc/loadavg") ?? "").split(" ")[0]);
    if (start.collector !== undefined && end.collector !== undefined) {
      result.cpuSeconds = end.collector - start.collector;
      result.cpuPercent = 100 * result.cpuSeconds / result.wallSeconds;
      result.threadCpu = Object.fromEntries(
        [...end.threads].map(([name, cpu]) => [name, cpu - (start.threads.get(name) ?? 0)]),
      );
      // Machine-wide busy time over the window, minus everything this run started.
      const busy = (end.machine.busy - start.machine.busy) / CLK_TCK;
      const ours = result.cpuSeconds + result.serverCpu.redis + result.serverCpu.postgres +
        result.serverCpu.sender;
      result.machineCpu = {
        busySeconds: busy,
        capacitySeconds: (end.machine.total - start.machine.total) / CLK_TCK,
        othersSeconds: Math.max(0, busy - ours),
      };
    }

    result.exitCode = await child.stop(60_000);
    result.stop = parseStopLine(child.output);
    if (!result.stop) {
      throw new Error(`no "stopped:" line in the collector's output:\n${child.tail()}`);
    }

    const byStream = await redisEntries(redis);
    const lat = await redisLatency(redis, Object.keys(byStream));
    result.redis = {
      entries: Object.values(byStream).reduce((a, b) => a + b, 0),
      byStream,
      tsRegressions: lat.regressions,
      latencyMs: lat.latency,
    };
    result.pg = { ...(await pgCounts(sql)), latencyMs: await pgLatency(sql) };
    // Last: the PostgreSQL ceiling empties the tables and copies the same rows back.
    result.ceilings = {
      redis: await redisCeiling(
        (command) => redis!.sendCommand(command),
        redisService.port,
        Object.keys(byStream),
      ),
      postgres: await postgresCeiling(sql, pgService.dir),
    };
    if (result.exitCode !== 0) {
      result.error = `collector exited with code ${result.exitCode}:\n${child.tail(10)}`;
    }
  } catch (error) {
    result.error = (error as Error).message;
    if (child) result.error += `\n--- collector output (tail) ---\n${child.tail(15)}`;
  } finally {
    await cleanup();
    cleanups.delete(cleanup);
  }
  return result;
}

// ------------------------------------------------------------------------------------------
// Reporting
// ------------------------------------------------------------------------------------------

const int = (n: number | undefined) => n === undefined ? "n/a" : n.toLocaleString("en-US");
const fixed = (n: number | undefined, digits = 1) =>
  n === undefined || Number.isNaN(n) ? "n/a" : n.toFixed(digits);
const ms = (n: number | undefined) =>
  n === undefined ? "n/a" : n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${n.toFixed(1)} ms`;

interface Losses {
  sender: number;
  collector: number;
  redis: number;
  pg: number;
  shares: number;
  any: boolean;
}

function losses(r: RunResult): Losses | undefined {
  if (!r.sender || !r.redis || !r.pg || !r.stop) return undefined;
  const attempted = r.sender.attempted;
  const shares = r.sender.by_type.share_submitted;
  const l = {
    sender: r.sender.failed,
    collector: r.stop.lost,
    redis: Math.max(0, attempted - r.redis.entries),
    pg: Math.max(0, attempted - r.pg.eventsDistinctSeq),
    shares: Math.max(0, shares.sent + shares.failed - r.pg.sharesDistinctSeq),
  };
  return { ...l, any: Object.values(l).some((n) => n > 0) };
}

function scenarioLabel(s: Scenario): string {
  return s.rate > 0
    ? `${int(s.rate)} events/s for ${fixed(s.count / s.rate, 0)} s`
    : `burst of ${int(s.count)} events, as fast as possible`;
}

function runTable(r: RunResult): string {
  const s = r.sender;
  const l = losses(r);
  const rows: [string, string][] = [];
  rows.push(["design", r.scenario.design]);
  if (s) {
    rows.push(["sent (attempted, seq 1..N)", int(s.attempted)]);
    rows.push([
      "sender: achieved rate",
      `${int(Math.round(s.rate))} events/s in ${fixed(s.elapsed, 2)} s`,
    ]);
    rows.push([
      "sender: failed sends (EAGAIN/other)",
      `${int(s.failed)} (${int(s.failed_eagain)}/${int(s.failed_other)})`,
    ]);
  }
  if (r.stop) {
    rows.push(["collector: received", int(r.stop.received)]);
    rows.push(["collector: invalid", int(r.stop.invalid)]);
    rows.push(["collector: lost (seq gaps)", int(r.stop.lost)]);
    const sinkStat = (key: string) =>
      ["redis", "postgres"].map((name) => int(r.stop!.sinks[name]?.[key])).join(" / ");
    rows.push(["collector: written to redis / postgres", sinkStat("written")]);
    rows.push(["collector: dropped by redis / postgres sink", sinkStat("dropped")]);
    rows.push(["collector: retried writes redis / postgres", sinkStat("retried")]);
    rows.push(["collector: left in the spool at stop redis / postgres", sinkStat("behind")]);
    rows.push(["collector: lost to a full spool redis / postgres", sinkStat("lost")]);
  }
  if (r.redis) {
    rows.push(["Redis: stream entries (XLEN sum)", int(r.redis.entries)]);
  }
  if (r.pg) {
    rows.push([
      "PostgreSQL: mining_events rows (distinct seq)",
      `${int(r.pg.events)} (${int(r.pg.eventsDistinctSeq)})`,
    ]);
    rows.push([
      "PostgreSQL: shares rows (distinct seq)",
      `${int(r.pg.shares)} (${int(r.pg.sharesDistinctSeq)})`,
    ]);
  }
  if (l) {
    rows.push([
      "LOST: in Redis / in PostgreSQL / shares",
      `${int(l.redis)} / ${int(l.pg)} / ${int(l.shares)}`,
    ]);
  }
  const lat = (x: Latency | undefined) => x ? `${ms(x.p50)} / ${ms(x.p99)} / ${ms(x.max)}` : "n/a";
  if (r.redis) rows.push(["latency send→Redis p50/p99/max", lat(r.redis.latencyMs)]);
  if (r.pg) rows.push(["latency send→PostgreSQL commit p50/p99/max", lat(r.pg.latencyMs)]);
  if (r.cpuSeconds !== undefined) {
    rows.push([
      "collector CPU",
      `${fixed(r.cpuSeconds, 2)} s = ${fixed(r.cpuPercent, 0)}% of one core over ${
        fixed(r.wallSeconds, 1)
      } s`,
    ]);
  }
  if (r.cpuSeconds !== undefined && r.stop?.received) {
    rows.push(["collector CPU per event", `${fixed(cpuPerEventUs(r), 1)} µs`]);
  }
  if (r.threadCpu && r.wallSeconds) {
    const byThread = Object.entries(r.threadCpu).filter(([, cpu]) => cpu >= 0.005)
      .sort((a, b) => b[1] - a[1])
      .map(([name, cpu]) => `${name} ${fixed(100 * cpu / r.wallSeconds!, 1)}%`);
    rows.push(["collector CPU by thread (% of one core)", byThread.join(", ")]);
  }
  const share = (c: Ceiling | undefined) =>
    c
      ? `${int(Math.round(c.collector))} / ${int(Math.round(c.server))} events/s = ${
        ceilingShare(c)
      }`
      : "n/a";
  if (r.ceilings) {
    rows.push(["PostgreSQL: collector / server's own COPY", share(r.ceilings.postgres)]);
    rows.push(["Redis: collector / pipelined XADD", share(r.ceilings.redis)]);
  }
  if (r.serverCpu && r.wallSeconds) {
    const pct = (x: number) => `${fixed(x, 1)} s (${fixed(100 * x / r.wallSeconds!, 0)}%)`;
    rows.push([
      "CPU redis-server / postgres / sender",
      `${pct(r.serverCpu.redis)} / ${pct(r.serverCpu.postgres)} / ${pct(r.serverCpu.sender)}`,
    ]);
  }
  if (r.machineCpu) {
    rows.push([
      "machine busy / capacity; busy not from this run",
      `${fixed(r.machineCpu.busySeconds, 1)} s / ${fixed(r.machineCpu.capacitySeconds, 1)} s; ${
        fixed(r.machineCpu.othersSeconds, 1)
      } s (load avg ${fixed(r.loadAvg, 2)})`,
    ]);
  }
  if (r.peakRssMb !== undefined) {
    rows.push(["collector peak RSS (VmHWM)", `${fixed(r.peakRssMb, 1)} MB`]);
  }
  if (r.drainSeconds !== undefined) {
    rows.push(["drain after the sender finished", `${fixed(r.drainSeconds, 2)} s`]);
  }
  if (r.exitCode !== undefined) rows.push(["collector exit code", String(r.exitCode)]);
  if (r.error) rows.push(["ERROR", r.error.split("\n")[0]]);
  const width = Math.max(...rows.map(([k]) => k.length));
  const vwidth = Math.max(...rows.map(([, v]) => v.length));
  const title = `### ${r.scenario.design}: ${scenarioLabel(r.scenario)}${
    l ? (l.any ? "  — EVENTS LOST" : "  — zero lost") : ""
  }`;
  return [
    title,
    "",
    `| ${"metric".padEnd(width)} | ${"value".padEnd(vwidth)} |`,
    `| ${"-".repeat(width)} | ${"-".repeat(vwidth)} |`,
    ...rows.map(([k, v]) => `| ${k.padEnd(width)} | ${v.padEnd(vwidth)} |`),
  ].join("\n");
}

const ceilingShare = (c: Ceiling | undefined) =>
  c ? `${fixed(100 * c.collector / c.server, 0)}%` : "n/a";

/** Collector CPU, all threads, per event received, in microseconds. */
function cpuPerEventUs(r: RunResult): number | undefined {
  if (r.cpuSeconds === undefined || !r.stop?.received) return undefined;
  return 1e6 * r.cpuSeconds / r.stop.received;
}

function summaryTable(results: RunResult[]): string {
  const header = [
    "scenario",
    "design",
    "sent",
    "sender failed",
    "in Redis",
    "in PG",
    "lost (max of sinks)",
    "Redis p99",
    "PG p99",
    "CPU %",
    "CPU µs/event",
    "PG % of COPY",
    "Redis % of XADD",
    "peak RSS MB",
  ];
  const lines = results.map((r) => {
    const l = losses(r);
    return [
      r.scenario.name,
      r.scenario.design,
      int(r.sender?.attempted),
      int(r.sender?.failed),
      int(r.redis?.entries),
      int(r.pg?.eventsDistinctSeq),
      l
        ? `${int(Math.max(l.redis, l.pg))} (${
          fixed(100 * Math.max(l.redis, l.pg) / r.sender!.attempted, 2)
        }%)`
        : (r.error ? "ERROR" : "n/a"),
      ms(r.redis?.latencyMs?.p99),
      ms(r.pg?.latencyMs?.p99),
      fixed(r.cpuPercent, 0),
      fixed(cpuPerEventUs(r), 1),
      ceilingShare(r.ceilings?.postgres),
      ceilingShare(r.ceilings?.redis),
      fixed(r.peakRssMb, 1),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  const out = [fmt(header), fmt(widths.map((w) => "-".repeat(w))), ...lines.map(fmt)];

  // Ratios between the two designs, scenario by scenario.
  const ratios: string[] = [];
  for (const c of results.filter((r) => r.scenario.design === "collector")) {
    const b = results.find((r) =>
      r.scenario.design === "baseline" && r.scenario.name === c.scenario.name
    );
    if (!b?.pg || !c.pg || !b.redis || !c.redis) continue;
    const delivered = (r: RunResult) => Math.min(r.redis!.entries, r.pg!.eventsDistinctSeq);
    const ratio = delivered(c) / Math.max(1, delivered(b));
    const lat = c.redis.latencyMs && b.redis.latencyMs
      ? `; Redis p99 ${ms(b.redis.latencyMs.p99)} (baseline) vs ${ms(c.redis.latencyMs.p99)}`
      : "";
    ratios.push(
      `- ${c.scenario.name}: collector delivered ${int(delivered(c))}, baseline ${
        int(delivered(b))
      } → ${fixed(ratio, 2)}×${lat}`,
    );
  }
  if (ratios.length > 0) out.push("", "Collector vs baseline (events in both sinks):", ...ratios);
  return out.join("\n");
}

function targetChecks(results: RunResult[]): string[] {
  const lines: string[] = [];
  const check = (ok: boolean, text: string) => lines.push(`- [${ok ? "x" : " "}] ${text}`);
  for (const r of results.filter((r) => r.scenario.design === "collector")) {
    const l = losses(r);
    if (!l) continue;
    if (r.scenario.rate >= 100_000) {
      check(!l.any, `${r.scenario.name}: zero lost anywhere`);
      if (r.peakRssMb !== undefined) {
        check(r.peakRssMb < 150, `${r.scenario.name}: peak RSS ${fixed(r.peakRssMb)} MB < 150 MB`);
      }
    } else if (r.scenario.rate === 0) {
      check(!l.any, `${r.scenario.name}: zero lost`);
    } else if (r.scenario.rate === 10_000) {
      const redisP99 = r.redis?.latencyMs?.p99;
      const pgP99 = r.pg?.latencyMs?.p99;
      check(
        redisP99 !== undefined && redisP99 < 5,
        `${r.scenario.name}: p99 send→Redis ${ms(redisP99)} < 5 ms`,
      );
      check(
        pgP99 !== undefined && pgP99 < 1500,
        `${r.scenario.name}: p99 send→PostgreSQL ${ms(pgP99)} < 1.5 s`,
      );
    }
  }
  return lines;
}

function header(machine: Machine, options: Options, senderSndbuf?: number): string {
  return [
    `## Collector benchmark, ${machine.date}`,
    "",
    `- command: \`deno task bench ${Deno.args.join(" ")}\``.replace(/ `$/, "`"),
    `- machine: ${machine.nproc} CPUs (${machine.cpuModel}), ${machine.memoryGiB} GiB RAM, ` +
    `kernel ${machine.kernel}, load average at start ${machine.loadAvg}`,
    `- net.unix.max_dgram_qlen: ${machine.qlenUsed ?? "unknown"} during the run (was ${
      machine.qlenBefore ?? "unknown"
    })${senderSndbuf ? `; sender SO_SNDBUF granted ${int(senderSndbuf)} bytes` : ""}`,
    `- code: git ${machine.revision}`,
    `- deno ${machine.deno}, redis-server ${machine.redis}, ${machine.postgres} ` +
    `(fsync=off, synchronous_commit=off as in tests; ` +
    `${hasTimescaledb() ? "TimescaleDB preloaded, its background jobs off" : "no TimescaleDB"})`,
    `- ${options.smoke ? "smoke run" : `sustained runs of ${options.durationS} s`}; ` +
    `latency to Redis from entry IDs (1 ms resolution, ±0.5 ms), to PostgreSQL from ` +
    `commit timestamps (exact), both over every event`,
  ].join("\n");
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------

function setQlen(value: number): void {
  Deno.writeTextFileSync(QLEN_PATH, `${value}\n`);
}

async function main(): Promise<number> {
  const options = parseOptions([...Deno.args]);
  const described = await describeMachine();
  const machine: Machine = { ...described, qlenUsed: described.qlenBefore };

  let restoreQlen: (() => void) | undefined;
  if (described.qlenBefore !== undefined && described.qlenBefore !== options.qlen) {
    if (isRoot) {
      const before = described.qlenBefore;
      setQlen(options.qlen);
      machine.qlenUsed = options.qlen;
      restoreQlen = () => {
        try {
          setQlen(before);
        } catch (error) {
          console.error(`could not restore ${QLEN_PATH} to ${before}: ${error}`);
        }
      };
    } else {
      console.error(
        `warning: ${QLEN_PATH} is ${described.qlenBefore}, not ${options.qlen}, and only root ` +
          `can change it: sysctl -w net.unix.max_dgram_qlen=${options.qlen}`,
      );
    }
  }

  const tmp = await Deno.makeTempDir({ prefix: "tbg-bench-" });
  let interrupted = false;
  const onSignal = async () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\ninterrupted: stopping the sender, the collector and the servers...");
    for (const sender of runningSenders) {
      try {
        sender.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const cleanup of cleanups) await cleanup();
    console.error("stopped everything");
    restoreQlen?.();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const results: RunResult[] = [];
  try {
    const sender = await buildSender(tmp);
    const scenarios: Scenario[] = [];
    const add = (name: string, rate: number, count: number) => {
      if (options.collector) scenarios.push({ name, design: "collector", rate, count });
      const key = rate > 0 ? String(rate) : "burst";
      if (options.baseline && (!options.baselineRates || options.baselineRates.has(key))) {
        scenarios.push({ name, design: "baseline", rate, count });
      }
    };
    for (const rate of options.rates) {
      add(`${rate / 1000}k/s`, rate, Math.round(rate * options.durationS));
    }
    if (options.burst > 0) add(`burst ${options.burst / 1000}k`, 0, options.burst);

    console.log(header(machine, options));
    console.log("");
    for (const scenario of scenarios) {
      console.error(
        `running ${scenario.design}: ${scenarioLabel(scenario)} (${int(scenario.count)} events)...`,
      );
      const result = await runScenario(scenario, sender, tmp);
      // An interrupt ends the process from its handler; print nothing half-done meanwhile.
      if (interrupted) await new Promise(() => {});
      results.push(result);
      console.log(runTable(result));
      if (result.error) console.log(`\n\`\`\`\n${result.error}\n\`\`\``);
      console.log("");
    }
  } finally {
    restoreQlen?.();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }

  const summary = summaryTable(results);
  const checks = targetChecks(results);
  console.log("### Summary\n");
  console.log(summary);
  if (checks.length > 0) console.log(`\nTargets:\n${checks.join("\n")}`);

  const sndbuf = results.find((r) => r.sender)?.sender?.sndbuf;
  if (options.markdown) {
    const text = [
      header(machine, options, sndbuf),
      "",
      ...results.map((r) => runTable(r) + "\n"),
      "### Summary",
      "",
      summary,
      ...(checks.length > 0 ? ["", "Targets:", ...checks] : []),
      "",
    ].join("\n");
    await Deno.writeTextFile(options.markdown, text);
  }
  if (options.json) {
    await Deno.writeTextFile(
      options.json,
      JSON.stringify(
        { machine, options: { ...options, baselineRates: undefined }, results },
        null,
        2,
      ),
    );
  }

  const broken = results.filter((r) => r.error);
  // The baseline is expected to lose events; only the collector's losses fail a strict run.
  const lossy = results.filter((r) => r.scenario.design === "collector" && losses(r)?.any);
  if (broken.length > 0) {
    console.error(
      `\n${broken.length} run(s) failed: ${broken.map((r) => r.scenario.name).join(", ")}`,
    );
    return 1;
  }
  if (options.strict && lossy.length > 0) {
    console.error(
      `\nevents lost in: ${lossy.map((r) => `${r.scenario.design} ${r.scenario.name}`).join(", ")}`,
    );
    return 1;
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main());
