import assert from "node:assert/strict";
import type { MiningEvent } from "../../src/events.ts";
import { commandsFor, RequestBuilder } from "../../src/sinks/redis/request.ts";
import { encodeCommands } from "../../src/sinks/redis/resp.ts";

function event(overrides: Partial<MiningEvent> = {}): MiningEvent {
  return {
    id: "0123456789abcdef:7",
    event: "share_submitted",
    ts: 1767225600.123456,
    source: "hosted",
    seq: 7,
    emitter: "0123456789abcdef",
    data: { user: "bc1qexample", worker: "rig1", diff: 1024, accepted: true },
    ...overrides,
  };
}

Deno.test("the builder writes exactly the RESP of the commands, batch after batch", () => {
  const events = [
    event(),
    event({ id: "a:1", event: "miner_connected", data: { user: "ünïcödé 😀", ip: "10.0.0.1" } }),
    event({ id: "a:2", event: "block_found", data: { height: 812345, hash: "00".repeat(32) } }),
    event({ id: "sha256:" + "f".repeat(32), ts: 1, source: "proxy", data: {} }),
  ];
  const builder = new RequestBuilder(100_000);
  for (let round = 0; round < 2; round++) {
    builder.clear();
    events.forEach((e, i) => builder.add(e, i));
    const expected = encodeCommands(events.flatMap((e) => commandsFor(e, "100000")));
    assert.deepEqual(builder.bytes(), expected);
    // block_found is an XADD and a PUBLISH, both delivering event 2.
    assert.equal(builder.commands, 5);
    assert.deepEqual([0, 1, 2, 3, 4].map((c) => builder.owner(c)), [0, 1, 2, 2, 3]);
  }
});

Deno.test("the builder grows past its first buffer", () => {
  const big = event({ data: { note: "x".repeat(400_000), other: "é".repeat(100_000) } });
  const builder = new RequestBuilder(10);
  builder.add(big, 0);
  builder.add(event(), 1);
  assert.deepEqual(
    builder.bytes(),
    encodeCommands([...commandsFor(big, "10"), ...commandsFor(event(), "10")]),
  );
});

Deno.test("a text whose UTF-8 length has more digits than its UTF-16 length is framed by its bytes", () => {
  // Lengths around the short-text cut and around a new digit, in both ways of copying: ASCII,
  // two- and four-byte characters, a lone surrogate (sent as U+FFFD), ASCII ending in one.
  const texts = [8, 33, 63, 64, 65, 99, 100, 999, 1000].flatMap((n) => [
    "a".repeat(n),
    "é".repeat(n),
    "a".repeat(n - 1) + "é",
    "😀".repeat(Math.ceil(n / 2)),
    "a".repeat(n - 1) + "\ud800",
  ]);
  const events = texts.map((text, i) =>
    event({ id: `t:${i}`, data: { note: text }, source: i % 2 ? "proxy" : "hosted" })
  );
  const builder = new RequestBuilder(100_000);
  events.forEach((e, i) => builder.add(e, i));
  assert.deepEqual(
    builder.bytes(),
    encodeCommands(events.flatMap((e) => commandsFor(e, "100000"))),
  );
});

Deno.test("a datagram that is no event writes nothing", () => {
  const builder = new RequestBuilder(10);
  const bytes = new TextEncoder().encode(`{"event":"share_submitted","ts":-1,"source":"hosted"}`);
  for (const truncated of [false, true]) {
    assert.equal(builder.addDatagram(bytes, truncated, 0), false);
    assert.equal(builder.commands, 0);
    assert.equal(builder.bytes().length, 0);
  }
});
