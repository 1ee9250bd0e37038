/**
 * One command for a working local pipeline, without Docker:
 *
 * 1. `.local/` in the repository (git-ignored; `DEV_DATA_DIR` puts it elsewhere) with
 *    `redis/` and `postgres/`; a PostgreSQL cluster is made once (`initdb`) and reused after;
 * 2. `redis-server` (port `DEV_REDIS_PORT`, 16379) and `postgres` (port `DEV_PG_PORT`, 15432)
 *    on 127.0.0.1, unless something already answers there (then that one is used);
 * 3. the database `thebitcoingame` and the schema (`sql/init.sql`, safe to load again);
 * 4. the collector with file watching (the `start` task's permissions, read from deno.json);
 * 5. the demo emitter (`scripts/demo_emitter.ts`; `--no-demo` turns it off).
 *
 * Ctrl-C (or SIGTERM) stops the emitter, then the collector (which flushes), then the servers
 * this command started; the data stays for the next run. Every child runs in a session of its
 * own (`setsid`), so the terminal's SIGINT reaches this script alone, which stops them in
 * order; under `deno task` it arrives twice (the terminal's, and the copy the task runner
 * forwards), and a repeat within a moment counts as the same press. A second press after
 * that kills everything. As root, PostgreSQL runs as the
 * `postgres` user (it refuses to run as root) through `setpriv`.
 *
 * ```sh
 * deno task dev [--no-demo] [--rate N] [--count N] [--duration S] [--block-every S] [--seed N]
 * ```
 *
 * @module
 */
import { relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { TIMESCALEDB_HOWTO, timescaledbInstalled, timescaledbServerArgs } from "./timescaledb.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url)).replace(/\/$/, "");
const DATABASE = "thebitcoingame";
const PG_USER = "postgres";
/** `sun_path` holds 107 bytes and a NUL. */
const SUN_PATH_MAX = 107;

const USAGE = `usage: deno task dev [options]

Starts redis-server and postgres with their data in .local/ (made once, reused after), loads
the schema, runs the collector with file watching and a demo emitter. Ctrl-C stops it all.

  --no-demo          do not start the demo emitter
  --rate N           demo: events per second (default 20)
  --count N          demo: stop after N events (the pipeline keeps running)
  --duration S       demo: stop after S seconds
  --block-every S    demo: mean seconds between blocks found (default 300)
  --seed N           demo: seed of its random generator
  --help             this text

Environment: DEV_DATA_DIR (default .local in the repository), DEV_REDIS_PORT (16379),
DEV_PG_PORT (15432), DEV_METRICS_PORT (19464: /healthz, /metrics), LOG_LEVEL (INFO), and any
collector variable (README.md). The collector's spool is in DEV_DATA_DIR/spool.`;

// ---------------------------------------------------------------------------------------------
// Output and errors
// ---------------------------------------------------------------------------------------------

function say(message: string): void {
  console.log(`dev: ${message}`);
}

/** An error whose message tells the operator what to do; shown without a stack. */
class Fatal extends Error {}

/** Raised when a stop was requested while starting up. */
class Stopped extends Error {}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// Stopping
// ---------------------------------------------------------------------------------------------

const stopController = new AbortController();
let resolveStopped: (reason: string) => void;
const stopRequested = new Promise<string>((resolve) => resolveStopped = resolve);
let signalCount = 0;
/** Signals this soon after the first are the same keypress delivered twice. */
const SAME_PRESS_MS = 500;

function requestStop(reason: string): void {
  if (!stopController.signal.aborted) {
    stopController.abort();
    resolveStopped(reason);
  }
}

function throwIfStopping(): void {
  if (stopController.signal.aborted) throw new Stopped();
}

/**
 * Calls `check` until it returns something truthy, every `intervalMs`, and returns it; throws
 * a {@link Fatal} after `timeoutMs` and {@link Stopped} once a stop is requested.
 */
async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  check: () => Promise<T | undefined | false | null> | T | undefined | false | null,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    throwIfStopping();
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Fatal(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    }
    await delay(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Finding programs
// ---------------------------------------------------------------------------------------------

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** `name` on PATH or in the sbin directories, or undefined. */
function which(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  dirs.push("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin");
  for (const dir of dirs) {
    if (isFile(`${dir}/${name}`)) return `${dir}/${name}`;
  }
  return undefined;
}

/** PostgreSQL's server programs: Debian's /usr/lib/postgresql/<v>/bin, newest first, or PATH. */
function postgresBinDirs(): { version: string; dir: string }[] {
  const found: { version: string; dir: string }[] = [];
  try {
    for (const entry of Deno.readDirSync("/usr/lib/postgresql")) {
      const dir = `/usr/lib/postgresql/${entry.name}/bin`;
      if (isFile(`${dir}/postgres`) && isFile(`${dir}/initdb`)) {
        found.push({ version: entry.name, dir });
      }
    }
  } catch {
    // not Debian's layout
  }
  found.sort((a, b) => Number(b.version) - Number(a.version));
  const postgres = which("postgres");
  const initdb = which("initdb");
  if (postgres && initdb) found.push({ version: "", dir: postgres.replace(/\/postgres$/, "") });
  return found;
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

const isRoot = Deno.uid() === 0;
/** util-linux `setsid`: children get their own session, so a Ctrl-C reaches only this script,
 * which then stops them in order. It execs in place, so a child's pid is the program's own. */
const SETSID = which("setsid");
let setprivPath: string | undefined;

/** The command line, run in its own session, and as the postgres user when we are root. */
function commandLine(cmd: string, args: string[], asPostgres: boolean): [string, string[]] {
  let argv = [cmd, ...args];
  if (asPostgres && isRoot) {
    argv = [setprivPath!, "--reuid=postgres", "--regid=postgres", "--init-groups", "--", ...argv];
  }
  if (SETSID) argv = [SETSID, ...argv];
  return [argv[0], argv.slice(1)];
}

interface RunResult {
  success: boolean;
  code: number;
  output: string;
}

/** Runs a command to completion and returns its status and output (stdout and stderr). */
async function run(
  cmd: string,
  args: string[],
  { asPostgres = false, env }: { asPostgres?: boolean; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const [program, argv] = commandLine(cmd, args, asPostgres);
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(program, {
      args: argv,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Fatal(`cannot run ${cmd}: ${(error as Error).message}`);
  }
  return {
    success: out.success,
    code: out.code,
    output: (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim(),
  };
}

/** A long-running child: a server, the collector or the demo emitter. */
class Child {
  readonly name: string;
  readonly process: Deno.ChildProcess;
  readonly pid: number;
  status: Deno.CommandStatus | undefined;
  readonly done: Promise<Deno.CommandStatus>;
  /** The last few KiB of what it printed, when captured. */
  #tail = "";

  constructor(
    name: string,
    cmd: string,
    args: string[],
    options: {
      asPostgres?: boolean;
      output: "capture" | "inherit" | "forward";
      env?: Record<string, string>;
      onText?: (text: string) => void;
    },
  ) {
    this.name = name;
    const [program, argv] = commandLine(cmd, args, options.asPostgres ?? false);
    const mode = options.output === "inherit" ? "inherit" : "piped";
    try {
      this.process = new Deno.Command(program, {
        args: argv,
        cwd: ROOT,
        env: options.env,
        stdin: "null",
        stdout: mode,
        stderr: mode,
      }).spawn();
    } catch (error) {
      throw new Fatal(`cannot start ${name}: ${(error as Error).message}`);
    }
    this.pid = this.process.pid;
    children.add(this);
    const drains: Promise<void>[] = [];
    if (mode === "piped") {
      const forward = options.output === "forward";
      drains.push(
        this.#drain(this.process.stdout, forward ? Deno.stdout : undefined, options.onText),
        this.#drain(this.process.stderr, forward ? Deno.stderr : undefined, options.onText),
      );
    }
    this.done = this.process.status.then(async (status) => {
      this.status = status;
      await Promise.all(drains);
      return status;
    });
  }

  async #drain(
    stream: ReadableStream<Uint8Array>,
    sink: { write(p: Uint8Array): Promise<number> } | undefined,
    onText: ((text: string) => void) | undefined,
  ): Promise<void> {
    const textDecoder = new TextDecoder();
    try {
      for await (const chunk of stream) {
        if (sink) {
          try {
            await writeAll(sink, chunk);
          } catch {
            // our own output is gone; keep draining
          }
        }
        const text = textDecoder.decode(chunk, { stream: true });
        this.#tail = (this.#tail + text).slice(-4000);
        onText?.(text);
      }
    } catch {
      // the stream broke with the process
    }
  }

  get running(): boolean {
    return this.status === undefined;
  }

  tail(): string {
    return this.#tail.trim();
  }

  signal(signal: Deno.Signal): void {
    if (!this.running) return;
    try {
      this.process.kill(signal);
    } catch {
      // already gone
    }
  }

  /** Sends `signal`, waits up to `timeoutMs`, then kills. */
  async stop(signal: Deno.Signal, timeoutMs: number): Promise<Deno.CommandStatus> {
    this.signal(signal);
    if (!(await settlesWithin(this.done, timeoutMs))) {
      say(`${this.name} did not stop within ${Math.round(timeoutMs / 1000)} s; killing it`);
      this.signal("SIGKILL");
    }
    return await this.done;
  }
}

const children = new Set<Child>();

async function writeAll(sink: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  let offset = 0;
  while (offset < bytes.length) offset += await sink.write(bytes.subarray(offset));
}

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `killed by ${status.signal}` : `exit code ${status.code}`;
}

function fileTail(path: string, lines = 15): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

function indent(text: string): string {
  return text ? "\n    " + text.split("\n").join("\n    ") : "";
}

// ---------------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------------

async function canConnect(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** Sends PING; returns the first reply line, or undefined when nothing listens. */
async function redisPing(port: number): Promise<string | undefined> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return undefined;
  }
  const timer = setTimeout(() => conn.close(), 2000);
  try {
    await conn.write(encoder.encode("PING\r\n"));
    const buffer = new Uint8Array(512);
    const n = await conn.read(buffer);
    return n === null ? "" : decoder.decode(buffer.subarray(0, n)).split("\r\n")[0];
  } catch {
    return "";
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the timer
    }
  }
}

function portFromEnv(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Fatal(`${name} must be a TCP port from 1 to 65535 (got ${JSON.stringify(raw)})`);
  }
  return port;
}

// ---------------------------------------------------------------------------------------------
// The collector's command line and output
// ---------------------------------------------------------------------------------------------

/**
 * The flags of a `deno run <flags> <script>` task in deno.json, so this script and the tasks
 * never drift apart; `fallback` when the task is absent (undefined: the task is required).
 */
function taskFlags(name: string, script: string, fallback?: string[]): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
  const task: unknown = config?.tasks?.[name];
  if (task === undefined && fallback) return fallback;
  const words = typeof task === "string" ? task.trim().split(/\s+/) : [];
  if (words[0] !== "deno" || words[1] !== "run" || words.at(-1) !== script) {
    throw new Fatal(
      `deno.json's ${name} task is not of the form "deno run <flags> ${script}" (${
        JSON.stringify(task)
      }); scripts/dev.ts reads its flags from there`,
    );
  }
  return words.slice(2, -1);
}

