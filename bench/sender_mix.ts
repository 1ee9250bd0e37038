/**
 * Datagrams of the mix and cardinality `bench/sender.c` sends (1,000 users x 7 workers: 92%
 * shares, 4% best-difficulty events, 2% connects, 2% disconnects, a new block every 10,000),
 * written as it writes them, for the benches that need them without a socket.
 *
 * @module
 */

const USERS = 1_000;
const WORKERS_PER_USER = 7;
const WORKER_KINDS = ["bitaxe", "nerdaxe", "s19", "s21", "avalon", "cpu"];
const AGENTS = ["bitaxe/2.4.1", "cgminer/4.12.1", "bmminer/2.0.0", "NerdMiner/1.6"];
const REJECTS = ["Stale", "Duplicate", "Above target"];

/** A deterministic generator, so every round drains the same datagrams. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

/** `count` datagrams as the bench's sender writes them, `ts` spread over the last hour. */
export function* senderMix(count: number): Generator<string> {
  const next = random(7);
  const users = Array.from({ length: USERS }, (_, u) => `tb1q${u.toString(36).padStart(38, "q")}`);
  const start = Date.now() / 1000 - 3600;
  let height = 200_000;
  for (let seq = 1; seq <= count; seq++) {
    const u = Math.floor(next() * USERS);
    const w = Math.floor(next() * WORKERS_PER_USER);
    const worker = `${WORKER_KINDS[(u + w) % 6]}-${String(w + 1).padStart(2, "0")}`;
    const ip = `10.${1 + Math.floor(u / 250)}.${u % 250}.${10 + w}`;
    const client = u * WORKERS_PER_USER + w + 1;
    const who = `"user":"${users[u]}","worker":"${worker}"`;
    const ts = (start + (seq * 3600) / count).toFixed(6);
    const r = next();
    let event: string;
    let data: string;
    if (seq % 10_000 === 0) {
      event = "new_block_network";
      data = `{"height":${++height},"hash":"${height.toString(16).padStart(64, "0")}",` +
        `"diff":0.0011265}`;
    } else if (r < 0.92) {
      const diff = 2 ** Math.floor(next() * 12);
      const accepted = next() >= 0.02;
      event = "share_submitted";
      data = `{${who},"client_id":${client},"diff":${diff.toFixed(1)},` +
        `"sdiff":${(diff * (0.5 + 20 * next())).toFixed(4)},"accepted":${accepted},` +
        `"reject_reason":"${accepted ? "" : REJECTS[client % 3]}","ip":"${ip}"}`;
    } else if (r < 0.96) {
      const prev = 1000 * (1 + 100 * next());
      event = "share_best_diff";
      data = `{${who},"new_best":${(prev * (1 + 3 * next())).toFixed(4)},` +
        `"prev_best":${prev.toFixed(4)},"timeframe":"week"}`;
    } else if (r < 0.98) {
      event = "miner_connected";
      data = `{${who},"client_id":${client},"ip":"${ip}","useragent":"${AGENTS[client % 4]}",` +
        `"initial_diff":${2 ** (client % 10)}}`;
    } else {
      event = "miner_disconnected";
      data = `{${who},"client_id":${client},"ip":"${ip}",` +
        `"session_duration":${(60 + 86400 * next()).toFixed(1)},"shares_session":${client % 50}}`;
    }
    yield `{"event":"${event}","ts":${ts},"source":"hosted","seq":${seq},` +
      `"emitter":"00c0ffee00c0ffee","data":${data}}`;
  }
}
