/**
 * A Stratum V1 test miner: subscribes, authorizes as `address.worker`, follows
 * `mining.set_difficulty` / `mining.notify`, builds block headers exactly as ckpool checks them
 * (stratifier.c `submission_diff()`), submits shares, and disconnects.
 *
 * Two ways to submit:
 * - {@link StratumMiner.submitShare} sends whatever work it is given (a random nonce by
 *   default): almost always below the pool difficulty, so ckpool rejects it with
 *   "Above target". The cheap path.
 * - {@link StratumMiner.submitValidShare} grinds nonces with the C grinder
 *   (`tests/support/grinder.c`, compiled on first use with gcc and OpenSSL's libcrypto) until the
 *   share meets the current difficulty. Difficulty 1 needs about 2^32 double SHA-256: minutes.
 *
 * Byte orders, as ckpool builds and checks the 80-byte header:
 * - `version`, `nbits`, `ntime` and the submitted `nonce` are big-endian hex of 32-bit values;
 *   the header holds them little-endian.
 * - `prevhash` is the block hash with its eight 4-byte words in reverse order (ckpool's
 *   `swap_256` of the display hash); the header holds each word byte-reversed.
 * - merkle branch entries are internal-order hashes; the coinbase is
 *   `coinb1 + extranonce1 + extranonce2 + coinb2`, hashed with double SHA-256, then folded with
 *   each branch entry as `sha256d(root || branch)`. The root goes into the header as is.
 * - A share's difficulty is ckpool's `diff_from_target()`: difficulty-1 target / hash, both as
 *   doubles, the hash read as a little-endian 256-bit number.
 *
 * @module
 */
import { concatBytes, fromHex, reversed, sha256d, toHex } from "./bitcoind_peer.ts";
import { compileC } from "./compile_c.ts";

// ---------------------------------------------------------------------------------------------
// Header construction
// ---------------------------------------------------------------------------------------------

/** One `mining.notify` job. */
export interface StratumJob {
  jobId: string;
  /** Previous block hash in Stratum order (words reversed). */
  prevHash: string;
  coinb1: string;
  coinb2: string;
  merkleBranch: string[];
  version: string;
  nbits: string;
  ntime: string;
  cleanJobs: boolean;
  receivedAt: Date;
}

/** Converts a display-order block hash to Stratum's `prevhash` form (and back: it is its own inverse). */
export function stratumPrevHash(hash: string): string {
  const bytes = fromHex(hash);
  const out = new Uint8Array(32);
  for (let word = 0; word < 8; word++) {
    out.set(bytes.subarray(4 * word, 4 * word + 4), 4 * (7 - word));
  }
  return toHex(out);
}

function wordsByteReversed(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 4) out.set(reversed(bytes.subarray(i, i + 4)), i);
  return out;
}

/** The coinbase transaction bytes: coinb1 + extranonce1 + extranonce2 + coinb2. */
export function buildCoinbase(
  coinb1: string,
  extranonce1: string,
  extranonce2: string,
  coinb2: string,
) {
  return fromHex(coinb1 + extranonce1 + extranonce2 + coinb2);
}

/** Folds the coinbase hash (internal order) with a merkle branch (internal-order hex). */
export function merkleRootFromBranch(coinbaseHash: Uint8Array, branch: string[]): Uint8Array {
  let root = coinbaseHash;
  for (const entry of branch) root = sha256d(concatBytes(root, fromHex(entry)));
  return root;
}

/**
 * The merkle branch for the coinbase of a block whose other transactions have these
 * internal-order hashes, computed as ckpool's `gbt_merkle_bins()` does.
 */
export function merkleBranch(txHashes: Uint8Array[]): string[] {
  const branch: string[] = [];
  let level: Uint8Array[] = [new Uint8Array(32), ...txHashes];
  while (level.length > 1) {
    branch.push(toHex(level[1]));
    if (level.length % 2) level.push(level[level.length - 1]);
    const next: Uint8Array[] = [new Uint8Array(32)];
    for (let i = 2; i < level.length; i += 2) {
      next.push(sha256d(concatBytes(level[i], level[i + 1])));
    }
    level = next;
  }
  return branch;
}

