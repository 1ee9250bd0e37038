/**
 * What writing one event's Redis commands costs the Redis thread, hot, on one thread
 * (`deno task bench:encode`): from the full decode (`decodeDatagram`, then
 * `RequestBuilder.add`) and from the datagram's bytes (`RequestBuilder.addDatagram`). The
 * datagrams are those `bench/sender.c` sends (`bench/sender_mix.ts`).
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
import { senderMix } from "./sender_mix.ts";

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

const encoder = new TextEncoder();
const datagrams = [...senderMix(count)].map((text) => encoder.encode(text));

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
