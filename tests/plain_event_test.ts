import assert from "node:assert/strict";
import { decodeDatagram } from "../src/datagram.ts";
import type { MiningEvent } from "../src/events.ts";
import { PlainEventScanner } from "../src/plain_event.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const ENVELOPE = `"ts":1765000000.123456,"source":"hosted","seq":42,"emitter":"0123456789abcdef"`;

function datagram(event: string, data: string, envelope = ENVELOPE): Uint8Array {
  return encoder.encode(`{"event":"${event}",${envelope},"data":${data}}`);
}

/** What the full decode makes of the datagram, in the scanner's terms. */
function decoded(bytes: Uint8Array): { id: string; ts: string; source: string; payload: string } {
  const result = decodeDatagram(bytes, false);
  assert.ok(result.ok, decoder.decode(bytes));
  const event: MiningEvent = result.event;
  return {
    id: event.id,
    ts: String(event.ts),
    source: event.source,
    payload: JSON.stringify(event.data),
  };
}

function scanned(scanner: PlainEventScanner, bytes: Uint8Array) {
  assert.ok(scanner.scan(bytes), `not plain: ${decoder.decode(bytes)}`);
  return {
    id: decoder.decode(scanner.id()),
    ts: scanner.ts,
    source: scanner.source,
    payload: decoder.decode(scanner.payload()),
  };
}

Deno.test("events as the patched ckpool and the bench send them are plain, and read as decoded", () => {
  // Reals as jansson writes them (1024.0), and every plain type.
  const cases = [
    datagram(
      "share_submitted",
      `{"user":"tb1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh","worker":"bitaxe-01","client_id":7,` +
        `"diff":1024.0,"sdiff":3172.2531,"accepted":true,"reject_reason":"","ip":"10.1.2.11",` +
        `"is_block":false}`,
    ),
    datagram(
      "miner_connected",
      `{"user":"tb1qa","worker":"s19","client_id":3,"ip":"10.0.0.1",` +
        `"useragent":"cgminer/4.12.1","initial_diff":512.0}`,
    ),
    datagram(
      "miner_disconnected",
      `{"user":"tb1qa","worker":"s19","client_id":3,"ip":"10.0.0.1","session_duration":61.5,` +
        `"shares_session":12,"rejects_session":0}`,
    ),
    datagram(
      "diff_updated",
      `{"user":"tb1qa","worker":"s19","client_id":3,"old_diff":512.0,"new_diff":2048.0}`,
    ),
    datagram(
      "hashrate_update",
      `{"user":"tb1qa","worker":"s19","hashrate_1m":1.23456789e12,"hashrate_5m":0.0,` +
        `"hashrate_1h":987654321.5,"hashrate_1d":1e15}`,
    ),
    datagram(
      "new_block_network",
      `{"height":200123,"hash":"00000000000000000001abcdef","diff":1000000.0}`,
    ),
    datagram(
      "share_best_diff",
      `{"user":"tb1qa","worker":"s19","new_best":1.5e6,"prev_best":0.000001,"timeframe":"week"}`,
    ),
  ];
  const scanner = new PlainEventScanner();
  for (const bytes of cases) assert.deepEqual(scanned(scanner, bytes), decoded(bytes));
});

Deno.test("missing fields get their defaults, and fields the contract does not know follow", () => {
  const scanner = new PlainEventScanner();
  const bytes = datagram("share_submitted", `{"note":"x","diff":8,"user":"u","rate":-1.50}`);
  const read = scanned(scanner, bytes);
  assert.deepEqual(read, decoded(bytes));
  assert.equal(
    read.payload,
    `{"user":"u","worker":"","client_id":0,"diff":8,"sdiff":0,"accepted":false,` +
      `"reject_reason":"","ip":"","is_block":false,"note":"x","rate":-1.5}`,
  );
  const bare = encoder.encode(`{"event":"diff_updated","ts":5,"source":"proxy"}`);
  assert.deepEqual(scanned(scanner, bare), decoded(bare));
});

Deno.test("without emitter and seq, the id is the hash of the datagram's bytes", () => {
  const scanner = new PlainEventScanner();
  for (const envelope of [`"ts":1.5,"source":"hosted"`, `"ts":1.5,"source":"hosted","seq":3`]) {
    const bytes = datagram("share_submitted", `{"user":"u"}`, envelope);
    const read = scanned(scanner, bytes);
    assert.match(read.id, /^sha256:[0-9a-f]{32}$/);
    assert.deepEqual(read, decoded(bytes));
  }
});

Deno.test("anything not plain is left to the full decode", () => {
  const scanner = new PlainEventScanner();
  const notPlain = [
    datagram("share_submitted", `{"user":"a\\"b"}`), // an escape
    datagram("share_submitted", `{"user":"wörker"}`), // past ASCII
    datagram("share_submitted", `{"user": "u"}`), // whitespace
    datagram("block_found", `{"height":1,"hash":"${"00".repeat(32)}"}`), // announced whole
    datagram("pool_started", `{}`), // a type the contract does not know
    datagram("share_submitted", `{"user":"u","user":"v"}`), // a key twice
    datagram("share_submitted", `{"1":"u"}`), // JavaScript orders it first
    datagram("share_submitted", `{"__proto__":1}`),
    datagram("share_submitted", `{"extra":null}`),
    datagram("share_submitted", `{"extra":{"nested":1}}`),
    datagram("share_submitted", `{"diff":-1}`), // out of its kind: refused, with a reason
    datagram("share_submitted", `{"client_id":1.5}`),
    datagram("share_submitted", `{"extra":1e400}`),
    datagram("share_submitted", `{"user":"${"u".repeat(1025)}"}`),
    encoder.encode(`{"event":"share_submitted","ts":1,"source":"hosted","other":1}`),
    encoder.encode(`{"event":"share_submitted","ts":01,"source":"hosted"}`), // not JSON
    encoder.encode(`{"event":"share_submitted","ts":1,"source":"moon"}`),
    encoder.encode(`{"event":"share_submitted","ts":1,"source":"hosted","emitter":"ABC"}`),
    encoder.encode(`{"event":"share_submitted","ts":1,"source":"hosted","seq":-1}`),
    encoder.encode(`{"event":"share_submitted","ts":1,"source":"hosted","emitter":""}`),
  ];
  // Fresh, and after a plain datagram (the scanner remembers the last emitter it accepted).
  const plain = datagram("share_submitted", `{"user":"u"}`);
  for (const bytes of notPlain) {
    assert.equal(new PlainEventScanner().scan(bytes), false, decoder.decode(bytes));
    assert.ok(scanner.scan(plain));
    assert.equal(scanner.scan(bytes), false, decoder.decode(bytes));
  }
});