/** Work for one header. */
export interface HeaderWork {
  job: Pick<StratumJob, "prevHash" | "coinb1" | "coinb2" | "merkleBranch" | "version" | "nbits">;
  extranonce1: string;
  extranonce2: string;
  /** Big-endian hex, as submitted. */
  ntime: string;
  /** Big-endian hex, as submitted. */
  nonce: string;
  /** Version bits to OR in (BIP310 version rolling), big-endian hex. */
  versionBits?: string;
}

/** Lays out an 80-byte header from Stratum-form fields and an internal-order merkle root. */
export function assembleHeader(fields: {
  version: string;
  /** Stratum order (words reversed). */
  prevHash: string;
  merkleRoot: Uint8Array;
  ntime: string;
  nbits: string;
  nonce: string;
  versionBits?: string;
}): Uint8Array {
  let version = parseInt(fields.version, 16) >>> 0;
  if (fields.versionBits) version = (version | parseInt(fields.versionBits, 16)) >>> 0;
  return concatBytes(
    reversed(fromHex(version.toString(16).padStart(8, "0"))),
    wordsByteReversed(fromHex(fields.prevHash)),
    fields.merkleRoot,
    reversed(fromHex(fields.ntime.padStart(8, "0"))),
    reversed(fromHex(fields.nbits)),
    reversed(fromHex(fields.nonce.padStart(8, "0"))),
  );
}

/** Builds the 80-byte header ckpool hashes for a share. */
export function buildHeader(work: HeaderWork): Uint8Array {
  const coinbase = buildCoinbase(
    work.job.coinb1,
    work.extranonce1,
    work.extranonce2,
    work.job.coinb2,
  );
  return assembleHeader({
    version: work.job.version,
    prevHash: work.job.prevHash,
    merkleRoot: merkleRootFromBranch(sha256d(coinbase), work.job.merkleBranch),
    ntime: work.ntime,
    nbits: work.job.nbits,
    nonce: work.nonce,
    versionBits: work.versionBits,
  });
}

/** The header's hash (internal order; reverse it for display). */
export function headerHash(header: Uint8Array): Uint8Array {
  return sha256d(header);
}

const TRUE_DIFF_ONE = 26959535291011309493156476344723991336010898738574164086137773096960.0;

/** ckpool's `diff_from_target()`: the difficulty of an internal-order hash, in doubles. */
export function hashDifficulty(hashLE: Uint8Array): number {
  const view = new DataView(hashLE.buffer, hashLE.byteOffset, 32);
  const word = (i: number) => Number(view.getBigUint64(i, true));
  let value = word(24) * 6277101735386680763835789423207666416102355444464034512896.0;
  value += word(16) * 340282366920938463463374607431768211456.0;
  value += word(8) * 18446744073709551616.0;
  value += word(0);
  if (value <= 0) value = 1;
  return TRUE_DIFF_ONE / value;
}

/** The largest hash (as an integer) that meets difficulty `diff`: floor(diff1 target / diff). */
export function difficultyTarget(diff: number): bigint {
  if (!(diff > 0)) throw new Error(`bad difficulty ${diff}`);
  // Scale to keep precision for fractional difficulties.
  const scale = 1n << 64n;
  const scaledDiff = BigInt(Math.round(diff * 2 ** 64));
  return ((0xffffn << 208n) * scale) / scaledDiff;
}

// ---------------------------------------------------------------------------------------------
// The grinder
// ---------------------------------------------------------------------------------------------

const GRINDER_SOURCE = new URL("./grinder.c", import.meta.url);

/** Compiles `grinder.c` (once per process) and returns the binary. */
export function buildGrinder(): Promise<string> {
  return compileC(GRINDER_SOURCE, ["-lcrypto", "-lpthread"], "gcc and libssl-dev");
}

/** What one grinder run reports. */
export interface GrindResult {
  found: boolean;
  nonce?: number;
  /** Display-order hash of the header with that nonce. */
  hash?: string;
  hashes: number;
  seconds: number;
  /** Hashes per second. */
  rate: number;
}

