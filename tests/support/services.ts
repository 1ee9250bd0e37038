/**
 * Real `redis-server` and `postgres` processes for tests, each on a free loopback port in
 * its own temp dir, stopped and removed by `stop()`.
 *
 * @module
 */
import { timescaledbInstalled, timescaledbServerArgs } from "../../scripts/timescaledb.ts";
import { waitFor } from "./wait.ts";

/** A running service started by this module. */
export interface Service {
  /** Connection URL, e.g. `redis://127.0.0.1:PORT/0`. */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Kills the process (SIGKILL) without removing its data; `start()` again reuses it. */
  kill(): Promise<void>;
  /**
   * Sends `signal` to the server and waits for it to exit, keeping its data: for PostgreSQL
   * SIGINT is `pg_ctl stop -m fast`, SIGQUIT `-m immediate`; for Redis SIGTERM is a shutdown.
   */
  halt(signal: Deno.Signal): Promise<void>;
  /** Starts the process again on the same port and data dir, after {@link kill}. */
  start(): Promise<void>;
  /** Stops the process and removes its dir. */
  stop(): Promise<void>;
}

/**
 * Whether Redis on `port` answers commands: a restarted Redis accepts connections while it
 * still loads its append-only file, and answers `-LOADING` until it is done.
 */
async function redisAnswers(port: number): Promise<boolean> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    return false;
  }
  try {
    await conn.write(new TextEncoder().encode("PING\r\n"));
    const buffer = new Uint8Array(64);
    const n = await conn.read(buffer);
    // A password-protected server answers -NOAUTH: answering all the same.
    return n !== null && !new TextDecoder().decode(buffer.subarray(0, n)).startsWith("-LOADING");
  } catch {
    return false;
  } finally {
    conn.close();
  }
}

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function findExecutable(name: string, dirs: string[]): string {
  for (const dir of dirs) {
    try {
      const path = `${dir}/${name}`;
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not in this dir
    }
  }
  throw new Error(
    `${name} not found in ${dirs.join(", ")}; install it (apt-get install -y ` +
      `${name.startsWith("redis") ? "redis-server" : "postgresql-15"})`,
  );
}

function postgresBinDir(): string {
  const root = "/usr/lib/postgresql";
  try {
    const versions = [...Deno.readDirSync(root)]
      .map((entry) => entry.name)
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) {
      const dir = `${root}/${version}/bin`;
      try {
        Deno.statSync(`${dir}/postgres`);
        return dir;
      } catch {
        // try the next version
      }
    }
  } catch {
    // no Debian layout; fall through to PATH
  }
  return "/usr/bin";
}

const isRoot = Deno.uid() === 0;

/**
 * The command line that runs `cmd` as the `postgres` user when we are root. `setpriv`
 * replaces itself with `cmd` (runuser would fork), so the spawned pid is the server's own
 * and signals reach it.
 */
function asPostgresUser(cmd: string, args: string[], asPostgres: boolean): [string, string[]] {
  if (!asPostgres || !isRoot) return [cmd, args];
  return ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", cmd, ...args]];
}

