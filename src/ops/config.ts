/**
 * The collector's configuration, read once from environment variables, validated and
 * frozen. Every problem found names its variable; all are reported together.
 *
 * @module
 */
import { SUN_PATH_MAX } from "../../ffi/libc.ts";
import { passedEventSocket } from "../source/activation.ts";

/** Log levels accepted in `LOG_LEVEL`, in LogTape's names. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** Validated configuration. */
export interface Config {
  /** `SOCKET_PATH`: where ckpool sends its datagrams. */
  readonly socketPath: string;
  /**
   * The event socket passed in by socket activation (`LISTEN_FDS`, `LISTEN_PID`,
   * `LISTEN_FDNAMES`): when set, it is used and `SOCKET_PATH`, `SOCKET_MODE` and
   * `SOCKET_GROUP` are not (the socket unit decides them).
   */
  readonly passedSocketFd: number | undefined;
  /** `SOCKET_MODE`: file mode of the socket (octal in the environment). */
  readonly socketMode: number;
  /** `SOCKET_RCVBUF`: requested receive buffer in bytes. */
  readonly socketReceiveBuffer: number;
  /** `REDIS_URL`. */
  readonly redisUrl: string;
  /** `DATABASE_URL`. */
  readonly databaseUrl: string;
  /** `LOG_LEVEL`. */
  readonly logLevel: LogLevel;
  /** `BATCH_FLUSH_INTERVAL`, in milliseconds (seconds in the environment). */
  readonly batchFlushIntervalMs: number;
  /** `BATCH_MAX_SIZE`: waiting events that start a database write. */
  readonly batchMaxSize: number;
  /** `REDIS_STREAM_MAXLEN`: approximate cap of each stream. */
  readonly redisStreamMaxLen: number;
  /**
   * `SINK_MEMORY_BYTES`: datagram bytes each sink holds in memory (the events it took and its
   * backend has not confirmed); with that many, its thread stops reading the spool.
   */
  readonly sinkMemoryBytes: number;
  /** `STATS_INTERVAL`, in milliseconds (seconds in the environment); 0 turns it off. */
  readonly statsIntervalMs: number;
  /** `SHUTDOWN_TIMEOUT`, in milliseconds (seconds in the environment). */
  readonly shutdownTimeoutMs: number;
  /** `SOCKET_GROUP`: group id given to the socket, or `undefined` to leave it as created. */
  readonly socketGroup: number | undefined;
  /** `ALLOWED_SENDER_UIDS`: uids whose datagrams are accepted; empty accepts any sender. */
  readonly allowedSenderUids: readonly number[];
  /** `SPOOL_DIR`: directory of the durable spool. */
  readonly spoolDir: string;
  /** `SPOOL_MAX_BYTES`: most bytes the spool's files may take. */
  readonly spoolMaxBytes: number;
  /** `SPOOL_FSYNC_INTERVAL`, in milliseconds (seconds in the environment); 0 syncs every write. */
  readonly spoolFsyncIntervalMs: number;
  /** `METRICS_PORT`: TCP port of `/healthz` and `/metrics`; 0 turns the server off. */
  readonly metricsPort: number;
  /** `METRICS_HOST`: address the metrics server listens on. */
  readonly metricsHost: string;
  /** `SINK_CONNECT_TIMEOUT`, in milliseconds: deadline for a sink to connect to its backend. */
  readonly sinkConnectTimeoutMs: number;
  /** `SINK_WRITE_TIMEOUT`, in milliseconds: deadline for one write (pipeline, transaction). */
  readonly sinkWriteTimeoutMs: number;
}

/** One variable: its default and what it accepts. */
interface Variable<T> {
  readonly fallback: string;
  readonly parse: (raw: string) => T;
}

/** Raised when configuration is invalid; `problems` holds one line per variable. */
export class ConfigError extends Error {
  readonly problems: readonly string[];

  constructor(problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

function number(
  { min, max, integer }: { min: number; max: number; integer: boolean },
): (raw: string) => number {
  const kind = integer ? "an integer" : "a number";
  return (raw) => {
    const value = Number(raw);
    if (
      raw.trim() === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value)) ||
      value < min || value > max
    ) {
      throw new Error(`must be ${kind} from ${min} to ${max}`);
    }
    return value;
  };
}

