/**
 * A demo emitter: sends a realistic stream of mining events to the collector's socket, the
 * way the patched ckpool does (one JSON datagram per event, never blocking), so data can be
 * seen flowing without a pool, a node or miners.
 *
 * ```sh
 * deno task demo [--socket PATH] [--rate N] [--count N] [--duration S] [--block-every S] [--seed N]
 * ```
 *
 * The stream itself ({@link DemoStream}) is pure: it decides the next event from the time it
 * is given and a seeded random generator, so tests drive it with a synthetic clock.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { DatagramSender } from "../ffi/unix_datagram.ts";

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

const BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32_GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function bech32Polymod(values: readonly number[]): number {
  let chk = 1;
  for (const value of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ value;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= BECH32_GENERATORS[i];
  }
  return chk >>> 0;
}

function convertBits(data: Uint8Array, from: number, to: number): number[] {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const max = (1 << to) - 1;
  for (const value of data) {
    acc = (acc << from) | value;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >>> bits) & max);
    }
  }
  if (bits > 0) out.push((acc << (to - bits)) & max);
  return out;
}

/**
 * Encodes a segwit address (BIP 173 bech32 for version 0, BIP 350 bech32m for later ones).
 *
 * @param hrp `tb` for testnet and signet, `bc` for mainnet
 */