/** Runs the grinder over `header` (its nonce ignored) for the lowest nonce meeting `target`. */
export async function grind(
  header: Uint8Array,
  target: bigint,
  options: { startNonce?: number; count?: number; threads?: number; maxSeconds?: number } = {},
): Promise<GrindResult> {
  const binary = await buildGrinder();
  const args = [
    toHex(header),
    target.toString(16).padStart(64, "0"),
    String(options.startNonce ?? 0),
    String(options.count ?? 0),
    String(options.threads ?? 0),
    String(options.maxSeconds ?? 0),
  ];
  const output = await new Deno.Command(binary, { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(output.stdout).trim();
  const field = (name: string) => text.match(new RegExp(`${name}=(\\S+)`))?.[1];
  if (output.code !== 0 && output.code !== 1) {
    throw new Error(`grinder failed (${output.code}): ${new TextDecoder().decode(output.stderr)}`);
  }
  return {
    found: text.startsWith("FOUND"),
    nonce: field("nonce") === undefined ? undefined : Number(field("nonce")),
    hash: field("hash"),
    hashes: Number(field("hashes") ?? 0),
    seconds: Number(field("seconds") ?? 0),
    rate: Number(field("rate") ?? 0),
  };
}

// ---------------------------------------------------------------------------------------------
// The miner
// ---------------------------------------------------------------------------------------------

/** Options for {@link connectMiner}. */
export interface MinerOptions {
  host?: string;
  port: number;
  /** Worker name, `address.worker` (ckpool's solo mode pays `address`). */
  user: string;
  password?: string;
  userAgent?: string;
  /** Default deadline for replies, in ms (default 10 s). */
  timeoutMs?: number;
}

/** A share submission's outcome. */
export interface ShareResult {
  accepted: boolean;
  /** The reply's `error` (null when none). */
  error?: unknown;
  /** ckpool's `reject-reason`, e.g. "Above target", "Stale", "Duplicate". */
  rejectReason?: string;
  /** The params sent: [worker, job_id, extranonce2, ntime, nonce]. */
  params: string[];
  /** Display-order hash of the header as this miner built it. */
  hash: string;
  /** That hash's difficulty, computed as ckpool does. */
  shareDifficulty: number;
  /** The whole reply. */
  reply: Record<string, unknown>;
}

/** A Stratum message received. */
export interface StratumMessage {
  id?: unknown;
  method?: string;
  params?: unknown;
  result?: unknown;
  error?: unknown;
  [key: string]: unknown;
}

interface Pending {
  resolve: (reply: StratumMessage) => void;
  reject: (error: Error) => void;
}

/** A connected miner. */
export class StratumMiner {
  /** Every message received, in order. */
  readonly messages: StratumMessage[] = [];
  /** Every job received, in order. */
  readonly jobs: StratumJob[] = [];
  /** Difficulties set, in order. */
  readonly difficulties: number[] = [];
  extranonce1?: string;
  extranonce2Size?: number;
  subscribed = false;
  authorized = false;
  /** Resolves when the connection has closed. */
  readonly closed: Promise<void>;

  #conn: Deno.Conn;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #waiters: Array<() => void> = [];
  #isClosed = false;
  #extranonce2Counter = 0;
  #options: Required<Omit<MinerOptions, "password">> & { password: string };

  constructor(conn: Deno.Conn, options: MinerOptions) {
    this.#conn = conn;
    this.#options = {
      host: options.host ?? "127.0.0.1",
      port: options.port,
      user: options.user,
      password: options.password ?? "x",
      userAgent: options.userAgent ?? "tbg-test-miner/1.0",
      timeoutMs: options.timeoutMs ?? 10_000,
    };
    this.closed = this.#readLoop();
  }

  /** The worker name this miner authorizes and submits as. */
  get user(): string {
    return this.#options.user;
  }

  /** The most recent job. */
  get job(): StratumJob | undefined {
    return this.jobs[this.jobs.length - 1];
  }

  /** The current difficulty. */
  get difficulty(): number | undefined {
    return this.difficulties[this.difficulties.length - 1];
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    let text = "";
    const chunk = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.#conn.read(chunk);
        if (n === null) break;
        text += decoder.decode(chunk.subarray(0, n), { stream: true });
        let newline: number;
        while ((newline = text.indexOf("\n")) >= 0) {
          const line = text.slice(0, newline).trim();
          text = text.slice(newline + 1);
          if (line) this.#handle(line);
        }
      }
    } catch {
      // closed under us
    } finally {
      this.#isClosed = true;
      for (const pending of this.#pending.values()) {
        pending.reject(new Error("stratum connection closed"));
      }
      this.#pending.clear();
      this.#wake();
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    }
  }

  #handle(line: string) {
    let message: StratumMessage;
    try {
      message = JSON.parse(line);
    } catch {
      this.messages.push({ method: "<unparseable>", params: [line] });
      return;
    }
    this.messages.push(message);
    if (message.method === "mining.notify" && Array.isArray(message.params)) {
      const p = message.params as unknown[];
      this.jobs.push({
        jobId: String(p[0]),
        prevHash: String(p[1]),
        coinb1: String(p[2]),
        coinb2: String(p[3]),
        merkleBranch: (p[4] as string[]) ?? [],
        version: String(p[5]),
        nbits: String(p[6]),
        ntime: String(p[7]),
        cleanJobs: Boolean(p[8]),
        receivedAt: new Date(),
      });
    } else if (message.method === "mining.set_difficulty" && Array.isArray(message.params)) {
      this.difficulties.push(Number((message.params as unknown[])[0]));
    } else if (typeof message.id === "number" && this.#pending.has(message.id) && !message.method) {
      const pending = this.#pending.get(message.id)!;
      this.#pending.delete(message.id);
      pending.resolve(message);
    }
    this.#wake();
  }

  #wake() {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** Waits until `check()` returns a value other than undefined/false, or throws at the deadline. */
  async waitFor<T>(
    check: () => T | undefined | false,
    what: string,
    timeoutMs = this.#options.timeoutMs,
  ) {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const value = check();
      if (value !== undefined && value !== false) return value as T;
      if (this.#isClosed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Sends a request that gets no reply (ckpool answers `mining.suggest_difficulty` with none). */
  async notify(method: string, params: unknown[]): Promise<void> {
    if (this.#isClosed) throw new Error("stratum connection closed");
    const id = this.#nextId++;
    await this.#conn.write(new TextEncoder().encode(JSON.stringify({ id, method, params }) + "\n"));
  }

  /** Sends a request and waits for its reply. */
  async request(
    method: string,
    params: unknown[],
    timeoutMs = this.#options.timeoutMs,
  ): Promise<StratumMessage> {
    if (this.#isClosed) throw new Error("stratum connection closed");
    const id = this.#nextId++;
    const reply = new Promise<StratumMessage>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    await this.#conn.write(new TextEncoder().encode(JSON.stringify({ id, method, params }) + "\n"));
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        reply,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            this.#pending.delete(id);
            reject(new Error(`timed out after ${timeoutMs} ms waiting for the reply to ${method}`));
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `mining.subscribe`; records extranonce1 and the extranonce2 size. */
  async subscribe(): Promise<
    { extranonce1: string; extranonce2Size: number; reply: StratumMessage }
  > {
    const reply = await this.request("mining.subscribe", [this.#options.userAgent]);
    if (!Array.isArray(reply.result)) {
      throw new Error(`mining.subscribe failed: ${JSON.stringify(reply)}`);
    }
    const [, extranonce1, extranonce2Size] = reply.result as [unknown, string, number];
    this.extranonce1 = extranonce1;
    this.extranonce2Size = extranonce2Size;
    this.subscribed = true;
    return { extranonce1, extranonce2Size, reply };
  }

  /** `mining.authorize` as `user`; true when the pool accepted it. */
  async authorize(): Promise<boolean> {
    const reply = await this.request("mining.authorize", [
      this.#options.user,
      this.#options.password,
    ]);
    this.authorized = reply.result === true;
    return this.authorized;
  }

  /** Waits for a job received after `after` jobs (default: any job at all). */
  waitForJob(options: { after?: number; timeoutMs?: number } = {}): Promise<StratumJob> {
    const after = options.after ?? 0;
    return this.waitFor(
      () => this.jobs.length > after ? this.jobs[this.jobs.length - 1] : undefined,
      "mining.notify",
      options.timeoutMs,
    );
  }

  /** Waits for a `mining.set_difficulty` (beyond the first `after`). */
  waitForDifficulty(options: { after?: number; timeoutMs?: number } = {}): Promise<number> {
    const after = options.after ?? 0;
    return this.waitFor(
      () =>
        this.difficulties.length > after
          ? this.difficulties[this.difficulties.length - 1]
          : undefined,
      "mining.set_difficulty",
      options.timeoutMs,
    );
  }

  /** A fresh extranonce2 of the subscribed size. */
  nextExtranonce2(): string {
    const size = this.extranonce2Size ?? 8;
    const value = BigInt(++this.#extranonce2Counter) + (BigInt(Date.now()) << 20n);
    return (value & ((1n << BigInt(8 * size)) - 1n)).toString(16).padStart(2 * size, "0");
  }

  /** The header this miner would submit for `job` with these fields. */
  header(
    job: StratumJob,
    extranonce2: string,
    ntime: string,
    nonce: string,
    versionBits?: string,
  ): Uint8Array {
    if (this.extranonce1 === undefined) throw new Error("not subscribed");
    return buildHeader({
      job,
      extranonce1: this.extranonce1,
      extranonce2,
      ntime,
      nonce,
      versionBits,
    });
  }

  /**
   * `mining.submit` for the current job (or `jobId`), with a random nonce unless given.
   * Resolves with the pool's verdict; never throws on a rejected share.
   */
  async submitShare(
    work: {
      nonce?: string;
      ntime?: string;
      extranonce2?: string;
      jobId?: string;
      versionBits?: string;
    } = {},
  ): Promise<ShareResult> {
    // An unknown jobId is sent as given, with the current job's data (to test "Invalid JobID").
    const job = (work.jobId && this.jobs.findLast((j) => j.jobId === work.jobId)) || this.job;
    if (!job) throw new Error("no job to submit against (no mining.notify yet)");
    const jobId = work.jobId ?? job.jobId;
    const extranonce2 = work.extranonce2 ?? this.nextExtranonce2();
    const ntime = work.ntime ?? job.ntime;
    const nonce = work.nonce ??
      crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, "0");
    const header = this.header(job, extranonce2, ntime, nonce, work.versionBits);
    const hash = headerHash(header);
    const params = [this.#options.user, jobId, extranonce2, ntime, nonce];
    if (work.versionBits) params.push(work.versionBits);
    const reply = await this.request("mining.submit", params);
    return {
      accepted: reply.result === true,
      error: reply.error ?? null,
      rejectReason: typeof reply["reject-reason"] === "string"
        ? reply["reject-reason"] as string
        : undefined,
      params,
      hash: toHex(reversed(hash)),
      shareDifficulty: hashDifficulty(hash),
      reply: reply as Record<string, unknown>,
    };
  }

  /**
   * Grinds (C grinder) until a share meets the current difficulty, then submits it. Tries fresh
   * extranonce2 values when a nonce range runs out. Throws when `deadlineMs` passes first.
   */
  async submitValidShare(
    options: { deadlineMs: number; threads?: number; difficulty?: number },
  ): Promise<ShareResult & { grind: { hashes: number; seconds: number; rate: number } }> {
    const deadline = Date.now() + options.deadlineMs;
    const totals = { hashes: 0, seconds: 0, rate: 0 };
    while (true) {
      const job = this.job;
      const difficulty = options.difficulty ?? this.difficulty;
      if (!job || difficulty === undefined) throw new Error("no job or difficulty yet");
      const target = difficultyTarget(difficulty);
      const extranonce2 = this.nextExtranonce2();
      const header = this.header(job, extranonce2, job.ntime, "00000000");
      let start = 0;
      while (start <= 0xffffffff) {
        const left = (deadline - Date.now()) / 1000;
        if (left <= 0) {
          throw new Error(
            `no share of difficulty ${difficulty} within ${options.deadlineMs} ms ` +
              `(${totals.hashes} hashes at ${Math.round(totals.rate)} H/s)`,
          );
        }
        const result = await grind(header, target, {
          startNonce: start,
          threads: options.threads,
          maxSeconds: left,
        });
        totals.hashes += result.hashes;
        totals.seconds += result.seconds;
        totals.rate = totals.seconds > 0 ? totals.hashes / totals.seconds : 0;
        if (!result.found) break;
        const nonce = result.nonce!.toString(16).padStart(8, "0");
        const solved = this.header(job, extranonce2, job.ntime, nonce);
        if (hashDifficulty(headerHash(solved)) >= difficulty) {
          const share = await this.submitShare({
            nonce,
            ntime: job.ntime,
            extranonce2,
            jobId: job.jobId,
          });
          return { ...share, grind: totals };
        }
        start = result.nonce! + 1; // met the integer target but not ckpool's double check
      }
    }
  }

  /** Closes the connection and waits for the reader to stop. */
  async close(): Promise<void> {
    if (!this.#isClosed) {
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    }
    await this.closed;
  }
}

/** Connects to a Stratum server (no messages sent yet). */
export async function connectMiner(options: MinerOptions): Promise<StratumMiner> {
  const conn = await Deno.connect({ hostname: options.host ?? "127.0.0.1", port: options.port });
  return new StratumMiner(conn, options);
}