/** What a change restarts the collector for: its module graph inside the repository. */
const WATCHED = ["main.ts", "src", "ffi"];

/**
 * Runs the collector as the `start` task does, and restarts it when a file it is built from
 * changes. `deno run --watch` is not used: its restart ends the program without the SIGTERM
 * flush (events in flight are lost), and under deno 2.9 it does not exit once the collector
 * calls `Deno.exit` after a stop, so a stop would hang until killed.
 */
class CollectorRunner {
  readonly #args: string[];
  readonly #env: Record<string, string>;
  readonly #socket: string;
  readonly #stopped = new WeakSet<Child>();
  #child: Child | undefined;
  #listening = false;
  #carry = "";
  #closed = false;
  #watcher: Deno.FsWatcher | undefined;
  #restarting: Promise<void> = Promise.resolve();

  constructor(flags: string[], env: Record<string, string>, socket: string) {
    this.#args = ["run", ...flags, "main.ts"];
    this.#env = env;
    this.#socket = socket;
  }

  get command(): string {
    return `deno ${this.#args.join(" ")}`;
  }

  /** Starts the collector and waits until it listens; throws {@link Fatal} if it exits first. */
  async start(): Promise<void> {
    this.#listening = false;
    this.#carry = "";
    const startedAt = Date.now();
    const child = new Child("collector", Deno.execPath(), this.#args, {
      output: "forward",
      env: this.#env,
      onText: (text) => {
        this.#carry = (this.#carry + text).slice(-300);
        if (this.#carry.includes("listening on ")) this.#listening = true;
      },
    });
    this.#child = child;
    let up = false;
    child.done.then((status) => {
      if (up && !this.#stopped.has(child) && !this.#closed) {
        say(
          `the collector exited (${describeStatus(status)}); it starts again when main.ts or a ` +
            `file under src/ or ffi/ changes (Ctrl-C stops everything)`,
        );
      }
    });
    await waitUntil(`the collector to listen on ${this.#socket}`, 60_000, () => {
      if (!child.running) {
        throw new Fatal(
          `the collector stopped during start-up (${describeStatus(child.status!)}); its ` +
            `messages are above`,
        );
      }
      if (this.#listening) return true;
      try {
        const info = Deno.statSync(this.#socket);
        // A socket left by an earlier run is older than this start.
        return info.isSocket && (info.mtime?.getTime() ?? 0) >= startedAt - 1000;
      } catch {
        return false;
      }
    }, 50);
    up = true;
    say(`the collector (pid ${child.pid}) listens on ${this.#socket}`);
  }

  /** SIGTERM (the collector flushes both sinks, then exits); its exit code, 0 if none ran. */
  async stop(): Promise<number> {
    const child = this.#child;
    if (!child) return 0;
    this.#stopped.add(child);
    const grace = Number(Deno.env.get("SHUTDOWN_TIMEOUT") || 30) * 1000 + 15_000;
    const status = await child.stop("SIGTERM", grace);
    // Killed by our SIGTERM before it listened for it: nothing was in flight.
    if (status.signal === "SIGTERM") return 0;
    return status.signal ? 1 : status.code;
  }

  /** Restarts the collector whenever a watched `.ts` file changes, until {@link close}. */
  async watch(): Promise<void> {
    this.#watcher = Deno.watchFs(WATCHED.map((path) => `${ROOT}/${path}`), { recursive: true });
    let timer: ReturnType<typeof setTimeout> | undefined;
    for await (const event of this.#watcher) {
      const path = event.paths.find((p) => p.endsWith(".ts"));
      if (!path || event.kind === "access" || this.#closed) continue;
      clearTimeout(timer);
      timer = setTimeout(() => {
        this.#restarting = this.#restarting.then(() => this.#restart(path));
      }, 300);
    }
    clearTimeout(timer);
  }

  async #restart(path: string): Promise<void> {
    if (this.#closed) return;
    say(`${relative(ROOT, path)} changed: restarting the collector (it flushes first)`);
    const wasRunning = this.#child?.running ?? false;
    const code = await this.stop();
    if (wasRunning && code !== 0) say(`the collector exited with code ${code}`);
    if (this.#closed) return;
    try {
      await this.start();
    } catch (error) {
      if (this.#closed || error instanceof Stopped) return;
      if (!(error instanceof Fatal)) throw error;
      say(`${error.message}; fix it and save again`);
    }
  }

  /** Stops watching, then the collector; returns the collector's exit code. */
  async close(): Promise<number> {
    this.#closed = true;
    try {
      this.#watcher?.close();
    } catch {
      // already closed
    }
    const running = this.#child?.running ?? false;
    const code = await this.stop();
    await this.#restarting.catch(() => {});
    if (running) say(`the collector stopped (exit code ${code})`);
    return code;
  }
}

// ---------------------------------------------------------------------------------------------
// The steps
// ---------------------------------------------------------------------------------------------

interface Options {
  demo: boolean;
  demoArgs: string[];
  dataDir: string;
  redisPort: number;
  pgPort: number;
  metricsPort: number;
}

function parseOptions(args: string[]): Options | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        "no-demo": { type: "boolean" },
        rate: { type: "string" },
        count: { type: "string" },
        duration: { type: "string" },
        "block-every": { type: "string" },
        seed: { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new Fatal(`${(error as Error).message}\n\n${USAGE}`);
  }
  if (values.help) {
    console.log(USAGE);
    return undefined;
  }
  const demoArgs: string[] = [];
  for (const name of ["rate", "count", "duration", "block-every", "seed"] as const) {
    const raw = values[name];
    if (raw === undefined) continue;
    const value = Number(raw);
    const ok = name === "seed"
      ? Number.isInteger(value)
      : Number.isFinite(value) && value > 0 && (name !== "count" || Number.isInteger(value));
    if (!ok) throw new Fatal(`--${name} got ${JSON.stringify(raw)}; see --help`);
    demoArgs.push(`--${name}`, raw);
  }
  const dataDir = resolve(ROOT, Deno.env.get("DEV_DATA_DIR") || ".local");
  return {
    demo: !values["no-demo"],
    demoArgs,
    dataDir,
    redisPort: portFromEnv("DEV_REDIS_PORT", 16379),
    pgPort: portFromEnv("DEV_PG_PORT", 15432),
    metricsPort: portFromEnv("DEV_METRICS_PORT", 19464),
  };
}

/** What runs, for the summary and the stop. */
interface Stack {
  redis?: Child;
  postgres?: Child;
  collector?: CollectorRunner;
  watching?: Promise<void>;
  demo?: Child;
}

async function postgresIds(): Promise<{ uid: number; gid: number } | undefined> {
  const uid = await run("id", ["-u", "postgres"]);
  const gid = await run("id", ["-g", "postgres"]);
  if (!uid.success || !gid.success) return undefined;
  return { uid: Number(uid.output), gid: Number(gid.output) };
}

/** What to do about Redis: start `server`, or (undefined) use the one already there. */
async function planRedis(options: Options): Promise<string | undefined> {
  const port = options.redisPort;
  const reply = await redisPing(port);
  if (reply !== undefined) {
    if (reply.startsWith("+PONG") || reply.startsWith("-LOADING")) {
      say(`Redis already answers on 127.0.0.1:${port}; using it (not started, not stopped here)`);
      return undefined;
    }
    if (reply.startsWith("-NOAUTH")) {
      throw new Fatal(
        `the Redis on 127.0.0.1:${port} wants a password; stop it or set DEV_REDIS_PORT to a ` +
          `free port to get a local one`,
      );
    }
    throw new Fatal(
      `something that is not Redis answers on 127.0.0.1:${port} (${JSON.stringify(reply)}); ` +
        `stop it or set DEV_REDIS_PORT to a free port`,
    );
  }
  const server = which("redis-server");
  if (!server) {
    throw new Fatal(
      `redis-server not found: apt-get install redis-server (or start Redis yourself on ` +
        `127.0.0.1:${port} and run again)`,
    );
  }
  return server;
}

async function startRedis(options: Options, stack: Stack, server: string): Promise<void> {
  const { redisPort: port, dataDir } = options;
  const dir = `${dataDir}/redis`;
  const log = `${dir}/redis.log`;
  const child = new Child("redis-server", server, [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--appendonly",
    "yes",
    "--daemonize",
    "no",
    "--logfile",
    log,
  ], { output: "capture" });
  stack.redis = child;
  await waitUntil(`redis-server on 127.0.0.1:${port}`, 30_000, async () => {
    if (!child.running) {
      throw new Fatal(
        `redis-server stopped during start-up (${describeStatus(child.status!)}):` +
          indent(child.tail() || fileTail(log)) + `\n  (log: ${log})`,
      );
    }
    return (await redisPing(port))?.startsWith("+PONG");
  }, 50);
  say(`started redis-server (pid ${child.pid}) on 127.0.0.1:${port}; data and log in ${dir}`);
}

/** What to do about PostgreSQL; `bin` undefined: use the server already on the port. */
interface PostgresPlan {
  psql: string;
  bin?: { version: string; dir: string };
  clusterVersion: string;
}

/** Finds the programs and checks the data dir before anything is started. */
async function planPostgres(options: Options): Promise<PostgresPlan> {
  const { pgPort: port, dataDir } = options;
  const dir = `${dataDir}/postgres`;
  const data = `${dir}/data`;
  const bins = postgresBinDirs();
  const clientPsql = bins.map((b) => `${b.dir}/psql`).find(isFile) ?? which("psql");
  if (!clientPsql) {
    throw new Fatal("psql not found: apt-get install postgresql-client-15 (or postgresql-15)");
  }
  if (await canConnect(port)) {
    say(
      `something already answers on 127.0.0.1:${port}; using it as PostgreSQL ` +
        `(not started, not stopped here)`,
    );
    return { psql: clientPsql, clusterVersion: "" };
  }

  const versionFile = `${data}/PG_VERSION`;
  const clusterVersion = exists(versionFile) ? Deno.readTextFileSync(versionFile).trim() : "";
  const bin = clusterVersion ? bins.find((b) => b.version === clusterVersion) ?? bins[0] : bins[0];
  if (!bin) {
    throw new Fatal(
      `PostgreSQL not found (no /usr/lib/postgresql/*/bin/postgres, no postgres and initdb on ` +
        `PATH): apt-get install postgresql-15 (or start PostgreSQL yourself on 127.0.0.1:${port}, ` +
        `user postgres without a password, and run again)`,
    );
  }
  if (clusterVersion && bin.version && bin.version !== clusterVersion) {
    throw new Fatal(
      `the cluster in ${data} was made by PostgreSQL ${clusterVersion}, but only ` +
        `${bins.map((b) => b.version).join(", ")} is installed: apt-get install ` +
        `postgresql-${clusterVersion}, or remove ${data} to start afresh`,
    );
  }
  if (isRoot) {
    setprivPath = which("setpriv");
    if (!setprivPath) {
      throw new Fatal(
        "setpriv not found, and as root PostgreSQL must run as the postgres user: " +
          "apt-get install util-linux (or run as a normal user)",
      );
    }
    const ids = await postgresIds();
    if (!ids) {
      throw new Fatal(
        "running as root, and PostgreSQL refuses to run as root, but there is no postgres user " +
          "to run it as: apt-get install postgresql-15 creates one (or run as a normal user)",
      );
    }
    Deno.chownSync(dir, ids.uid, ids.gid);
    const access = await run("test", ["-w", dir, "-a", "-x", dir], { asPostgres: true });
    if (!access.success) {
      throw new Fatal(
        `the postgres user cannot write to ${dir}: a parent directory is closed to it. Make the ` +
          `parents searchable (chmod o+x) or set DEV_DATA_DIR to a directory it can reach, ` +
          `e.g. DEV_DATA_DIR=/var/tmp/tbg-dev`,
      );
    }
  }

  if (!clusterVersion && exists(data) && [...Deno.readDirSync(data)].length > 0) {
    throw new Fatal(
      `${data} is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it away and ` +
        `run again`,
    );
  }
  return { psql: clientPsql, bin, clusterVersion };
}

async function startPostgres(options: Options, stack: Stack, plan: PostgresPlan): Promise<void> {
  const { pgPort: port, dataDir } = options;
  const { bin, clusterVersion } = plan;
  if (!bin) return;
  const dir = `${dataDir}/postgres`;
  const data = `${dir}/data`;
  if (!clusterVersion) {
    say(`initdb: a new PostgreSQL cluster in ${data} (user postgres, trust auth: local only)`);
    const result = await run(`${bin.dir}/initdb`, [
      "-D",
      data,
      "-U",
      PG_USER,
      "--auth=trust",
      "-E",
      "UTF8",
      "--locale=C",
    ], { asPostgres: true });
    if (!result.success) throw new Fatal(`initdb failed:${indent(result.output)}`);
  } else {
    say(`reusing the PostgreSQL ${clusterVersion} cluster in ${data} (no initdb)`);
  }

  // The Unix socket goes next to the data; a path too long for sun_path means TCP only.
  const socketDir = `${dir}`;
  const socketFits = encoder.encode(`${socketDir}/.s.PGSQL.${port}`).length <= SUN_PATH_MAX;
  if (!socketFits) say(`${socketDir} is too long for a Unix socket path; PostgreSQL: TCP only`);
  const log = `${dir}/postgresql.log`;
  const child = new Child("postgres", `${bin.dir}/postgres`, [
    "-D",
    data,
    "-p",
    String(port),
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    `unix_socket_directories=${socketFits ? socketDir : ""}`,
    "-c",
    "logging_collector=on",
    "-c",
    `log_directory=${dir}`,
    "-c",
    "log_filename=postgresql.log",
    ...timescaledbServerArgs(bin.dir),
  ], { asPostgres: true, output: "capture" });
  stack.postgres = child;
  say(
    timescaledbInstalled(bin.dir)
      ? "TimescaleDB is installed: preloaded, the schema's TimescaleDB half runs"
      : `TimescaleDB is not installed: plain PostgreSQL (to get it: ${TIMESCALEDB_HOWTO})`,
  );
  const isReady = isFile(`${bin.dir}/pg_isready`) ? `${bin.dir}/pg_isready` : which("pg_isready");
  await waitUntil(`postgres on 127.0.0.1:${port}`, 60_000, async () => {
    if (!child.running) {
      throw new Fatal(
        `postgres stopped during start-up (${describeStatus(child.status!)}):` +
          indent(child.tail() || fileTail(log)) + `\n  (log: ${log})`,
      );
    }
    if (isReady) {
      return (await run(isReady, ["-q", "-h", "127.0.0.1", "-p", String(port), "-U", PG_USER]))
        .success;
    }
    return await canConnect(port);
  }, 100);
  say(`started postgres (pid ${child.pid}) on 127.0.0.1:${port}; log in ${log}`);
}

async function prepareDatabase(psql: string, port: number): Promise<void> {
  const connect = ["-X", "-h", "127.0.0.1", "-p", String(port), "-U", PG_USER];
  const quiet = { env: { PGOPTIONS: "-c client_min_messages=warning", PGCONNECT_TIMEOUT: "10" } };
  const found = await run(psql, [
    ...connect,
    "-d",
    "postgres",
    "-tAc",
    `SELECT 1 FROM pg_database WHERE datname = '${DATABASE}'`,
  ], quiet);
  if (!found.success) {
    throw new Fatal(
      `cannot use the PostgreSQL on 127.0.0.1:${port} as user ${PG_USER} without a password:` +
        `${indent(found.output)}\n  Stop it, or set DEV_PG_PORT to a free port to get a local one.`,
    );
  }
  if (found.output !== "1") {
    const created = await run(psql, [
      ...connect,
      "-d",
      "postgres",
      "-c",
      `CREATE DATABASE ${DATABASE}`,
    ], quiet);
    if (!created.success) {
      throw new Fatal(`CREATE DATABASE ${DATABASE} failed:${indent(created.output)}`);
    }
    say(`created database ${DATABASE}`);
  }
  const schema = `${ROOT}/sql/init.sql`;
  const loaded = await run(psql, [
    ...connect,
    "-d",
    DATABASE,
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-f",
    schema,
  ], quiet);
  if (!loaded.success) throw new Fatal(`loading sql/init.sql failed:${indent(loaded.output)}`);
  say(`schema loaded (sql/init.sql) into ${DATABASE}`);
}

function socketPathFor(dataDir: string): string {
  const path = `${dataDir}/events.sock`;
  if (encoder.encode(path).length <= SUN_PATH_MAX) return path;
  // A short, stable stand-in per data dir.
  let hash = 0x811c9dc5;
  for (const byte of encoder.encode(dataDir)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  const dir = `/tmp/tbg-dev-${Deno.uid()}-${hash.toString(16)}`;
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  say(
    `${path} is longer than the ${SUN_PATH_MAX} bytes a Unix socket path can hold; ` +
      `using ${dir}/events.sock instead`,
  );
  return `${dir}/events.sock`;
}

function startDemo(options: Options, stack: Stack, socket: string): void {
  const script = "scripts/demo_emitter.ts";
  const flags = taskFlags("demo", script, ["--allow-env", "--allow-read", "--allow-ffi"]);
  const child = new Child("demo emitter", Deno.execPath(), [
    "run",
    ...flags,
    script,
    "--socket",
    socket,
    ...options.demoArgs,
  ], { output: "inherit" });
  stack.demo = child;
  child.done.then((status) => {
    if (!stopController.signal.aborted) {
      say(`the demo emitter finished (${describeStatus(status)}); the pipeline keeps running`);
    }
  });
}

function printGuide(options: Options, socket: string): void {
  const r = `redis-cli -p ${options.redisPort}`;
  const p = `psql -h 127.0.0.1 -p ${options.pgPort} -U ${PG_USER} ${DATABASE}`;
  const demoHint = options.demo
    ? "the demo emitter is sending events (--no-demo turns it off)"
    : "no demo emitter (--no-demo); send events with the command below";
  console.log(`
dev: the pipeline is running; ${demoHint}. Ctrl-C stops it (data stays in ${options.dataDir}).

  socket    ${socket}
  redis     redis://127.0.0.1:${options.redisPort}/0
  postgres  postgresql://${PG_USER}@127.0.0.1:${options.pgPort}/${DATABASE}

  Look at the data:
    ${r} XLEN mining:share_submitted
    ${r} XREVRANGE mining:share_submitted + - COUNT 3
    ${r} XREAD BLOCK 0 STREAMS mining:share_submitted '$'     # waits for the next share
    ${r} SUBSCRIBE blocks:found                                # a found block, as it happens
    ${p} -c 'select * from workers'
    ${p} -c 'select * from weekly_best_diff order by best_difficulty desc'
    ${p} -c 'select event_type, count(*) from mining_events group by 1'

  Send more events:  SOCKET_PATH=${socket} deno task demo --rate 500
  Save a change under main.ts, src/ or ffi/: the collector restarts (after flushing).
`);
}

/** Stops what this script started, newest first; returns the collector's exit code. */
async function stopAll(stack: Stack): Promise<number> {
  let collectorCode = 0;
  if (stack.demo?.running) await stack.demo.stop("SIGTERM", 5_000);
  if (stack.collector) {
    collectorCode = await stack.collector.close();
    await stack.watching?.catch(() => {});
  }
  if (stack.redis?.running) {
    await stack.redis.stop("SIGTERM", 30_000);
    say(`redis-server stopped`);
  }
  if (stack.postgres?.running) {
    // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
    await stack.postgres.stop("SIGINT", 60_000);
    say(`postgres stopped`);
  }
  return collectorCode;
}

async function main(args: string[]): Promise<number> {
  const options = parseOptions(args);
  if (!options) return 0;
  const stack: Stack = {};

  let firstSignalAt = 0;
  const onSignal = (signal: Deno.Signal) => () => {
    // One Ctrl-C under `deno task` arrives twice: from the terminal, and forwarded by the task
    // runner a moment later. Only a press after that window is a second one.
    const now = performance.now();
    if (signalCount > 0 && now - firstSignalAt < SAME_PRESS_MS) return;
    if (signalCount === 0) firstSignalAt = now;
    signalCount++;
    if (signalCount === 1) {
      console.log();
      say(`${signal}: stopping (again to kill everything at once)`);
      requestStop(signal);
    } else {
      say(`${signal} again: killing everything`);
      for (const child of children) child.signal("SIGKILL");
    }
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(signal, onSignal(signal));
  }

  let exitCode = 0;
  try {
    for (
      const dir of [options.dataDir, `${options.dataDir}/redis`, `${options.dataDir}/postgres`]
    ) {
      Deno.mkdirSync(dir, { recursive: true });
    }
    say(`data in ${options.dataDir}`);
    // Everything that can be checked is checked before anything starts.
    const problems: string[] = [];
    const plan = async <T>(step: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await step();
      } catch (error) {
        if (!(error instanceof Fatal)) throw error;
        problems.push(error.message);
      }
    };
    const redisServer = await plan(() => planRedis(options));
    const postgresPlan = await plan(() => planPostgres(options));
    if (problems.length > 0 || !postgresPlan) throw new Fatal(problems.join("\n  and: "));
    throwIfStopping();
    if (redisServer) await startRedis(options, stack, redisServer);
    throwIfStopping();
    await startPostgres(options, stack, postgresPlan);
    throwIfStopping();
    await prepareDatabase(postgresPlan.psql, options.pgPort);
    throwIfStopping();

    const socket = socketPathFor(options.dataDir);
    const collector = new CollectorRunner(taskFlags("start", "main.ts"), {
      SOCKET_PATH: socket,
      SPOOL_DIR: `${options.dataDir}/spool`,
      METRICS_PORT: String(options.metricsPort),
      METRICS_HOST: "127.0.0.1",
      REDIS_URL: `redis://127.0.0.1:${options.redisPort}/0`,
      DATABASE_URL: `postgresql://${PG_USER}@127.0.0.1:${options.pgPort}/${DATABASE}`,
      STATS_INTERVAL: Deno.env.get("STATS_INTERVAL") || "10",
      LOG_LEVEL: Deno.env.get("LOG_LEVEL") || "INFO",
    }, socket);
    stack.collector = collector;
    say(`starting the collector: ${collector.command}`);
    await collector.start();
    stack.watching = collector.watch();
    if (options.demo) startDemo(options, stack, socket);
    printGuide(options, socket);

    // Runs until a signal, or until a server goes away.
    const watched = [stack.redis, stack.postgres].filter((c) => c !== undefined);
    const failure = await Promise.race([
      stopRequested.then(() => undefined),
      ...watched.map((child) =>
        child.done.then((status) => `${child.name} exited unexpectedly (${describeStatus(status)})`)
      ),
    ]);
    if (failure) {
      const child = watched.find((c) => !c.running);
      throw new Fatal(failure + (child?.tail() ? indent(child.tail()) : ""));
    }
  } catch (error) {
    if (!(error instanceof Stopped)) {
      exitCode = 1;
      if (error instanceof Fatal) console.error(`dev: error: ${error.message}`);
      else console.error("dev: unexpected error:", error);
      say("stopping what was started");
    }
  } finally {
    const collectorCode = await stopAll(stack);
    // Killed by a second press: whatever was killed did not stop cleanly.
    if (collectorCode !== 0 || signalCount > 1) exitCode = 1;
  }
  say(
    exitCode === 0
      ? `stopped; data kept in ${options.dataDir} (delete it to start afresh)`
      : `stopped with errors; data kept in ${options.dataDir}`,
  );
  return exitCode;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    console.error(`dev: error: ${error instanceof Fatal ? error.message : error}`);
    code = error instanceof Fatal ? 2 : 1;
  }
  Deno.exit(code);
}
