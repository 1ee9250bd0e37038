/**
 * ckpool for tests: writes its JSON config, builds it from a checkout in a temp dir, and runs
 * it in solo mode (`-B`) on loopback ports, killed for sure by `stop()`.
 *
 * ckpool reads (ckpool.c `parse_config()`): `btcd` [{url, auth, pass, notify}], `btcaddress`,
 * `btcsig`, `blockpoll` (ms between getbestblockhash polls), `nonce1length`, `nonce2length`,
 * `update_interval` (s between new work), `version_mask`, `serverurl`, `mindiff`, `startdiff`,
 * `highdiff`, `maxdiff`, `logdir`, `zmqblock`, and with the project's patch `event_socket_path`.
 *
 * @module
 */

/** What goes into a test config. */
export interface CkpoolConfigOptions {
  /** bitcoind as `host:port` (the peer's `url`). */
  btcdUrl: string;
  btcdUser: string;
  btcdPass: string;
  /** Stratum listen port on 127.0.0.1. */
  stratumPort: number;
  /** Directory for ckpool's logs (created if missing). */
  logdir: string;
  /** Pool address; in solo mode only checked at start-up (each miner's own address is paid). */
  btcaddress?: string;
  btcsig?: string;
  /** Milliseconds between getbestblockhash polls (default 100). */
  blockpoll?: number;
  mindiff?: number;
  startdiff?: number;
  /**
   * Difficulty for clients of "high" ports: ckpool treats every Stratum port above 4000 as a
   * high-difficulty port (connector.c) and starts its clients at `highdiff` (default 1,000,000).
   * Tests listen on free ports, which are above 4000, so this defaults to `startdiff`.
   */
  highdiff?: number;
  maxdiff?: number;
  nonce1length?: number;
  nonce2length?: number;
  /** Seconds between work updates (default 30). */
  updateInterval?: number;
  /** Datagram socket for the project's event emitter (patched ckpool only). */
  eventSocketPath?: string;
  /** Anything else, merged last. */
  extra?: Record<string, unknown>;
}

/** A signet address (BIP173's test vector, also the schema's seed user). */
export const TEST_ADDRESS = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";

/** The config object ckpool will read. */
export function ckpoolConfig(options: CkpoolConfigOptions): Record<string, unknown> {
  const config: Record<string, unknown> = {
    btcd: [{ url: options.btcdUrl, auth: options.btcdUser, pass: options.btcdPass, notify: false }],
    btcaddress: options.btcaddress ?? TEST_ADDRESS,
    btcsig: options.btcsig ?? "/tbg-test/",
    blockpoll: options.blockpoll ?? 100,
    nonce1length: options.nonce1length ?? 4,
    nonce2length: options.nonce2length ?? 8,
    update_interval: options.updateInterval ?? 30,
    serverurl: [`127.0.0.1:${options.stratumPort}`],
    mindiff: options.mindiff ?? 1,
    startdiff: options.startdiff ?? 1,
    highdiff: options.highdiff ?? options.startdiff ?? 1,
    maxdiff: options.maxdiff ?? 0,
    logdir: options.logdir.endsWith("/") ? options.logdir : `${options.logdir}/`,
  };
  if (options.eventSocketPath) config.event_socket_path = options.eventSocketPath;
  return { ...config, ...options.extra };
}

/** Writes the config as JSON to `path` (and creates `logdir`); returns `path`. */
export async function writeCkpoolConfig(
  path: string,
  options: CkpoolConfigOptions,
): Promise<string> {
  await Deno.mkdir(options.logdir, { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(ckpoolConfig(options), null, 2) + "\n");
  return path;
}

/** A running ckpool. */
export interface CkpoolProcess {
  readonly pid: number;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the first match of `pattern` in the output, or throws at the deadline. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves when the process has exited, with its exit code. */
  readonly exited: Promise<number>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
  stop(graceMs?: number): Promise<number>;
}

/** Starts ckpool (`-B -c CONFIG -s SOCKDIR`); the caller must `stop()` it (use try/finally). */
export function startCkpool(options: {
  binary: string;
  configPath: string;
  /** Directory for ckpool's unix sockets and pid file (must exist, not shared). */
  sockDir: string;
  /** `-n`, default "ckpool". */
  name?: string;
  /** `-l` log level: 5 notice (default), 6 info, 7 debug. */
  loglevel?: number;
  /** `-L`: write share logs under the config's logdir. */
  logShares?: boolean;
  extraArgs?: string[];
}): CkpoolProcess {
  const args = ["-B", "-c", options.configPath, "-s", options.sockDir];
  if (options.name) args.push("-n", options.name);
  if (options.loglevel !== undefined) args.push("-l", String(options.loglevel));
  if (options.logShares) args.push("-L");
  args.push(...(options.extraArgs ?? []));
  const child = new Deno.Command(options.binary, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  let wake: (() => void)[] = [];
  const notify = () => {
    const w = wake;
    wake = [];
    for (const f of w) f();
  };
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      text += decoder.decode(chunk, { stream: true });
      notify();
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exitCode: number | undefined;
  const exited = child.status.then(async (status) => {
    await pumps.catch(() => {});
    exitCode = status.code;
    notify();
    return status.code;
  });
  return {
    pid: child.pid,
    output: () => text,
    exited,
    async waitForOutput(pattern: RegExp, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        const match = text.match(pattern);
        if (match) return match;
        if (exitCode !== undefined) {
          throw new Error(
            `ckpool exited (${exitCode}) before printing ${pattern}:\n${text.slice(-3000)}`,
          );
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(
            `timed out after ${timeoutMs} ms waiting for ${pattern} in ckpool output:\n${
              text.slice(-3000)
            }`,
          );
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
    async stop(graceMs = 5_000) {
      if (exitCode === undefined) {
        try {
          child.kill("SIGTERM");
        } catch {
          // already gone
        }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // already gone
          }
        }, graceMs);
        try {
          await exited;
        } finally {
          clearTimeout(timer);
        }
      }
      return await exited;
    },
  };
}