/** Runs a command (as the `postgres` user when we are root) and throws on failure. */
async function run(cmd: string, args: string[], asPostgres = false): Promise<void> {
  const [program, argv] = asPostgresUser(cmd, args, asPostgres);
  const out = await new Deno.Command(program, { args: argv, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  }
}

function spawnQuiet(cmd: string, args: string[], asPostgres = false): Deno.ChildProcess {
  const [program, argv] = asPostgresUser(cmd, args, asPostgres);
  return new Deno.Command(program, {
    args: argv,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

async function killProcess(child: Deno.ChildProcess | undefined, signal: Deno.Signal) {
  if (!child) return;
  try {
    child.kill(signal);
  } catch {
    // already gone
  }
  await child.status;
}

/** Options for {@link startRedis}. */
export interface RedisOptions {
  /** Turn on the append-only file, so data survives {@link Service.kill}. */
  appendOnly?: boolean;
  /** Require this password (`requirepass`). */
  password?: string;
}

/** Starts `redis-server` on a free loopback port. */
export async function startRedis(
  { appendOnly = false, password }: RedisOptions = {},
): Promise<Service> {
  const server = findExecutable("redis-server", ["/usr/bin", "/usr/local/bin", "/usr/sbin"]);
  const dir = await Deno.makeTempDir({ prefix: "tbg-redis-" });
  const port = freePort();
  let child: Deno.ChildProcess | undefined;
  const start = async () => {
    child = spawnQuiet(server, [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      appendOnly ? "yes" : "no",
      // What Redis acknowledged must survive its own SIGKILL, or a test could not tell
      // Redis's loss from the collector's.
      "--appendfsync",
      "always",
      "--daemonize",
      "no",
      ...(password ? ["--requirepass", password] : []),
    ]);
    await waitFor(() => redisAnswers(port), {
      what: `redis-server on port ${port}`,
      intervalMs: 10,
    });
  };
  await start();
  return {
    url: `redis://${password ? `:${encodeURIComponent(password)}@` : ""}127.0.0.1:${port}/0`,
    port,
    dir,
    start,
    kill: () => killProcess(child, "SIGKILL"),
    halt: (signal) => killProcess(child, signal),
    stop: async () => {
      await killProcess(child, "SIGTERM");
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Options for {@link startPostgres}. */
export interface PostgresOptions {
  /** Database to create; the URL points at it. */
  database?: string;
  /**
   * Keep `synchronous_commit` on, so a commit PostgreSQL acknowledged survives its own
   * SIGKILL (it is off otherwise, for speed, and then up to ~0.6 s of commits can vanish).
   */
  crashSafe?: boolean;
}

/**
 * Starts a fresh PostgreSQL cluster on a free loopback port. As root (CI) the server runs
 * as the `postgres` user, which owns the data dir; PostgreSQL refuses to run as root.
 */
export async function startPostgres(
  { database = "tbg", crashSafe = false }: PostgresOptions = {},
): Promise<
  Service
> {
  const bin = postgresBinDir();
  const dir = await Deno.makeTempDir({ prefix: "tbg-pg-" });
  if (isRoot) await run("chown", ["postgres:postgres", dir]);
  const data = `${dir}/data`;
  const port = freePort();
  await run(`${bin}/initdb`, [
    "-D",
    data,
    "-U",
    "postgres",
    "--auth=trust",
    "-E",
    "UTF8",
    "--locale=C",
  ], true);
  let child: Deno.ChildProcess | undefined;
  let exited = false;
  const spawn = () => {
    child = spawnQuiet(`${bin}/postgres`, [
      "-D",
      data,
      "-p",
      String(port),
      "-k",
      dir,
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "fsync=off",
      "-c",
      `synchronous_commit=${crashSafe ? "on" : "off"}`,
      "-c",
      "full_page_writes=off",
      ...timescaledbServerArgs(bin),
      // No background jobs: tests write fixed dates, which retention would drop under them.
      // The TimescaleDB tests run the policies' jobs themselves.
      ...(hasTimescaledb() ? ["-c", "timescaledb.max_background_workers=0"] : []),
    ], true);
    exited = false;
    const spawned = child;
    void spawned.status.then(() => {
      if (child === spawned) exited = true;
    });
  };
  // After a SIGKILL the old server's backends may still hold its shared memory for a moment,
  // and a new server refuses to start until they are gone: so it is started again until one
  // stays up.
  const start = async () => {
    spawn();
    await waitFor(
      async () => {
        if (exited) {
          spawn();
          return false;
        }
        await run(`${bin}/pg_isready`, ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres"]);
        return true;
      },
      { what: `postgres on port ${port}`, timeoutMs: 30_000, intervalMs: 20 },
    );
  };
  await start();
  await run(`${bin}/createdb`, ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", database]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/${database}`,
    port,
    dir,
    start,
    kill: () => killProcess(child, "SIGKILL"),
    halt: (signal) => killProcess(child, signal),
    stop: async () => {
      await killProcess(child, "SIGTERM");
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Whether the servers {@link startPostgres} starts have TimescaleDB (preloaded). */
export function hasTimescaledb(): boolean {
  return timescaledbInstalled(postgresBinDir());
}

/** Path of `psql` next to the server binaries. */
export function psqlPath(): string {
  return `${postgresBinDir()}/psql`;
}

/** Loads `sql/init.sql` into the database of `service` with psql, stopping at the first error. */
export async function loadSchema(service: Service): Promise<void> {
  const schema = new URL("../../sql/init.sql", import.meta.url).pathname;
  await run(psqlPath(), [
    "-X",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-d",
    service.url,
    "-f",
    schema,
  ]);
}