export function segwitAddress(hrp: string, version: number, program: Uint8Array): string {
  const data = [version, ...convertBits(program, 8, 5)];
  const expanded = [...hrp].map((c) => c.charCodeAt(0) >> 5).concat(
    [0],
    [...hrp].map((c) => c.charCodeAt(0) & 31),
  );
  const constant = version === 0 ? 1 : 0x2bc830a3;
  const mod = bech32Polymod([...expanded, ...data, 0, 0, 0, 0, 0, 0]) ^ constant;
  const checksum = Array.from({ length: 6 }, (_, i) => (mod >>> (5 * (5 - i))) & 31);
  return `${hrp}1${[...data, ...checksum].map((d) => BECH32_CHARSET[d]).join("")}`;
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/** mulberry32: a small, fast, seedable generator; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(random: () => number, length: number): Uint8Array {
  return Uint8Array.from({ length }, () => Math.floor(random() * 256));
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------------------------------------
// The miners
// ---------------------------------------------------------------------------------------------

/** One mining device of the demo: a worker of a user (its payout address). */
export interface DemoMiner {
  /** The user: a signet (tb1) address. */
  readonly user: string;
  /** The worker part of `address.worker`. */
  readonly worker: string;
  readonly useragent: string;
  readonly ip: string;
  /** Nominal hashrate in H/s. */
  readonly hashrate: number;
}

function demoAddresses(): string[] {
  const random = seededRandom(0x7b6);
  return [
    // The signet test miner seeded by sql/init.sql (BIP 173's P2WPKH test vector).
    "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
    segwitAddress("tb", 0, randomBytes(random, 20)),
    segwitAddress("tb", 0, randomBytes(random, 20)),
    segwitAddress("tb", 1, randomBytes(random, 32)), // taproot
    segwitAddress("tb", 0, randomBytes(random, 20)),
  ];
}

const ADDRESSES = demoAddresses();

/**
 * The fleet: the same five users and eight devices on every run, so repeated runs add to the
 * same rows in `users`, `workers` and `weekly_best_diff`.
 */
export const DEMO_MINERS: readonly DemoMiner[] = Object.freeze([
  miner(0, "bitaxe-01", "bitaxe/BM1366/v2.4.2", "10.0.1.11", 5.5e11),
  miner(0, "bitaxe-02", "bitaxe/BM1368/v2.5.1", "10.0.1.12", 1.2e12),
  miner(1, "nerdqaxe", "NerdQAxe++/BM1370/v1.0.29", "10.0.2.20", 4.8e12),
  miner(2, "s9-garage", "cgminer/4.11.1", "10.0.3.30", 1.35e13),
  miner(2, "avalon-nano3", "cgminer/4.11.1-avalon-nano", "10.0.3.31", 4e12),
  miner(3, "rig01", "bmminer/2.0.0", "10.0.4.40", 1.1e14),
  miner(4, "nerdminer", "NerdMinerV2/1.6.3", "10.0.5.50", 7.8e4),
  miner(4, "bitaxe-gamma", "bitaxe/BM1370/v2.6.0", "10.0.5.51", 1.2e12),
]);

function miner(
  user: number,
  worker: string,
  useragent: string,
  ip: string,
  hashrate: number,
): DemoMiner {
  return Object.freeze({ user: ADDRESSES[user], worker, useragent, ip, hashrate });
}

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

/** Every event type the demo sends. */
export const DEMO_EVENT_TYPES = [
  "share_submitted",
  "block_found",
  "miner_connected",
  "miner_disconnected",
  "diff_updated",
  "hashrate_update",
  "new_block_network",
  "share_best_diff",
] as const;

export type DemoEventType = (typeof DEMO_EVENT_TYPES)[number];

/** One event in the wire format of the event contract. */
export interface DemoEvent {
  readonly event: DemoEventType;
  readonly ts: number;
  readonly source: "hosted";
  readonly seq: number;
  readonly emitter: string;
  readonly data: Readonly<Record<string, string | number | boolean>>;
}

/** Options of {@link DemoStream}; intervals are means in seconds, each one jittered. */
export interface DemoOptions {
  /** Seed of the random generator: the same seed and clock give the same stream. */
  seed?: number;
  /** Emitter id (hex); random by default. */
  emitter?: string;
  /** A block found by the pool. */
  blockEverySeconds?: number;
  /** A new block on the network. */
  networkBlockEverySeconds?: number;
  /** A round of hashrate updates, one per connected miner. */
  hashrateEverySeconds?: number;
  /** A miner leaves (and comes back 5 to 20 s later). */
  disconnectEverySeconds?: number;
  /** A vardiff retarget of a connected miner. */
  retargetEverySeconds?: number;
}

/** ckpool's defaults: start difficulty and minimum difficulty. */
const START_DIFF = 42;
const MIN_DIFF = 1;
/** Shares per second vardiff aims for per client (ckpool: about one every 3.33 s). */
const VARDIFF_RATE = 0.3;
const TWO_32 = 2 ** 32;
/** Outcomes of a share: ckpool's own reject reasons, with demo weights. */
const REJECTS = [
  { reason: "Stale", p: 0.03 },
  { reason: "Above target", p: 0.012 },
  { reason: "Duplicate", p: 0.008 },
] as const;

interface MinerState {
  readonly miner: DemoMiner;
  connected: boolean;
  clientId: number;
  connectedAt: number;
  diff: number;
  shares: number;
  rejects: number;
  /** When a disconnected miner comes back. */
  reconnectAt: number;
  /** When the first vardiff retarget after connecting is due (Infinity: done). */
  retargetAt: number;
}

type Pending = { event: DemoEventType; data: Record<string, string | number | boolean> };

/**
 * The demo's event stream: call {@link next} with the current time (epoch seconds) for each
 * event to send. Shares make up most of it; the other types are due by their timers, so the
 * caller's pace (events per second) sets how many shares fall between them.
 *
 * The first events are a `new_block_network` (ckpool announces the tip at start) and a
 * `miner_connected` for every miner. A miner's shares, retargets and hashrate updates come only
 * while it is connected, with its current `client_id` and difficulty.
 */
export class DemoStream {
  readonly emitter: string;
  readonly #random: () => number;
  readonly #miners: MinerState[];
  readonly #queue: Pending[] = [];
  readonly #best = new Map<string, number>();
  readonly #every: Required<Omit<DemoOptions, "seed" | "emitter">>;
  #seq = 0;
  #started = false;
  #nextClientId = 1;
  #height: number;
  #tip: string;
  #networkDiff: number;
  #due: Record<
    "networkBlock" | "block" | "hashrate" | "disconnect" | "retarget",
    number
  > = { networkBlock: 0, block: 0, hashrate: 0, disconnect: 0, retarget: 0 };

  constructor(options: DemoOptions = {}) {
    this.#random = seededRandom(options.seed ?? Math.floor(Math.random() * 2 ** 32));
    this.emitter = options.emitter ?? hex(crypto.getRandomValues(new Uint8Array(8)));
    this.#every = {
      blockEverySeconds: options.blockEverySeconds ?? 300,
      networkBlockEverySeconds: options.networkBlockEverySeconds ?? 30,
      hashrateEverySeconds: options.hashrateEverySeconds ?? 15,
      disconnectEverySeconds: options.disconnectEverySeconds ?? 45,
      retargetEverySeconds: options.retargetEverySeconds ?? 60,
    };
    this.#miners = DEMO_MINERS.map((miner) => ({
      miner,
      connected: false,
      clientId: 0,
      connectedAt: 0,
      diff: START_DIFF,
      shares: 0,
      rejects: 0,
      reconnectAt: Infinity,
      retargetAt: Infinity,
    }));
    this.#height = 270_000 + Math.floor(this.#random() * 10_000);
    this.#tip = this.#blockHash();
    // Mainnet-sized, so a found block stands out from the best shares as it would there
    // (signet's own difficulty is tiny: its blocks need a signature, not work).
    this.#networkDiff = Math.round(1.1e14 * (0.95 + 0.1 * this.#random()));
  }

  /** The number of events produced so far (the last `seq`). */
  get seq(): number {
    return this.#seq;
  }

  /** The next event, stamped `now` (epoch seconds). */
  next(now: number): DemoEvent {
    if (this.#queue.length === 0) this.#plan(now);
    const { event, data } = this.#queue.shift()!;
    return {
      event,
      ts: Math.round(now * 1e6) / 1e6,
      source: "hosted",
      seq: ++this.#seq,
      emitter: this.emitter,
      data,
    };
  }

  /** Queues what happens at `now`: the first timer that is due, else one share. */
  #plan(now: number): void {
    if (!this.#started) {
      this.#started = true;
      this.#queue.push(this.#networkBlock());
      for (const state of this.#miners) this.#queue.push(this.#connect(state, now));
      const e = this.#every;
      this.#due = {
        networkBlock: now + this.#jitter(e.networkBlockEverySeconds),
        block: now + this.#jitter(e.blockEverySeconds),
        hashrate: now + this.#jitter(e.hashrateEverySeconds),
        disconnect: now + this.#jitter(e.disconnectEverySeconds),
        retarget: now + this.#jitter(e.retargetEverySeconds),
      };
      return;
    }
    const connected = this.#miners.filter((s) => s.connected);
    const back = this.#miners.find((s) => !s.connected && s.reconnectAt <= now);
    if (back) {
      this.#queue.push(this.#connect(back, now));
      return;
    }
    const settling = connected.find((s) => s.retargetAt <= now);
    if (settling) {
      settling.retargetAt = Infinity;
      this.#retarget(settling, 1);
      if (this.#queue.length > 0) return;
    }
    const e = this.#every;
    if (this.#due.networkBlock <= now) {
      this.#due.networkBlock = now + this.#jitter(e.networkBlockEverySeconds);
      this.#queue.push(this.#networkBlock());
      return;
    }
    if (this.#due.block <= now && connected.length > 0) {
      this.#due.block = now + this.#jitter(e.blockEverySeconds);
      // Uniformly among connected miners: the demo shows the lottery, not the odds.
      this.#blockFound(connected[Math.floor(this.#random() * connected.length)]);
      return;
    }
    if (this.#due.hashrate <= now && connected.length > 0) {
      this.#due.hashrate = now + this.#jitter(e.hashrateEverySeconds);
      for (const state of connected) this.#queue.push(this.#hashrate(state, now));
      return;
    }
    if (this.#due.disconnect <= now) {
      this.#due.disconnect = now + this.#jitter(e.disconnectEverySeconds);
      if (connected.length > 1) {
        const state = connected[Math.floor(this.#random() * connected.length)];
        this.#queue.push(this.#disconnect(state, now));
        return;
      }
    }
    if (this.#due.retarget <= now && connected.length > 0) {
      this.#due.retarget = now + this.#jitter(e.retargetEverySeconds);
      this.#retarget(connected[Math.floor(this.#random() * connected.length)], 1.6);
      if (this.#queue.length > 0) return;
    }
    if (connected.length === 0) {
      // Everyone left: the earliest to return comes back now.
      const first = this.#miners.reduce((a, b) => (a.reconnectAt <= b.reconnectAt ? a : b));
      this.#queue.push(this.#connect(first, now));
      return;
    }
    // Shares arrive in proportion to hashrate / difficulty (what vardiff evens out).
    this.#share(this.#pick(connected, (s) => s.miner.hashrate / s.diff));
  }

  #jitter(mean: number): number {
    return mean * (0.5 + this.#random());
  }

  #pick(states: MinerState[], weight: (s: MinerState) => number): MinerState {
    const total = states.reduce((sum, s) => sum + weight(s), 0);
    let r = this.#random() * total;
    for (const state of states) {
      r -= weight(state);
      if (r < 0) return state;
    }
    return states[states.length - 1];
  }

  #blockHash(): string {
    return "00000" + hex(randomBytes(this.#random, 30)).slice(0, 59);
  }

  /** The difficulty vardiff settles on for a miner (ckpool rounds it down to an integer). */
  #idealDiff(state: MinerState): number {
    return Math.max(MIN_DIFF, Math.floor(state.miner.hashrate / TWO_32 / VARDIFF_RATE));
  }

  #who(state: MinerState) {
    return { user: state.miner.user, worker: state.miner.worker };
  }

  #connect(state: MinerState, now: number): Pending {
    state.connected = true;
    state.clientId = this.#nextClientId++;
    state.connectedAt = now;
    state.diff = START_DIFF;
    state.shares = 0;
    state.rejects = 0;
    state.reconnectAt = Infinity;
    state.retargetAt = now + 2 + 4 * this.#random();
    return {
      event: "miner_connected",
      data: {
        ...this.#who(state),
        client_id: state.clientId,
        ip: state.miner.ip,
        useragent: state.miner.useragent,
        initial_diff: START_DIFF,
      },
    };
  }

  #disconnect(state: MinerState, now: number): Pending {
    state.connected = false;
    state.reconnectAt = now + 5 + 15 * this.#random();
    state.retargetAt = Infinity;
    return {
      event: "miner_disconnected",
      data: {
        ...this.#who(state),
        client_id: state.clientId,
        ip: state.miner.ip,
        session_duration: Math.round((now - state.connectedAt) * 1000) / 1000,
        shares_session: state.shares,
        rejects_session: state.rejects,
      },
    };
  }

  /** Moves a miner's difficulty towards its ideal, give or take `spread`; silent if unchanged. */
  #retarget(state: MinerState, spread: number): void {
    const noise = spread === 1 ? 1 : 1 / spread + (spread - 1 / spread) * this.#random();
    const next = Math.max(MIN_DIFF, Math.round(this.#idealDiff(state) * noise));
    if (next === state.diff) return;
    this.#queue.push({
      event: "diff_updated",
      data: {
        ...this.#who(state),
        client_id: state.clientId,
        old_diff: state.diff,
        new_diff: next,
      },
    });
    state.diff = next;
  }

  #share(state: MinerState): void {
    // A share's difficulty is its target over a uniform draw: mostly near the target, with a
    // long tail that makes new bests rarer as the round goes on.
    const u = 1 - this.#random(); // (0, 1]
    let reason = "";
    let r = this.#random();
    for (const reject of REJECTS) {
      if (r < reject.p) {
        reason = reject.reason;
        break;
      }
      r -= reject.p;
    }
    const sdiff = round3(reason === "Above target" ? state.diff * u : state.diff / u);
    this.#pushShare(state, sdiff, reason);
  }

  #pushShare(state: MinerState, sdiff: number, reason: string): void {
    const accepted = reason === "";
    if (accepted) state.shares++;
    else state.rejects++;
    this.#queue.push({
      event: "share_submitted",
      data: {
        ...this.#who(state),
        client_id: state.clientId,
        diff: state.diff,
        sdiff,
        accepted,
        reject_reason: reason,
        ip: state.miner.ip,
        is_block: sdiff >= this.#networkDiff,
      },
    });
    if (!accepted) return;
    const prev = this.#best.get(state.miner.user) ?? 0;
    if (sdiff > prev) {
      this.#best.set(state.miner.user, sdiff);
      this.#queue.push({
        event: "share_best_diff",
        data: { ...this.#who(state), new_best: sdiff, prev_best: prev, timeframe: "round" },
      });
    }
  }

  #networkBlock(): Pending {
    const prev = this.#tip;
    this.#height++;
    this.#tip = this.#blockHash();
    this.#networkDiff = Math.round(this.#networkDiff * (0.995 + 0.01 * this.#random()));
    return {
      event: "new_block_network",
      data: { height: this.#height, hash: this.#tip, diff: this.#networkDiff, prev_hash: prev },
    };
  }

  /** The pool solves a block: the block, the winning share, then the new tip; a new round. */
  #blockFound(state: MinerState): void {
    const sdiff = round3(this.#networkDiff / (1 - this.#random()));
    const height = this.#height + 1;
    const subsidy = 5_000_000_000 / 2 ** Math.floor(height / 210_000);
    const hash = this.#blockHash();
    this.#queue.push({
      event: "block_found",
      data: {
        ...this.#who(state),
        height,
        hash,
        diff: sdiff,
        network_diff: this.#networkDiff,
        reward_sats: subsidy + Math.floor(this.#random() * 200_000),
        coinbase_sig: "/TheBitcoinGame/",
      },
    });
    this.#pushShare(state, sdiff, "");
    this.#best.clear();
    const tip = this.#networkBlock();
    tip.data.hash = hash;
    this.#tip = hash;
    this.#queue.push(tip);
  }

  #hashrate(state: MinerState, now: number): Pending {
    const uptime = now - state.connectedAt;
    const window = (seconds: number, noise: number) =>
      round3(
        state.miner.hashrate * Math.min(1, uptime / seconds) *
          (1 - noise + 2 * noise * this.#random()),
      );
    return {
      event: "hashrate_update",
      data: {
        ...this.#who(state),
        hashrate_1m: window(60, 0.15),
        hashrate_5m: window(300, 0.07),
        hashrate_1h: window(3600, 0.03),
        hashrate_1d: window(86_400, 0.01),
      },
    };
  }
}

