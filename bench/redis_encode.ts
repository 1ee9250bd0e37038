/**
 * What writing one event's Redis commands costs the Redis thread, hot, on one thread
 * (`deno task bench:encode`): from the full decode (`decodeDatagram`, then
 * `RequestBuilder.add`) and from the datagram's bytes (`RequestBuilder.addDatagram`). The
 * datagrams are those `bench/sender.c` sends: 1,000 users with 7 workers each, 92% shares, 4%
 * best-difficulty events, 2% connects and 2% disconnects, written as the sender writes them.
 * Prints microseconds of CPU per event, median (range) over the rounds, after one round not
 * counted.
 *
 *   deno run --allow-all bench/redis_encode.ts [--events 200000] [--rounds 5]
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { decodeDatagram } from "../src/datagram.ts";
import { PlainEventScanner } from "../src/plain_event.ts";
import { RequestBuilder } from "../src/sinks/redis/request.ts";

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "200000" },
    rounds: { type: "string", default: "5" },
  },
});
const count = Number(values.events);
const rounds = Number(values.rounds);
/** Events per pipeline, as the Redis thread writes them at about 10,000 events/s. */
const BATCH = 32;

const USERS = 1_000;
const WORKERS_PER_USER = 7;
const KINDS = ["bitaxe", "nerdqaxe", "s19", "s21", "avalon", "cpu"];
const BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

let state = 0x9e3779b9;
function random(): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 2 ** 32;
}
const pick = <T>(list: readonly T[]) => list[Math.floor(random() * list.length)];
const users = Array.from(
  { length: USERS },
  () => "tb1q" + Array.from({ length: 38 }, () => pick([...BECH32])).join(""),
);

function datagram(seq: number): string {
  const u = Math.floor(random() * USERS);
  const w = Math.floor(random() * WORKERS_PER_USER);
  const worker = `${KINDS[(u + w) % 6]}-${String(w + 1).padStart(2, "0")}`;
  const ip = `10.${1 + Math.floor(u / 250)}.${u % 250}.${10 + w}`;
  const ts = (1_765_000_000 + seq / 10_000).toFixed(6);
  const envelope = `"ts":${ts},"source":"hosted","seq":${seq},"emitter":"5eed0123456789ab"`;
  const r = random();
  const user = `"user":"${users[u]}","worker":"${worker}"`;
  if (r < 0.92) {
    const diff = 2 ** Math.floor(random() * 12);
    const accepted = random() >= 0.02;
    return `{"event":"share_submitted",${envelope},"data":{${user},"client_id":${
      u * WORKERS_PER_USER + w + 1
    },"diff":${diff.toFixed(1)},"sdiff":${(diff * (0.5 + 20 * random())).toFixed(4)},` +
      `"accepted":${accepted},"reject_reason":"${accepted ? "" : "Stale"}","ip":"${ip}"}}`;
  }
  if (r < 0.96) {
    const prev = 1000 * (1 + 100 * random());
    return `{"event":"share_best_diff",${envelope},"data":{${user},"new_best":${
      (prev * 1.5).toFixed(4)
    },"prev_best":${prev.toFixed(4)},"timeframe":"session"}}`;
  }
  if (r < 0.98) {
    return `{"event":"miner_connected",${envelope},"data":{${user},"client_id":${u},"ip":"${ip}",` +
      `"useragent":"cgminer/4.12.1","initial_diff":512.0}}`;
  }
  return `{"event":"miner_disconnected",${envelope},"data":{${user},"client_id":${u},` +
    `"ip":"${ip}","session_duration":${(random() * 3600).toFixed(3)},"shares_session":12,` +
    `"rejects_session":0}}`;
}

const encoder = new TextEncoder();
const datagrams = Array.from({ length: count }, (_, seq) => encoder.encode(datagram(seq + 1)));

/** CPU microseconds per event of `write`, which writes every datagram once. */
function measure(write: (builder: RequestBuilder) => void): number {
  const builder = new RequestBuilder(100_000);
  const before = process.cpuUsage();
  write(builder);
  const used = process.cpuUsage(before);
  return (used.user + used.system) / count;
}

const fromDecode = (builder: RequestBuilder) => {
  for (let i = 0; i < count; i++) {
    if (i % BATCH === 0) builder.clear();
    const decoded = decodeDatagram(datagrams[i], false);
    if (decoded.ok) builder.add(decoded.event, i);
  }
};
const fromBytes = (builder: RequestBuilder) => {
  for (let i = 0; i < count; i++) {
    if (i % BATCH === 0) builder.clear();
    builder.addDatagram(datagrams[i], false, i);
  }
};

const scanner = new PlainEventScanner();
const plain = datagrams.filter((bytes) => scanner.scan(bytes)).length;
const results = { decode: [] as number[], bytes: [] as number[] };
// A first round, not counted, lets both paths be compiled before they are timed.
measure(fromDecode);
measure(fromBytes);
for (let round = 0; round < rounds; round++) {
  results.decode.push(measure(fromDecode));
  results.bytes.push(measure(fromBytes));
}
const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const show = (list: number[]) =>
  `${median(list).toFixed(2)} µs (${Math.min(...list).toFixed(2)}-${Math.max(...list).toFixed(2)})`;
console.log(`${count} datagrams, ${(100 * plain / count).toFixed(1)}% plain; ${rounds} rounds`);
console.log(`decode, then RESP:     ${show(results.decode)} of CPU per event`);
console.log(`RESP from the bytes:   ${show(results.bytes)} of CPU per event`);
console.log(
  `ratio:                 ${(median(results.decode) / median(results.bytes)).toFixed(2)}`,
);