const seconds = (min: number, max: number) => (raw: string) =>
  Math.round(number({ min, max, integer: false })(raw) * 1000);

function url(schemes: string[]): (raw: string) => string {
  return (raw) => {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new Error(`must be a URL such as ${schemes[0]}//host:port/...`);
    }
    if (!schemes.includes(parsed.protocol)) {
      throw new Error(`must start with ${schemes.join(" or ")}//`);
    }
    return raw;
  };
}

function socketPath(raw: string): string {
  if (!raw.startsWith("/")) throw new Error("must be an absolute path");
  const bytes = new TextEncoder().encode(raw).length;
  if (bytes > SUN_PATH_MAX) {
    throw new Error(`is ${bytes} bytes; a Unix socket path holds at most ${SUN_PATH_MAX}`);
  }
  return raw;
}

function fileMode(raw: string): number {
  if (!/^0?[0-7]{3}$/.test(raw)) throw new Error("must be an octal file mode such as 0660");
  return parseInt(raw, 8);
}

/** A group name from `/etc/group`, or a numeric gid; empty means none. */
function group(raw: string): number | undefined {
  if (raw === "") return undefined;
  if (/^[0-9]+$/.test(raw)) return number({ min: 0, max: 4_294_967_294, integer: true })(raw);
  let table: string;
  try {
    table = Deno.readTextFileSync("/etc/group");
  } catch (error) {
    throw new Error(`names a group, but /etc/group is unreadable (${(error as Error).message})`);
  }
  for (const line of table.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === raw && gid !== undefined) return Number(gid);
  }
  throw new Error("is not a group in /etc/group; give a group name or a numeric gid");
}

function uidList(raw: string): readonly number[] {
  if (raw.trim() === "") return Object.freeze([]);
  const uids = raw.split(",").map((part) => part.trim());
  for (const uid of uids) {
    if (!/^[0-9]+$/.test(uid) || Number(uid) > 4_294_967_294) {
      throw new Error("must be a comma-separated list of numeric uids such as 0,1000");
    }
  }
  return Object.freeze([...new Set(uids.map(Number))]);
}

function directory(raw: string): string {
  if (!raw.startsWith("/")) throw new Error("must be an absolute path");
  return raw.replace(/\/+$/, "") || "/";
}

function host(raw: string): string {
  if (!/^[0-9A-Za-z.:\-\[\]]+$/.test(raw)) {
    throw new Error("must be an address or host name such as 0.0.0.0 or 127.0.0.1");
  }
  return raw;
}

const LOG_LEVELS: Record<string, LogLevel> = {
  DEBUG: "debug",
  INFO: "info",
  WARN: "warning",
  WARNING: "warning",
  ERROR: "error",
};

function logLevel(raw: string): LogLevel {
  const level = LOG_LEVELS[raw.toUpperCase()];
  if (!level) throw new Error("must be one of DEBUG, INFO, WARNING, ERROR");
  return level;
}

const MiB = 1024 * 1024;