function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/** An event as the datagram the collector receives. */
export function encodeEvent(event: DemoEvent): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify(event)) as Uint8Array<ArrayBuffer>;
}

/** The current time in epoch seconds, to the microsecond where the clock allows. */
export function nowSeconds(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

const USAGE = `usage: deno task demo [options]

Sends a realistic stream of mining events to the collector's socket.

  --socket PATH      socket to send to (default: $SOCKET_PATH, else /tmp/ckpool/events.sock)
  --rate N           events per second, all miners together (default 20)
  --count N          stop after N events
  --duration S       stop after S seconds
  --block-every S    mean seconds between blocks found by the pool (default 300)
  --seed N           seed of the random generator (default: random)
  --help             this text`;

function positive(name: string, raw: string | undefined, integer = false): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new Error(`--${name} must be a positive ${integer ? "integer" : "number"} (got ${raw})`);
  }
  return value;
}

async function main(args: string[]): Promise<number> {
  let options;
  try {
    const { values } = parseArgs({
      args,
      options: {
        socket: { type: "string" },
        rate: { type: "string" },
        count: { type: "string" },
        duration: { type: "string" },
        "block-every": { type: "string" },
        seed: { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
      allowPositionals: false,
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const seed = values.seed === undefined ? undefined : Number(values.seed);
    if (seed !== undefined && !Number.isInteger(seed)) throw new Error("--seed must be an integer");
    options = {
      socket: values.socket || Deno.env.get("SOCKET_PATH") || "/tmp/ckpool/events.sock",
      rate: positive("rate", values.rate) ?? 20,
      count: positive("count", values.count, true),
      duration: positive("duration", values.duration),
      blockEvery: positive("block-every", values["block-every"]),
      seed,
    };
  } catch (error) {
    console.error(`demo: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }

  let sender: DatagramSender;
  try {
    sender = new DatagramSender(options.socket);
  } catch (error) {
    console.error(`demo: cannot send to ${options.socket}: ${(error as Error).message}`);
    return 2;
  }
  const stream = new DemoStream({ seed: options.seed, blockEverySeconds: options.blockEvery });
  const limits = [
    options.count === undefined ? "" : `, stop after ${options.count} events`,
    options.duration === undefined ? "" : `, stop after ${options.duration} s`,
  ].join("");
  console.log(
    `demo: emitter ${stream.emitter} sending ~${options.rate} events/s to ${options.socket}` +
      `${limits} (Ctrl-C stops)`,
  );

  let stop = false;
  const onSignal = () => stop = true;
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, onSignal);

  let sent = 0;
  let failed = 0;
  let hinted = false;
  const byType = new Map<string, number>();
  const summary = () => {
    const notable = ["block_found", "miner_connected", "miner_disconnected"]
      .map((t) => `${t}=${byType.get(t) ?? 0}`)
      .join(" ");
    return `demo: sent=${sent} failed=${failed} (${notable})`;
  };
  const start = performance.now();
  let lastSummary = start;
  try {
    while (!stop) {
      const elapsed = (performance.now() - start) / 1000;
      if (options.duration !== undefined && elapsed >= options.duration) break;
      let due = Math.floor(elapsed * options.rate) + 1;
      if (options.count !== undefined) due = Math.min(due, options.count);
      while (stream.seq < due) {
        const event = stream.next(nowSeconds());
        if (sender.send(encodeEvent(event))) {
          sent++;
          byType.set(event.event, (byType.get(event.event) ?? 0) + 1);
        } else {
          failed++;
          if (!hinted && !socketExists(options.socket)) {
            hinted = true;
            console.error(
              `demo: nobody receives on ${options.socket}: start the collector (deno task dev ` +
                `starts one) or pass --socket; failed sends are counted and the stream goes on`,
            );
          }
        }
      }
      if (options.count !== undefined && stream.seq >= options.count) break;
      const now = performance.now();
      if (now - lastSummary >= 5000) {
        lastSummary = now;
        console.log(summary());
      }
      // Sleep until the next event is due (at most 50 ms, to notice signals and summaries).
      const wait = ((stream.seq / options.rate) - elapsed) * 1000;
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.min(50, wait))));
    }
  } finally {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.removeSignalListener(signal, onSignal);
    }
    sender.close();
  }
  console.log(`${summary()}, done`);
  return sent === 0 && failed > 0 ? 1 : 0;
}

function socketExists(path: string): boolean {
  try {
    return Deno.statSync(path).isSocket === true;
  } catch {
    return false;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