/** Every variable the collector reads, with its default. */
export const VARIABLES = {
  SOCKET_PATH: { fallback: "/tmp/ckpool/events.sock", parse: socketPath },
  SOCKET_MODE: { fallback: "0660", parse: fileMode },
  SOCKET_RCVBUF: {
    fallback: String(8 * MiB),
    parse: number({ min: 4096, max: 1024 * MiB, integer: true }),
  },
  REDIS_URL: { fallback: "redis://localhost:6379/0", parse: url(["redis:", "rediss:"]) },
  DATABASE_URL: {
    fallback: "postgresql://tbg:tbgdev2026@localhost:5432/thebitcoingame",
    parse: url(["postgres:", "postgresql:"]),
  },
  LOG_LEVEL: { fallback: "INFO", parse: logLevel },
  BATCH_FLUSH_INTERVAL: { fallback: "1.0", parse: seconds(0.001, 3600) },
  BATCH_MAX_SIZE: { fallback: "500", parse: number({ min: 1, max: 100_000, integer: true }) },
  REDIS_STREAM_MAXLEN: {
    fallback: "100000",
    parse: number({ min: 1, max: Number.MAX_SAFE_INTEGER, integer: true }),
  },
  SINK_MEMORY_BYTES: {
    fallback: String(16 * MiB),
    parse: number({ min: MiB, max: 16 * 1024 * MiB, integer: true }),
  },
  STATS_INTERVAL: { fallback: "60", parse: seconds(0, 86_400) },
  SHUTDOWN_TIMEOUT: { fallback: "30", parse: seconds(0, 3600) },
  SOCKET_GROUP: { fallback: "", parse: group },
  ALLOWED_SENDER_UIDS: { fallback: "", parse: uidList },
  SPOOL_DIR: { fallback: "/var/lib/tbg-collector/spool", parse: directory },
  SPOOL_MAX_BYTES: {
    fallback: String(1024 * MiB),
    parse: number({ min: 4 * MiB, max: Number.MAX_SAFE_INTEGER, integer: true }),
  },
  SPOOL_FSYNC_INTERVAL: { fallback: "1.0", parse: seconds(0, 60) },
  METRICS_PORT: { fallback: "9464", parse: number({ min: 0, max: 65535, integer: true }) },
  METRICS_HOST: { fallback: "0.0.0.0", parse: host },
  SINK_CONNECT_TIMEOUT: { fallback: "3", parse: seconds(0.1, 600) },
  SINK_WRITE_TIMEOUT: { fallback: "15", parse: seconds(0.1, 3600) },
} as const satisfies Record<string, Variable<unknown>>;

type Parsed = { [K in keyof typeof VARIABLES]: ReturnType<(typeof VARIABLES)[K]["parse"]> };

/**
 * Reads the configuration from `env`. An unset or empty variable takes its default.
 *
 * @throws {ConfigError} naming every invalid variable
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>>,
  pid = Deno.pid,
): Config {
  const problems: string[] = [];
  const values: Partial<Record<string, unknown>> = {};
  for (const [name, variable] of Object.entries(VARIABLES)) {
    const given = env[name];
    const raw = given === undefined || given === "" ? variable.fallback : given;
    try {
      values[name] = variable.parse(raw);
    } catch (error) {
      problems.push(`${name} ${(error as Error).message} (got ${JSON.stringify(raw)})`);
    }
  }
  let passedSocketFd: number | undefined;
  try {
    passedSocketFd = passedEventSocket(env, pid);
  } catch (error) {
    problems.push((error as Error).message);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const v = values as Parsed;
  return Object.freeze({
    socketPath: v.SOCKET_PATH,
    passedSocketFd,
    socketMode: v.SOCKET_MODE,
    socketReceiveBuffer: v.SOCKET_RCVBUF,
    redisUrl: v.REDIS_URL,
    databaseUrl: v.DATABASE_URL,
    logLevel: v.LOG_LEVEL,
    batchFlushIntervalMs: v.BATCH_FLUSH_INTERVAL,
    batchMaxSize: v.BATCH_MAX_SIZE,
    redisStreamMaxLen: v.REDIS_STREAM_MAXLEN,
    sinkMemoryBytes: v.SINK_MEMORY_BYTES,
    statsIntervalMs: v.STATS_INTERVAL,
    shutdownTimeoutMs: v.SHUTDOWN_TIMEOUT,
    socketGroup: v.SOCKET_GROUP,
    allowedSenderUids: v.ALLOWED_SENDER_UIDS,
    spoolDir: v.SPOOL_DIR,
    spoolMaxBytes: v.SPOOL_MAX_BYTES,
    spoolFsyncIntervalMs: v.SPOOL_FSYNC_INTERVAL,
    metricsPort: v.METRICS_PORT,
    metricsHost: v.METRICS_HOST,
    sinkConnectTimeoutMs: v.SINK_CONNECT_TIMEOUT,
    sinkWriteTimeoutMs: v.SINK_WRITE_TIMEOUT,
  });
}

/** A URL with its password replaced, for logs. */
export function redactUrl(raw: string): string {
  try {
    const parsed = new URL(raw);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}
